"""tifffile backend: OME-TIFF dispatch, flat TIFFs, resolution tags."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_cytosyn.slide import open_slide


def test_ome_tiff_goes_to_tifffile_with_all_subifd_levels(ome_tiff_slide):
    with open_slide(ome_tiff_slide) as slide:
        assert slide.format == "ome-tiff"
        assert slide.n_levels == 3  # OpenSlide would only see level 0 of this file
        assert slide.name == "pyramid"
        assert slide.properties["tifffile.axes"] == "YXS"


def test_flat_tiff_is_one_level_with_resolution_from_tags(tmp_path, slide_levels):
    path = tmp_path / "flat.tiff"
    image = slide_levels[1]
    # 0.8 um/px as pixels per inch.
    tifffile.imwrite(
        path, image, photometric="rgb", resolution=(25400 / 0.8, 25400 / 0.8), resolutionunit=2
    )
    with open_slide(path) as slide:
        assert slide.format == "tiff"
        assert slide.level_shapes == [image.shape[:2]]
        assert (slide.mpp.x, slide.mpp.y) == pytest.approx((0.8, 0.8))
        np.testing.assert_array_equal(slide.levels[0].compute(), image)
        np.testing.assert_array_equal(slide.read_region(0, 10, 20, 100, 50), image[10:110, 20:70])


def test_planar_rgb_tiff_is_returned_channels_last(tmp_path, slide_levels):
    path = tmp_path / "planar.tif"
    image = slide_levels[2]
    tifffile.imwrite(path, np.moveaxis(image, -1, 0), photometric="rgb", planarconfig="separate")
    with open_slide(path) as slide:
        assert slide.mpp is None
        np.testing.assert_array_equal(slide.levels[0].compute(), image)


def test_thumbnail_of_a_single_level_slide_reads_it_in_bounded_blocks(tmp_path, slide_levels):
    from napari_cytosyn.chunk_grid import downsample_area

    path = tmp_path / "flat_big.tif"
    image = slide_levels[0]
    tifffile.imwrite(path, image, photometric="rgb", tile=(256, 256))
    with open_slide(path) as slide:
        reads = []
        read = slide._backend.read
        slide._backend.read = lambda *a: reads.append(a[3] * a[4]) or read(*a)
        thumb = slide.thumbnail(max_px=96)  # factor 16 on the only level
        assert thumb.shape == (69, 96, 3)
        np.testing.assert_allclose(
            thumb.astype(float), downsample_area(image, 16).astype(float), atol=1
        )
        assert max(reads) <= 4096 * 4096
