"""OpenSlide backend: vendor metadata, mpp and objective power, RGBA composited on white."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cytosyn.chunk_grid import downsample_area
from napari_cytosyn.slide import open_slide
from napari_cytosyn.slide._openslide import composite_on_white
from napari_cytosyn.slide.sample import sample_tissue, write_pyramidal_tiff

APERIO_DESCRIPTION = (
    "Aperio Image Library v12.0.15 \r\n1024x1024 [0,0 1024x1024] (256x256) JPEG/RGB Q=90"
    "|AppMag = 40|MPP = 0.2500|Filename = test"
)


@pytest.fixture(scope="module")
def aperio_svs(tmp_path_factory):
    image = sample_tissue(0, 0, 1024, 1024, 1024, 1024)
    path = tmp_path_factory.mktemp("svs") / "case.svs"
    write_pyramidal_tiff(
        path,
        [image, downsample_area(image, 4)],
        mpp=None,
        compression="jpeg",
        description=APERIO_DESCRIPTION,
    )
    return path, image


def test_aperio_svs_reports_vendor_mpp_and_objective_power(aperio_svs):
    path, image = aperio_svs
    with open_slide(path) as slide:
        assert slide.format == "openslide:aperio"
        assert slide.name == "case"
        assert (slide.mpp.x, slide.mpp.y) == pytest.approx((0.25, 0.25))
        assert slide.objective_power == 40.0
        assert slide.properties["aperio.AppMag"] == "40"
        assert slide.level_shapes == [(1024, 1024), (256, 256)]
        assert slide.downsamples == pytest.approx([1.0, 4.0])
        region = slide.read_region(0, 300, 200, 256, 300)
        # JPEG at quality 90: close to the source, not identical.
        err = np.abs(region.astype(int) - image[300:556, 200:500].astype(int))
        assert err.mean() < 4


def test_generic_tiff_without_resolution_has_unknown_mpp(tmp_path, slide_levels):
    path = write_pyramidal_tiff(tmp_path / "nompp.tif", slide_levels[:2], mpp=None)
    with open_slide(path) as slide:
        assert slide.format == "openslide:generic-tiff"
        assert slide.mpp is None
        assert slide.metadata()["mpp_known"] is False
        assert slide.metadata()["mpp"] is None


def test_generic_tiff_region_read_through_openslide_is_exact(generic_tiff_slide, slide_levels):
    with open_slide(generic_tiff_slide) as slide:
        # Level 2 has downsample 6: level coordinates map to level-0 coordinates exactly.
        np.testing.assert_array_equal(
            slide.read_region(2, 17, 33, 150, 200), slide_levels[2][17:167, 33:233]
        )
        assert slide.properties["openslide.vendor"] == "generic-tiff"


def test_transparent_pixels_are_composited_on_white():
    rgba = np.array(
        [[[10, 20, 30, 255], [0, 0, 0, 0], [100, 0, 200, 128]]], dtype=np.uint8
    )  # opaque, empty (OpenSlide's "no data"), half transparent
    out = composite_on_white(rgba)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, 0], [10, 20, 30])
    np.testing.assert_array_equal(out[0, 1], [255, 255, 255])
    # 255 - (255 - c) * 128 / 255, rounded
    np.testing.assert_array_equal(out[0, 2], [177, 127, 227])


def test_opaque_regions_keep_their_pixels_unchanged():
    rgba = np.random.default_rng(0).integers(0, 256, (5, 7, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    out = composite_on_white(rgba)
    np.testing.assert_array_equal(out, rgba[..., :3])
    assert out.flags.c_contiguous


def test_native_premultiplied_buffer_composites_like_the_public_path():
    from napari_cytosyn.slide._openslide import premultiplied_bgra_on_white

    rgba = np.array([[[10, 20, 30, 255], [0, 0, 0, 0], [100, 0, 200, 128]]], dtype=np.uint8)
    alpha = rgba[..., 3:].astype(np.uint16)
    premult = ((rgba[..., :3].astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)
    bgra = np.concatenate([premult[..., ::-1], rgba[..., 3:]], axis=-1)
    out = premultiplied_bgra_on_white(bgra)
    np.testing.assert_array_equal(out, [[[10, 20, 30], [255, 255, 255], [177, 127, 227]]])


def test_reads_past_the_slide_edge_are_white_through_openslide(generic_tiff_slide, slide_levels):
    with open_slide(generic_tiff_slide) as slide:
        region = slide._backend.read(0, 1000, 1400, 200, 200)  # OpenSlide pads with transparency
        np.testing.assert_array_equal(region[:104, :136], slide_levels[0][1000:, 1400:])
        assert (region[104:] == 255).all() and (region[:, 136:] == 255).all()


def test_dask_levels_compute_on_a_local_cluster_worker_process(generic_tiff_slide, slide_levels):
    from distributed import Client, LocalCluster

    with (
        open_slide(generic_tiff_slide) as slide,
        LocalCluster(
            n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster) as client,
    ):
        region = slide.levels[0][200:900, 300:1300]
        result = client.compute(region).result(timeout=60)
        np.testing.assert_array_equal(result, slide_levels[0][200:900, 300:1300])
