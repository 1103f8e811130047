"""Mask-conditioned synthesis with the embedded model: the nuclei are where the layout says
(an oracle segmentation of the synthetic image against the layout), same seed same pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cytosyn.models import load_model
from napari_cytosyn.testkit.layouts import Layout, LayoutParams, procedural_layout
from napari_cytosyn.testkit.methods import otsu_watershed
from napari_cytosyn.testkit.metrics import score
from napari_cytosyn.testkit.synthesis import LayoutCondition, synthesize


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return load_model("cytosyn-tiny-cells", device="cpu", dtype="float32")


def test_layout_condition_crops_each_window_with_zero_outside():
    mask = np.arange(32 * 40, dtype=np.float32).reshape(32, 40)
    cond = LayoutCondition(mask, latent_factor=8, origin_px=(8, 0))
    out = cond.for_windows([(0, 0, 2, 2), (3, 4, 2, 2)])["mask"]
    assert out.shape == (2, 1, 16, 16)
    # window 0 covers px rows 0..15: rows 0..7 lie above the layout (origin row 8)
    assert (out[0, 0, :8] == 0).all()
    assert np.array_equal(out[0, 0, 8:].numpy(), mask[0:8, 0:16])
    # window 1: px rows 24..39 (layout rows 16..31), cols 32..47 (layout cols 32..39, then 0)
    assert np.array_equal(out[1, 0, :, :8].numpy(), mask[16:32, 32:40])
    assert (out[1, 0, :, 8:] == 0).all()


def test_synthesized_nuclei_sit_where_the_layout_says(model):
    layout = procedural_layout((128, 128), LayoutParams(density_per_mm2=5000), seed=11)
    rgb = synthesize(layout, model, seed=0, steps=8)
    assert rgb.shape == (128, 128, 3) and rgb.dtype == np.uint8
    s = score(layout.labels, otsu_watershed(rgb))
    assert s.f1 >= 0.7, s
    # the same image does not fit another layout
    other = procedural_layout((128, 128), LayoutParams(density_per_mm2=5000), seed=12)
    assert score(other.labels, otsu_watershed(rgb)).f1 < 0.3


def test_same_seed_same_pixels_and_glass_outside_tissue(model):
    lab = np.zeros((64, 64), np.int32)
    lab[20:30, 20:30] = 1
    tissue = np.zeros((64, 64), bool)
    tissue[:, :40] = True
    layout = Layout(lab, tissue)
    a = synthesize(layout, model, seed=3, steps=2)
    b = synthesize(layout, model, seed=3, steps=2)
    assert np.array_equal(a, b)
    assert a[:, 50:].min() > 225  # glass
    with pytest.raises(ValueError, match="um/px"):
        synthesize(Layout(lab, tissue, mpp=0.25), model)


def test_inpainted_variant_regenerates_a_region_whose_nuclei_still_follow_the_layout(model):
    from napari_cytosyn.testkit.stress import Variant, apply_variant, inpaint_region

    layout = procedural_layout((128, 128), LayoutParams(density_per_mm2=5000), seed=11)
    rgb = synthesize(layout, model, seed=0, steps=8)
    variant = Variant("inpainted", "inpaint", 0.3)
    out, lab, mpp = apply_variant(rgb, layout.labels, 0.5, variant, seed=4, model=model, steps=8)
    region = inpaint_region((128, 128), 0.3, seed=4)
    assert abs(region.mean() - 0.3) < 0.05
    np.testing.assert_array_equal(lab, layout.labels)  # the truth is unchanged
    assert mpp == 0.5
    np.testing.assert_array_equal(out[~region], rgb[~region])  # outside: untouched
    assert np.abs(out[region].astype(int) - rgb[region]).mean() > 5  # new tissue inside
    # The new tissue still shows the layout's nuclei: scored inside the region only.
    inside = np.where(region, layout.labels, 0)
    pred = np.where(region, otsu_watershed(out), 0)
    assert score(inside, pred).f1 >= 0.6
    again, _, _ = apply_variant(rgb, layout.labels, 0.5, variant, seed=4, model=model, steps=8)
    np.testing.assert_array_equal(again, out)  # deterministic
    with pytest.raises(ValueError, match="synthesis model"):
        apply_variant(rgb, layout.labels, 0.5, variant)
    with pytest.raises(ValueError, match="area fraction"):
        Variant("x", "inpaint", 1.5)


def test_the_cells_model_decodes_without_cytosyn_tiny_colour_match(model):
    """The shared 20x decoder's colour match is cytosyn-tiny's; the cells model undoes it."""
    tiny = load_model("cytosyn-tiny", device="cpu", dtype="float32")
    offset = tiny.info["training"]["colour_offset"]["20x"]
    torch.testing.assert_close(
        model.vae.decoder.conv_out.bias,
        tiny.vae.decoder.conv_out.bias - torch.tensor(offset),
    )
