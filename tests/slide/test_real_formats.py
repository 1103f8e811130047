"""Every backend serves the same pyramid: pixels of every level, mpp, downsamples, tile-straddling
regions, lazy dask levels chunked on the file's tiles."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from napari_cytosyn.slide import open_slide

FORMATS = {
    "generic_tiff_slide": ("openslide:generic-tiff", (0.5, 0.5)),
    "ome_tiff_slide": ("ome-tiff", (0.25, 0.25)),
    "ome_zarr_v04_slide": ("ome-zarr:0.4", (0.5, 0.5)),
    "ome_zarr_v05_slide": ("ome-zarr:0.5", (0.5, 0.5)),
}


@pytest.fixture(params=sorted(FORMATS))
def slide_case(request):
    path = request.getfixturevalue(request.param)
    with open_slide(path) as slide:
        yield slide, *FORMATS[request.param]


def test_backend_format_and_mpp_come_from_the_file(slide_case):
    slide, fmt, mpp = slide_case
    assert slide.format == fmt
    assert (slide.mpp.x, slide.mpp.y) == pytest.approx(mpp)
    meta = slide.metadata()
    assert meta["mpp_known"] is True
    assert meta["mpp"] == pytest.approx(list(mpp))


def test_level_shapes_and_non_power_of_two_downsamples(slide_case, slide_levels):
    slide, _, _ = slide_case
    assert slide.level_shapes == [lv.shape[:2] for lv in slide_levels]
    assert slide.downsamples == pytest.approx([1.0, 2.0, 6.0])
    assert slide.best_level_for_downsample(5.9) == 1
    assert slide.best_level_for_downsample(6.0) == 2


def test_every_level_matches_the_source_pixels(slide_case, slide_levels):
    slide, _, _ = slide_case
    for level, expected in zip(slide.levels, slide_levels, strict=True):
        assert isinstance(level, da.Array)
        assert level.dtype == np.uint8
        assert level.shape == expected.shape
        np.testing.assert_array_equal(level.compute(), expected)


def test_levels_are_chunked_on_whole_tiles_between_256_and_1024(slide_case):
    slide, _, _ = slide_case
    level0 = slide.levels[0]
    assert level0.chunksize == (1024, 1024, 3)  # four 256-px tiles per side
    assert level0.numblocks == (2, 2, 1)


def test_region_straddling_tiles_matches_source(slide_case, slide_levels):
    slide, _, _ = slide_case
    # Crosses tile lines at y=256, 512 and x=256, 512, 768 (tiles are 256 px).
    y, x, h, w = 200, 230, 400, 600
    expected = slide_levels[0][y : y + h, x : x + w]
    np.testing.assert_array_equal(slide.read_region(0, y, x, h, w), expected)
    np.testing.assert_array_equal(slide.levels[0][y : y + h, x : x + w].compute(), expected)
    y1, x1 = 100, 250  # level 1 (552 x 768)
    np.testing.assert_array_equal(
        slide.read_region(1, y1, x1, 300, 300), slide_levels[1][y1 : y1 + 300, x1 : x1 + 300]
    )


def test_region_past_the_edge_is_white(slide_case, slide_levels):
    slide, _, _ = slide_case
    h2 = slide.level_shapes[2][0]
    region = slide.read_region(2, h2 - 10, -5, 20, 30)
    assert region.shape == (20, 30, 3)
    assert (region[10:] == 255).all()
    assert (region[:, :5] == 255).all()
    np.testing.assert_array_equal(region[:10, 5:], slide_levels[2][h2 - 10 :, :25])


def test_strided_slices_of_a_level_match_numpy(slide_case, slide_levels):
    slide, _, _ = slide_case
    np.testing.assert_array_equal(
        slide.levels[1][::7, 5:700:3, ::-1].compute(), slide_levels[1][::7, 5:700:3, ::-1]
    )
    np.testing.assert_array_equal(
        slide.levels[0][300, 1000:1100, 1].compute(), slide_levels[0][300, 1000:1100, 1]
    )


def test_thumbnail_is_bounded_and_looks_like_the_slide(slide_case, slide_levels):
    slide, _, _ = slide_case
    thumb = slide.thumbnail(max_px=128)
    assert thumb.dtype == np.uint8
    assert max(thumb.shape[:2]) <= 128
    assert max(thumb.shape[:2]) >= 64
    # Same mean colour as the whole slide, within rounding and edge cropping.
    np.testing.assert_allclose(
        thumb.reshape(-1, 3).mean(0), slide_levels[0].reshape(-1, 3).mean(0), atol=3
    )


def test_metadata_is_json_serialisable(slide_case):
    import json

    slide, fmt, _ = slide_case
    meta = json.loads(json.dumps(slide.metadata()))
    assert meta["format"] == fmt
    assert meta["level_shapes"] == [list(s) for s in slide.level_shapes]
    assert meta["name"] == slide.name
    assert not slide.name.endswith((".tif", ".tiff", ".zarr"))


def test_slides_and_lazy_levels_pickle_by_path(slide_case, slide_levels):
    import pickle

    slide, fmt, _ = slide_case
    region = slide.levels[1][100:300, 200:500]
    again = pickle.loads(pickle.dumps(region))  # as a dask worker process receives it
    np.testing.assert_array_equal(again.compute(), slide_levels[1][100:300, 200:500])
    reopened = pickle.loads(pickle.dumps(slide))
    assert reopened.format == fmt
    assert reopened.level_shapes == slide.level_shapes
    reopened.close()
