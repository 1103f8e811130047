"""Inpainting a real slide conditioned on the tissue around the mask, or on a chosen region."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cytosyn.models.grf import ConditionalGRFModel, GRFModel
from napari_cytosyn.sampling import InpaintConfig, SamplerSettings
from napari_cytosyn.slide import open_slide
from napari_cytosyn.slide.composite import CompositeSlide
from napari_cytosyn.slide.sample import write_pyramidal_tiff

PINK, PURPLE = (200, 110, 160), (120, 60, 160)
ST = SamplerSettings(steps=3, seed=2, inpaint=InpaintConfig(release_band_latent=1))
REGION = (24, 72, 96, 112)  # (y, x, h, w): a mask across the pink | purple border at x = 128


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """Pink tissue left of x = 128, purple right of it, a little texture; 192 x 256 px."""
    rng = np.random.default_rng(1)
    img = np.empty((192, 256, 3), np.uint8)
    img[:, :128], img[:, 128:] = PINK, PURPLE
    img = np.clip(img.astype(int) + rng.integers(-10, 11, img.shape), 0, 255).astype(np.uint8)
    img[150:, :40] = (246, 244, 246)  # some glass, so the tissue mask has two classes
    path = tmp_path_factory.mktemp("real") / "border.tif"
    return write_pyramidal_tiff(path, [img, img[::2, ::2].copy()], mpp=(0.5, 0.5), tile_px=128)


def _mask():
    return np.ones(REGION[2:], bool)


def _inpaint(real, tmp_path, name, model=None, **kw):
    comp = CompositeSlide(open_slide(real), tmp_path / name)
    record = comp.inpaint(REGION, _mask(), model or ConditionalGRFModel(tile_px=64), ST, **kw)
    y, x, h, w = REGION
    return comp.read_region(0, y, x, h, w), record


def test_default_conditions_each_side_of_the_mask_on_the_tissue_beside_it(real, tmp_path):
    out, record = _inpaint(real, tmp_path, "auto")
    ref = record["reference"]
    assert ref["mode"] == "surround" and ref["ring_um"] == 32.0 and ref["cells"] > 2
    assert ref["encoder"] == "grf-conditional.embed"
    left, right = out[:, :40].reshape(-1, 3).mean(0), out[:, -40:].reshape(-1, 3).mean(0)
    # a mask across tumour and stroma keeps both: each side looks like its surroundings
    assert left[1] > right[1] + 25
    pinkish, _ = _inpaint(real, tmp_path, "pink", reference=(0, 0, 96, 96))
    # conditioned on one region, the right side no longer follows the purple tissue
    assert pinkish[:, -40:].reshape(-1, 3).mean(0)[1] > right[1] + 10


def test_two_references_give_different_pixels_and_one_reference_the_same(real, tmp_path):
    a, rec = _inpaint(real, tmp_path, "a", reference=(0, 0, 96, 96))
    a2, _ = _inpaint(real, tmp_path, "a2", reference=(0, 0, 96, 96))
    b, _ = _inpaint(real, tmp_path, "b", reference=(0, 160, 96, 96))
    np.testing.assert_array_equal(a, a2)
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 10
    assert rec["reference"] == {
        "mode": "region",
        "region": [0, 0, 96, 96],
        "file": "border.tif",
        "encoder": "grf-conditional.embed",
        "field_fingerprint": rec["reference"]["field_fingerprint"],
    }
    # outside the mask the composite is the real slide, bit for bit
    comp = CompositeSlide(open_slide(real), tmp_path / "a")
    np.testing.assert_array_equal(
        comp.read_region(0, 0, 0, 20, 256), open_slide(real).read_region(0, 0, 0, 20, 256)
    )


def test_guidance_enters_the_recipe_only_with_a_condition(real, tmp_path):
    guided = ST.replace(guidance=2.0, guidance_interval=(0.0, 0.75))
    comp = CompositeSlide(open_slide(real), tmp_path / "g")
    rec_none = comp.inpaint(
        REGION, _mask(), ConditionalGRFModel(tile_px=64), guided, reference="none"
    )
    assert "reference" not in rec_none
    assert rec_none["recipe"]["core"]["guidance"] == 1.0
    rec_ref = comp.inpaint(REGION, _mask(), ConditionalGRFModel(tile_px=64), guided)
    assert rec_ref["recipe"]["core"]["guidance"] == 2.0
    assert rec_ref["recipe"]["core"]["guidance_interval"] == [0.0, 0.75]


def test_unconditional_models_inpaint_as_before_and_refuse_a_reference(real, tmp_path):
    _, record = _inpaint(real, tmp_path, "u", model=GRFModel(tile_px=64))
    assert "reference" not in record
    with pytest.raises(ValueError, match="'grf' is unconditional"):
        _inpaint(real, tmp_path, "u2", model=GRFModel(tile_px=64), reference=(0, 0, 96, 96))
    with pytest.raises(ValueError, match="unconditional"):
        _inpaint(real, tmp_path, "u3", model=GRFModel(tile_px=64), reference="surround")
    with pytest.raises(ValueError, match="reference must be one of"):
        _inpaint(real, tmp_path, "u4", reference="nearby")


def test_cancel_during_the_ring_read_stops_before_the_tissue_mask_and_the_embedding(
    real, tmp_path, monkeypatch
):
    """Cancel pressed while the ring around the mask is read (seconds at a worker's priority on
    a busy machine) ends the edit there: no tissue mask, no embedding, no edit."""
    import threading

    import napari_cytosyn.sampling.conditioning as conditioning
    import napari_cytosyn.slide.reference as reference
    from napari_cytosyn.sampling import Cancelled

    cancel, read, later = threading.Event(), reference.read_model_px, []

    def read_then_cancel(*args, **kwargs):
        out = read(*args, **kwargs)
        cancel.set()
        return out

    monkeypatch.setattr(reference, "read_model_px", read_then_cancel)
    monkeypatch.setattr(reference, "slide_tissue_mask", lambda *a: later.append("mask"))
    monkeypatch.setattr(conditioning, "surround_field", lambda *a, **k: later.append("embed"))
    comp = CompositeSlide(open_slide(real), tmp_path / "cancelled")
    with pytest.raises(Cancelled):
        comp.inpaint(REGION, _mask(), ConditionalGRFModel(tile_px=64), ST, cancel=cancel)
    assert later == [] and comp.edits == []
