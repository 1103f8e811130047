"""Composite slides: real TIFF slides read by the real readers, edits in a zarr edit store."""

from __future__ import annotations

import numpy as np
import pytest

import napari_cytosyn.sampling as sampling
from napari_cytosyn.chunk_grid import downsample_area
from napari_cytosyn.models.grf import GRFModel
from napari_cytosyn.sampling import SamplerSettings
from napari_cytosyn.slide import open_slide
from napari_cytosyn.slide.composite import CompositeSlide
from napari_cytosyn.slide.provenance import file_sha256
from napari_cytosyn.slide.store import StoreExistsError, StoreMismatchError

SETTINGS = SamplerSettings(steps=4)


def disc(h: int, w: int, r: float | None = None) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    r = r if r is not None else min(h, w) / 2 - 1
    return (yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2 <= r * r


def full_mask(comp: CompositeSlide, level: int) -> np.ndarray:
    h, w = comp.level_shapes[level]
    return comp.mask_region(level, 0, 0, h, w)


@pytest.fixture
def composite(generic_tiff_slide, tmp_path) -> CompositeSlide:
    return CompositeSlide(open_slide(generic_tiff_slide), tmp_path / "edits.zarr", chunk_px=256)


def test_composite_equals_real_outside_the_mask_bit_for_bit(composite):
    mask = disc(120, 160)
    composite.inpaint(
        (500, 700, 120, 160), mask, GRFModel(boundary="periodic"), SETTINGS, halo_px=64
    )
    for k in range(len(composite.level_shapes)):
        real = composite.real.levels[k].compute()
        comp = composite.levels[k].compute()
        m = full_mask(composite, k)
        assert m.any()
        assert np.array_equal(comp[~m], real[~m]), f"level {k} differs outside the mask"
    m0 = full_mask(composite, 0)
    assert np.array_equal(m0[500:620, 700:860], mask) and m0.sum() == mask.sum()
    assert (composite.levels[0].compute()[m0] != composite.real.levels[0].compute()[m0]).any()


def test_the_real_slide_file_is_never_written(generic_tiff_slide, tmp_path):
    before = file_sha256(generic_tiff_slide)
    mtime = generic_tiff_slide.stat().st_mtime_ns
    comp = CompositeSlide(generic_tiff_slide, tmp_path / "edits.zarr", chunk_px=256)
    comp.inpaint(
        (100, 100, 64, 64), disc(64, 64), GRFModel(boundary="periodic"), SETTINGS, halo_px=32
    )
    comp.levels[0].compute()
    assert file_sha256(generic_tiff_slide) == before
    assert generic_tiff_slide.stat().st_mtime_ns == mtime
    assert (tmp_path / "edits.zarr" / "mask" / "0").is_dir()


def test_coarse_levels_are_area_averages_of_the_composite(composite):
    composite.inpaint(
        (300, 400, 100, 100), disc(100, 100), GRFModel(boundary="periodic"), SETTINGS, halo_px=48
    )
    level0 = composite.levels[0].compute()
    for k in (1, 2):
        d = round(composite.downsamples[k])
        hk, wk = composite.level_shapes[k]
        expected = downsample_area(level0, d)[:hk, :wk]
        m = full_mask(composite, k)
        assert np.array_equal(composite.levels[k].compute()[m], expected[m])
        assert np.array_equal(
            m, (downsample_area(full_mask(composite, 0).astype(np.uint8), d) > 0)[:hk, :wk]
        )


def test_overlapping_edits_accumulate_and_keep_the_real_slide_outside_both(composite):
    model = GRFModel(boundary="periodic")
    composite.inpaint((200, 200, 96, 96), disc(96, 96), model, SETTINGS, halo_px=32)
    after_first = composite.levels[0].compute()
    second = disc(96, 96)
    composite.inpaint((248, 248, 96, 96), second, model, SETTINGS.replace(seed=9), halo_px=32)
    after_second = composite.levels[0].compute()
    real = composite.real.levels[0].compute()
    union = np.zeros(real.shape[:2], bool)
    union[200:296, 200:296] |= disc(96, 96)
    union[248:344, 248:344] |= second
    assert np.array_equal(full_mask(composite, 0), union)
    assert np.array_equal(after_second[~union], real[~union])
    only_first = union.copy()
    only_first[248:344, 248:344] &= ~second
    assert np.array_equal(after_second[only_first], after_first[only_first])
    sec = np.zeros_like(union)
    sec[248:344, 248:344] = second
    assert (after_second[sec] != after_first[sec]).any()
    assert len(composite.edits) == 2 and composite.edits[1]["recipe"]["core"]["seed"] == 9


def test_a_40x_slide_is_inpainted_at_the_model_resolution(ome_tiff_slide, tmp_path, monkeypatch):
    seen = []
    real_inpaint = sampling.inpaint

    def spy(model, image, mask, settings, **kw):
        seen.append((image.shape, int(mask.sum())))
        return real_inpaint(model, image, mask, settings, **kw)

    monkeypatch.setattr(sampling, "inpaint", spy)
    comp = CompositeSlide(open_slide(ome_tiff_slide), tmp_path / "edits.zarr", chunk_px=256)
    assert (comp.mpp.x, comp.mpp.y) == pytest.approx((0.25, 0.25))
    mask = disc(128, 128)
    record = comp.inpaint(
        (400, 600, 128, 128), mask, GRFModel(boundary="periodic"), SETTINGS, halo_px=64
    )
    ((shape, mask_px),) = seen
    cy0, cx0, ch, cw = record["context"]
    assert cy0 <= 401 - 64 and cx0 <= 601 - 64 and cy0 + ch >= 527 + 64 and cx0 + cw >= 727 + 64
    assert ch % 16 == 0 and cw % 16 == 0  # whole latents at the model's resolution
    assert shape == (ch // 2, cw // 2, 3)  # read at 0.5 um/px: half the 0.25 um/px pixels
    assert record["model_px"] == [ch // 2, cw // 2]
    assert abs(mask_px - mask.sum() / 4) < 0.2 * mask.sum() / 4
    assert record["slide_mpp"] == 0.25 and record["model_mpp"] == 0.5
    real = comp.real.levels[0].compute()
    m = full_mask(comp, 0)
    assert np.array_equal(comp.levels[0].compute()[~m], real[~m])
    assert np.array_equal(m[400:528, 600:728], mask)


def test_reopened_edit_store_shows_the_same_composite(generic_tiff_slide, tmp_path):
    comp = CompositeSlide(generic_tiff_slide, tmp_path / "e.zarr", chunk_px=256)
    comp.inpaint(
        (64, 64, 64, 64), disc(64, 64), GRFModel(boundary="periodic"), SETTINGS, halo_px=32
    )
    again = CompositeSlide(generic_tiff_slide, tmp_path / "e.zarr")
    assert np.array_equal(again.levels[0].compute(), comp.levels[0].compute())
    assert len(again.edits) == 1


def test_an_edit_store_of_another_slide_is_refused(generic_tiff_slide, ome_zarr_writer, tmp_path):
    CompositeSlide(generic_tiff_slide, tmp_path / "e.zarr", chunk_px=256)
    small = [np.full((300, 400, 3), 200, np.uint8)]
    other = ome_zarr_writer(tmp_path / "other.ome.zarr", small)
    with pytest.raises(StoreMismatchError, match="level shapes"):
        CompositeSlide(other, tmp_path / "e.zarr")


def test_a_directory_that_is_not_an_edit_store_is_not_overwritten(generic_tiff_slide, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("keep")
    with pytest.raises(StoreExistsError, match="not a napari-cytosyn store"):
        CompositeSlide(generic_tiff_slide, tmp_path / "notes", overwrite=True)
    assert (tmp_path / "notes" / "a.txt").read_text() == "keep"


@pytest.mark.parametrize(
    ("region", "mask", "error", "match"),
    [
        ((10, 10, 32, 32), np.zeros((32, 32), bool), ValueError, "empty"),
        ((1100, 10, 32, 32), np.ones((32, 32), bool), ValueError, "outside the slide"),
        ((-5, 10, 32, 32), np.ones((32, 32), bool), ValueError, "outside the slide"),
        ((10, 10, 32, 32), np.ones((16, 32), bool), ValueError, "does not match"),
        ((10, 10, 32, 32), np.ones((32, 32), np.uint8), TypeError, "bool"),
        ((0, 0, 1104, 1536), np.ones((1104, 1536), bool), ValueError, "limit"),
    ],
)
def test_bad_masks_are_refused_before_anything_is_written(composite, region, mask, error, match):
    kwargs = {"max_side_px": 512} if match == "limit" else {}
    with pytest.raises(error, match=match):
        composite.inpaint(region, mask, GRFModel(boundary="periodic"), SETTINGS, **kwargs)
    assert composite.store.completion(0).count() == 0 and composite.edits == []


def test_inpainting_refuses_anisotropic_pixels_naming_both_axes(tmp_path):
    from napari_cytosyn.slide.sample import write_sample_slide

    path = write_sample_slide(tmp_path / "aniso.tif", 512, 512, n_levels=1, mpp=(0.25, 0.5))
    comp = CompositeSlide(open_slide(path), tmp_path / "edits.zarr", chunk_px=256)
    assert (comp.mpp.x, comp.mpp.y) == (0.25, 0.5)
    with pytest.raises(ValueError, match=r"inpainting needs square pixels.*0\.25 x 0\.5 um"):
        comp.inpaint((100, 100, 64, 64), disc(64, 64), GRFModel(), SETTINGS, halo_px=32)
    assert comp.edits == []
    # a pixel size given for the slide is used on both axes
    record = comp.inpaint(
        (100, 100, 64, 64), disc(64, 64), GRFModel(), SETTINGS, halo_px=32, slide_mpp=0.5
    )
    assert record["slide_mpp"] == 0.5


def test_cancel_during_the_slide_read_stops_before_the_sampler(composite, monkeypatch):
    """Cancel pressed while the job reads the real slide (seconds on a busy machine) ends it
    there: no sampler call, no edit."""
    import threading

    import napari_cytosyn.sampling as sampling_pkg

    cancel = threading.Event()
    read = composite.read_region

    def read_then_cancel(*args):
        out = read(*args)
        cancel.set()  # the user presses Cancel while the region is being read
        return out

    def no_sampler(*args, **kwargs):
        raise AssertionError("the sampler ran after Cancel")

    monkeypatch.setattr(composite, "read_region", read_then_cancel)
    monkeypatch.setattr(sampling_pkg, "inpaint", no_sampler)
    with pytest.raises(sampling.Cancelled):
        composite.inpaint(
            (100, 100, 64, 64),
            disc(64, 64),
            GRFModel(boundary="periodic"),
            SETTINGS,
            halo_px=32,
            cancel=cancel,
        )
    assert composite.edits == []


def test_cancel_after_the_last_model_call_writes_nothing(composite, monkeypatch):
    """Cancel pressed once the sampler has returned (its result resampled back to the slide)
    still stops the edit: nothing is written to the edit store."""
    import threading

    import napari_cytosyn.slide.composite as composite_module

    cancel, from_model = threading.Event(), composite_module._from_model

    def resample_then_cancel(*args):
        out = from_model(*args)
        cancel.set()  # the user presses Cancel after the last model call
        return out

    monkeypatch.setattr(composite_module, "_from_model", resample_then_cancel)
    with pytest.raises(sampling.Cancelled):
        composite.inpaint(
            (100, 100, 64, 64),
            disc(64, 64),
            GRFModel(boundary="periodic"),
            SETTINGS,
            halo_px=32,
            cancel=cancel,
        )
    assert cancel.is_set() and composite.edits == []
    assert not full_mask(composite, 0).any() and "edit_pixels" not in composite.store.root
