"""Mask layers read as plain data (GUI thread), rasterised later (a job): napari layers, no Qt."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image, Labels, Shapes

from napari_cytosyn._napari._masks import read_mask


@pytest.fixture
def slide_layer():
    """A 1000 x 1000 px slide layer at 0.25 um/px, shifted by 10 um."""
    return Image(np.zeros((1000, 1000), np.uint8), scale=(0.25, 0.25), translate=(10.0, 0.0))


def test_shapes_rasterise_on_the_slide_grid(slide_layer):
    # world um: a rectangle 20-30 (y) x 5-15 (x) -> slide px rows 40-80, cols 20-60
    shapes = Shapes([np.array([[20, 5], [20, 15], [30, 15], [30, 5]], float)])
    (y, x, h, w), mask = read_mask(shapes, slide_layer).rasterise((1000, 1000))
    assert (y, x, h, w) == (40, 20, 41, 41)
    # pixels whose centres lie inside: rows 40-79, cols 20-59 (half-open edges, as the CLI)
    assert mask.shape == (41, 41) and mask[:40, :40].all()
    assert not mask[40:].any() and not mask[:, 40:].any()


def test_overlapping_shapes_are_all_inside(slide_layer):
    # two rectangles sharing rows 50-59 x cols 30-39 (slide px): the overlap is inside too
    shapes = Shapes(
        [
            np.array([[20, 5], [20, 10], [25, 10], [25, 5]], float),
            np.array([[22.5, 7.5], [22.5, 12.5], [27.5, 12.5], [27.5, 7.5]], float),
        ]
    )
    (y, x, h, w), mask = read_mask(shapes, slide_layer).rasterise((1000, 1000))
    assert (y, x, h, w) == (40, 20, 31, 31)
    assert mask[10:20, 10:20].all()  # the overlap
    assert mask.sum() == 2 * 20 * 20 - 10 * 10


def test_labels_are_copied_when_read_so_later_painting_changes_nothing(slide_layer):
    data = np.zeros((125, 125), np.uint8)
    data[40:50, 60:75] = 3
    labels = Labels(data, scale=(2.0, 2.0), translate=(10.0, 0.0))  # 8 slide px per label px
    drawn = read_mask(labels, slide_layer)
    labels.data[:] = 0  # the user paints on while the job runs
    labels.data[0:5, 0:5] = 1
    (y, x, h, w), mask = drawn.rasterise((1000, 1000))
    assert (y, x, h, w) == (316, 476, 80, 120)
    assert mask.all()


def test_what_cannot_be_used_is_refused_when_read(slide_layer):
    with pytest.raises(ValueError, match="encloses no area"):
        read_mask(Shapes([np.array([[1, 1], [5, 5]], float)], shape_type="line"), slide_layer)
    with pytest.raises(ValueError, match="nothing is painted"):
        read_mask(Labels(np.zeros((8, 8), np.uint8)), slide_layer)
    with pytest.raises(TypeError, match="Shapes layer"):
        read_mask(slide_layer, slide_layer)


def test_a_mask_off_the_slide_is_refused_when_rasterised(slide_layer):
    shapes = Shapes([np.array([[500, 500], [500, 600], [600, 600], [600, 500]], float)])
    drawn = read_mask(shapes, slide_layer)
    with pytest.raises(ValueError, match="outside the slide"):
        drawn.rasterise((1000, 1000))
