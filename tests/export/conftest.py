"""Shared test images for the export tests: smooth H&E-like RGB (JPEG-friendly) and a mask."""

import numpy as np
import pytest


def he_like(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth pink/purple (h, w, 3) uint8 with some texture, deterministic per seed."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 0.5 + 0.25 * np.sin(yy / 37.0 + seed) * np.cos(xx / 23.0)
    noise = rng.normal(0, 0.03, (h, w)).astype(np.float32)
    v = np.clip(base + noise, 0, 1)
    rgb = np.stack([200 + 40 * v, 120 + 60 * (1 - v), 170 + 50 * v], axis=-1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


@pytest.fixture(name="he_like")
def he_like_fixture():
    return he_like


@pytest.fixture
def image() -> np.ndarray:
    return he_like(700, 900)


@pytest.fixture
def mask() -> np.ndarray:
    m = np.zeros((700, 900), dtype=bool)
    m[120:380, 200:650] = True
    return m
