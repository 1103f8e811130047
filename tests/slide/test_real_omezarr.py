"""OME-Zarr backend: NGFF 0.4 and 0.5, axis orders, units and scales."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cytosyn.slide import open_slide


@pytest.mark.parametrize(("version", "axes"), [("0.4", "yxc"), ("0.5", "cyx"), ("0.4", "tczyx")])
def test_axis_orders_are_returned_as_y_x_rgb(
    tmp_path, slide_levels, ome_zarr_writer, version, axes
):
    path = ome_zarr_writer(tmp_path / "img.zarr", slide_levels[1:], version=version, axes=axes)
    with open_slide(path) as slide:
        assert slide.format == f"ome-zarr:{version}"
        assert slide.level_shapes == [lv.shape[:2] for lv in slide_levels[1:]]
        assert slide.downsamples == pytest.approx([1.0, 3.0])
        np.testing.assert_array_equal(
            slide.levels[0][50:300, 100:400].compute(), slide_levels[1][50:300, 100:400]
        )
        np.testing.assert_array_equal(slide.levels[1].compute(), slide_levels[2])


def test_scale_units_convert_to_micrometres(tmp_path, slide_levels, ome_zarr_writer):
    path = ome_zarr_writer(
        tmp_path / "nm.ome.zarr", slide_levels[2:], mpp=(250.0, 260.0), unit="nanometer"
    )
    with open_slide(path) as slide:
        assert (slide.mpp.x, slide.mpp.y) == pytest.approx((0.25, 0.26))
        assert slide.name == "nm"


def test_unit_scale_without_units_means_mpp_unknown(tmp_path, slide_levels, ome_zarr_writer):
    path = ome_zarr_writer(tmp_path / "plain.zarr", slide_levels[2:], mpp=None, unit=None)
    with open_slide(path) as slide:
        assert slide.mpp is None
        assert slide.metadata()["mpp_known"] is False


def test_v05_fixture_validates_as_ngff(ome_zarr_v05_slide, ome_zarr_v04_slide):
    from ome_zarr_models import open_ome_zarr

    for path in (ome_zarr_v04_slide, ome_zarr_v05_slide):
        model = open_ome_zarr(str(path))
        assert type(model).__name__ == "Image"
