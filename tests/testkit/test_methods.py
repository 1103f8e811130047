"""The reference segmenters find known nuclei; the worse one is worse."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cytosyn.testkit.methods import otsu_watershed, threshold_components
from napari_cytosyn.testkit.metrics import score


def _truth():
    from skimage.draw import disk

    rng = np.random.default_rng(0)
    lab = np.zeros((128, 128), np.int32)
    k = 1
    for cy in range(16, 128, 32):
        for cx in range(16, 128, 32):
            rr, cc = disk((cy + rng.integers(-3, 4), cx + rng.integers(-3, 4)), 5, shape=lab.shape)
            lab[rr, cc] = k
            k += 1
    return lab


def test_otsu_watershed_finds_the_discs(training_like_image):
    s = score(_truth(), otsu_watershed(training_like_image))
    assert s.n_pred == 16 and s.f1 == 1.0 and s.mean_iou > 0.8


def test_worse_method_scores_lower(training_like_image):
    good = score(_truth(), otsu_watershed(training_like_image))
    bad = score(_truth(), threshold_components(training_like_image))
    assert bad.mean_iou < good.mean_iou and bad.size_bias > 0.3


def test_touching_nuclei_are_split():
    img = np.full((64, 64, 3), (230, 180, 210), np.uint8)
    yy, xx = np.mgrid[:64, :64]
    for cx in (26, 38):
        img[(yy - 32) ** 2 + (xx - cx) ** 2 <= 49] = (90, 60, 140)
    assert otsu_watershed(img).max() == 2
    assert threshold_components(img).max() == 1


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="uint8"):
        otsu_watershed(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="RGB"):
        otsu_watershed(np.zeros((8, 8), np.uint8))
    assert otsu_watershed(np.full((16, 16, 3), 200, np.uint8)).max() == 0


def test_a_few_black_pixels_do_not_move_the_threshold(training_like_image):
    img = training_like_image.copy()
    img[0:2, 0:2] = 0  # near-black specks: huge optical density
    assert otsu_watershed(img).max() == 16
