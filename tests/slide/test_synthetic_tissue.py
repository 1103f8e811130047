"""Tissue layout: the Otsu tissue mask of a real slide lays out a synthetic slide."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cytosyn.models.grf import GRFModel
from napari_cytosyn.sampling import SamplerSettings
from napari_cytosyn.slide import open_slide, otsu_tissue_mask
from napari_cytosyn.slide.synthetic import SyntheticSlide


def test_otsu_separates_tissue_from_glass_on_a_real_slide(generic_tiff_slide, slide_levels):
    slide = open_slide(generic_tiff_slide)
    thumb = slide.thumbnail(max_px=256)
    mask = otsu_tissue_mask(thumb)
    assert mask.shape == thumb.shape[:2]
    glass = (thumb.astype(int) - [246, 244, 246]).__abs__().max(axis=2) <= 3
    assert 0.2 < mask.mean() < 0.95
    assert not (mask & glass).any()
    assert mask[~glass].mean() > 0.9


def test_blank_glass_has_no_tissue():
    assert not otsu_tissue_mask(np.full((64, 64, 3), 245, np.uint8)).any()


def test_bad_thumbnails_are_refused():
    with pytest.raises(ValueError, match="uint8 RGB"):
        otsu_tissue_mask(np.zeros((8, 8), np.uint8))


def test_a_synthetic_slide_follows_the_tissue_layout_of_a_real_slide(generic_tiff_slide, tmp_path):
    thumb = open_slide(generic_tiff_slide).thumbnail(max_px=64)
    # Lay the real slide's tissue out on the left of a slide twice as wide (glass on the right).
    thumb = np.concatenate([thumb, np.full_like(thumb, 246)], axis=1)
    mask = otsu_tissue_mask(thumb)
    h, w = 192, 512
    slide = SyntheticSlide.create(
        tmp_path / "s.zarr",
        GRFModel(boundary="periodic"),
        w,
        h,
        SamplerSettings(steps=4, seed=4),
        tissue_mask=mask,
        chunk_px=64,
    )
    slide.render_all()
    img = slide.levels[0].compute()
    rows = np.minimum(np.arange(h) * mask.shape[0] // h, mask.shape[0] - 1)
    cols = np.minimum(np.arange(w) * mask.shape[1] // w, mask.shape[1] - 1)
    tissue = mask[np.ix_(rows, cols)]
    assert (img[~tissue] == 255).all()
    assert (img[tissue] != 255).any(axis=-1).mean() > 0.9
    empty = sum(not slide.tissue_in_chunk(cy, cx).any() for cy in range(3) for cx in range(8))
    assert empty >= 12 and slide.compute_count == 24 - empty
