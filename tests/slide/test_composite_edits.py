"""Removing edits from a composite: the pixels come back from the real slide, bit for bit, or
from the other edits that cover them."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cytosyn.models.grf import GRFModel
from napari_cytosyn.sampling import SamplerSettings
from napari_cytosyn.slide import open_slide
from napari_cytosyn.slide.composite import CompositeSlide

SETTINGS = SamplerSettings(steps=3)
MODEL = GRFModel(boundary="periodic")


def _box(h: int, w: int) -> np.ndarray:
    return np.ones((h, w), dtype=bool)


def _all_levels(comp: CompositeSlide) -> list[np.ndarray]:
    return [comp.levels[k].compute() for k in range(len(comp.level_shapes))]


@pytest.fixture
def composite(generic_tiff_slide, tmp_path) -> CompositeSlide:
    return CompositeSlide(open_slide(generic_tiff_slide), tmp_path / "edits.zarr", chunk_px=256)


def test_removing_every_edit_gives_back_the_real_slide_bit_for_bit(composite):
    real = [composite.real.levels[k].compute() for k in range(len(composite.level_shapes))]
    composite.inpaint((300, 400, 100, 120), _box(100, 120), MODEL, SETTINGS, halo_px=32)
    composite.inpaint(
        (350, 450, 100, 100), _box(100, 100), MODEL, SETTINGS.replace(seed=3), halo_px=32
    )
    assert any((a != b).any() for a, b in zip(_all_levels(composite), real, strict=True))
    first = composite.remove_edit(0)
    assert first["region"] == [300, 400, 100, 120]
    last = composite.remove_edit(-1)
    assert last["region"] == [350, 450, 100, 100]
    assert composite.edits == []
    for k, (comp, orig) in enumerate(zip(_all_levels(composite), real, strict=True)):
        np.testing.assert_array_equal(comp, orig, err_msg=f"level {k}")
        h, w = composite.level_shapes[k]
        assert not composite.mask_region(k, 0, 0, h, w).any()


def test_removing_an_older_edit_keeps_the_newer_one_that_overlaps_it(composite, tmp_path):
    composite.inpaint((300, 400, 100, 120), _box(100, 120), MODEL, SETTINGS, halo_px=32)
    composite.inpaint(
        (350, 450, 100, 100), _box(100, 100), MODEL, SETTINGS.replace(seed=3), halo_px=32
    )
    with_both = _all_levels(composite)
    composite.remove_edit(0)
    after = _all_levels(composite)
    real0 = composite.real.levels[0].compute()
    # The second edit's pixels are unchanged; the first edit's own pixels are real again.
    np.testing.assert_array_equal(after[0][350:450, 450:550], with_both[0][350:450, 450:550])
    np.testing.assert_array_equal(after[0][300:350, 400:520], real0[300:350, 400:520])
    m0 = composite.mask_region(0, 0, 0, *composite.level_shapes[0])
    assert m0.sum() == 100 * 100 and m0[350:450, 450:550].all()
    # Coarse levels are the area average of the level-0 composite where edited.
    assert [e["region"] for e in composite.edits] == [[350, 450, 100, 100]]
    # Reopened from disk the store says the same.
    again = CompositeSlide(composite.real, composite.path)
    assert [e["id"] for e in again.edits] == [e["id"] for e in composite.edits]
    np.testing.assert_array_equal(again.levels[0].compute(), after[0])


def test_removing_a_missing_edit_names_the_index(composite):
    with pytest.raises(IndexError, match="no edit 0"):
        composite.remove_edit(0)
