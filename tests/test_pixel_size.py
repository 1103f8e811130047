"""PixelSize: the one physical pixel size type (x, y in um) and its conversions."""

from __future__ import annotations

import json

import pytest

from napari_cytosyn.pixel_size import PixelSize


def test_from_any_reads_every_accepted_form_as_x_then_y():
    assert PixelSize.from_any(0.5) == PixelSize(0.5, 0.5)
    assert PixelSize.from_any((0.25, 0.5)) == PixelSize(x=0.25, y=0.5)
    assert PixelSize.from_any([0.25, 0.5]) == PixelSize(0.25, 0.5)
    size = PixelSize(0.3, 0.4)
    assert PixelSize.from_any(size) is size
    assert PixelSize.from_any(None) is None


def test_napari_scale_is_rows_then_columns():
    assert PixelSize(0.25, 0.5).napari_scale() == (0.5, 0.25)


def test_list_round_trips_through_json():
    size = PixelSize(0.2527, 0.2531)
    assert size.to_list() == [0.2527, 0.2531]
    assert PixelSize.from_any(json.loads(json.dumps(size.to_list()))) == size


@pytest.mark.parametrize("bad", [0, -0.5, float("nan"), float("inf"), (0.5, 0.0)])
def test_non_positive_or_non_finite_sizes_are_refused(bad):
    with pytest.raises(ValueError, match="positive finite um/px"):
        PixelSize.from_any(bad)


@pytest.mark.parametrize("bad", ["0.5", (0.5, 0.5, 0.5), {"x": 0.5, "y": 0.5}, True])
def test_other_types_are_a_type_error_naming_the_value(bad):
    with pytest.raises(TypeError, match="pixel size"):
        PixelSize.from_any(bad)


def test_side_um_refuses_anisotropic_pixels_naming_both_axes():
    assert PixelSize(0.5, 0.5 * (1 + 1e-9)).side_um() == 0.5
    with pytest.raises(ValueError, match=r"inpainting needs square pixels.*0.25 x 0.5 um"):
        PixelSize(0.25, 0.5).side_um("inpainting")


def test_str_says_one_value_for_square_pixels():
    assert str(PixelSize(0.5, 0.5)) == "0.5 um/px"
    assert str(PixelSize(0.25, 0.5)) == "0.25 x 0.5 um/px"
