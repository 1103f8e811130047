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
