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


def ring(h: int, w: int, inner: float) -> np.ndarray:
    """A filled disc of diameter ~min(h, w) with a hole of radius ``inner`` px (0: none)."""
    yy, xx = np.mgrid[:h, :w]
    r2 = (yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2
    return (r2 <= (min(h, w) / 2 - 1) ** 2) & (r2 >= inner**2)


@pytest.fixture(scope="session")
def inpainted(generic_tiff_slide, tmp_path_factory):
    """A composite of the generic test slide (levels at downsample 1, 2, 6, tiles 256 px) with
    two GRF edits: a disc at (y 500, x 700) and a ring with a hole at (y 120, x 150)."""
    from napari_cytosyn.models.grf import GRFModel
    from napari_cytosyn.sampling import SamplerSettings
    from napari_cytosyn.slide.composite import CompositeSlide

    store = tmp_path_factory.mktemp("edits") / "edits.zarr"
    comp = CompositeSlide(generic_tiff_slide, store, chunk_px=256)
    model, settings = GRFModel(boundary="periodic"), SamplerSettings(steps=4)
    disc = ring(120, 160, 0)
    comp.inpaint((500, 700, 120, 160), disc, model, settings, halo_px=64)
    comp.inpaint((120, 150, 200, 200), ring(200, 200, 40), model, settings, halo_px=64)
    return comp
