"""Fixtures of the test-kit tests: small H&E-like images with known dark nuclei."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def training_like_image() -> np.ndarray:
    """``(128, 128, 3)`` uint8: pink background with 16 purple discs (nuclei) of radius 5 px."""
    from skimage.draw import disk

    rng = np.random.default_rng(0)
    img = np.empty((128, 128, 3), np.uint8)
    img[:] = (232, 180, 210)
    for cy in range(16, 128, 32):
        for cx in range(16, 128, 32):
            rr, cc = disk((cy + rng.integers(-3, 4), cx + rng.integers(-3, 4)), 5, shape=img.shape)
            img[rr, cc] = (90, 60, 140)
    noise = rng.normal(0, 3, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def paint(layout, model=None, seed=0, steps=None, guidance=1.0):
    """Oracle painter: purple nuclei (the layout's mask, as the model sees it) on pink tissue,
    white glass; the signature of ``testkit.synthesis.synthesize``."""
    from napari_cytosyn.models.cells import layout_mask

    rng = np.random.default_rng(seed)
    img = np.empty((*layout.shape, 3), np.float32)
    img[:] = (235, 175, 205)
    img[layout_mask(layout.labels) > 0] = (95, 60, 145)
    img[~layout.tissue] = (242, 240, 244)
    return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="session")
def painter():
    """:func:`paint`, standing in for the model where a test needs no real synthesis."""
    return paint
