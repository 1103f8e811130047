"""References with the real backends' layouts: twins and conditioned inpainting on tiny CytoSyn
and PixCell models (random weights, published structure) with stand-in reference encoders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cytosyn.models import load_model
from napari_cytosyn.sampling import SamplerSettings
from napari_cytosyn.sampling.conditioning import is_conditional
from napari_cytosyn.slide import open_slide
from napari_cytosyn.slide.composite import CompositeSlide
from napari_cytosyn.slide.sample import write_pyramidal_tiff
from napari_cytosyn.slide.synthetic import SyntheticSlide

ST = SamplerSettings(steps=2, seed=1, autocast="off")


def h0_mini(rgb):  # (B, 3, H, W) -> (B, 16)
    return rgb.mean(dim=(2, 3)).repeat(1, 6)[:, :16]


def uni(rgb):  # (B, 3, H, W) -> (B, 24)
    return rgb.mean(dim=(2, 3)).repeat(1, 8)


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """512 x 512 px at 0.5 um/px: pink left, purple right, glass bottom right."""
    rng = np.random.default_rng(3)
    img = np.empty((512, 512, 3), np.uint8)
    img[:, :256], img[:, 256:] = (200, 110, 160), (120, 60, 160)
    img = np.clip(img.astype(int) + rng.integers(-10, 11, img.shape), 0, 255).astype(np.uint8)
    img[384:, 384:] = (246, 244, 246)
    path = tmp_path_factory.mktemp("real") / "two.tif"
    return write_pyramidal_tiff(path, [img, img[::2, ::2].copy()], mpp=(0.5, 0.5), tile_px=128)


@pytest.fixture(params=["cytosyn", "pixcell-256", "pixcell-1024"])
def model(request, cytosyn_native, pixcell_256, pixcell_1024):
    folder, embedder = {
        "cytosyn": (cytosyn_native, h0_mini),
        "pixcell-256": (pixcell_256, uni),
        "pixcell-1024": (pixcell_1024, uni),
    }[request.param]
    return load_model(f"{request.param}:{folder}", device="cpu", embedder=embedder)


def test_twin_with_each_conditional_backend(model, real, tmp_path):
    assert is_conditional(model)
    twin = SyntheticSlide.create(
        tmp_path / "t.cytosyn", model, None, None, ST.replace(seed=1), chunk_px=128, reference=real
    )
    ref = twin.metadata()["reference"]
    assert ref["file"] == "two.tif" and ref["tissue_cells"] >= 1
    assert ref["embedding_shape"] == list(model.embed(torch.zeros(1, 3, 64, 64)).shape[1:])
    a = twin.ensure_chunk(0, 1, 1)
    assert a.std() > 0
    plain = SyntheticSlide.create(
        tmp_path / "plain.cytosyn", model, 512, 512, ST.replace(seed=1), chunk_px=128
    )
    assert not np.array_equal(plain.ensure_chunk(0, 1, 1), a)


def test_inpainting_with_each_conditional_backend(model, real, tmp_path):
    mask = np.ones((64, 96), bool)
    comp = CompositeSlide(open_slide(real), tmp_path / "edits")
    around = comp.inpaint((224, 200, 64, 96), mask, model, ST)
    assert around["reference"]["mode"] == "surround"
    region = comp.inpaint((224, 200, 64, 96), mask, model, ST, reference=(0, 0, 128, 128))
    assert region["reference"]["region"] == [0, 0, 128, 128]
