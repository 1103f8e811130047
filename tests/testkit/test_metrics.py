"""Scores equal hand-computed values on small label images (edge cases included)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from napari_cytosyn.testkit.metrics import (
    error_map,
    morphometric_shift,
    morphometrics,
    score,
)


def _pair():
    truth = np.zeros((8, 8), np.int32)
    truth[0:2, 0:2] = 1  # A, 4 px
    truth[4:6, 4:7] = 2  # B, 6 px
    pred = np.zeros((8, 8), np.int32)
    pred[0:2, 0:2] = 5  # A exactly
    pred[4:6, 4:6] = 7  # 4 px of B: IoU 4/6
    pred[0:1, 6:8] = 9  # false positive, 2 px
    return truth, pred


def test_scores_of_a_hand_computed_case():
    s = score(*_pair())
    assert (s.n_true, s.n_pred, s.tp, s.fp, s.fn) == (2, 3, 2, 1, 0)
    assert s.f1 == pytest.approx(0.8)
    assert s.precision == pytest.approx(2 / 3) and s.recall == 1.0
    assert s.mean_iou == pytest.approx((1 + 2 / 3) / 2)
    assert s.pq == pytest.approx(5 / 6 * 0.8)
    # AJI: (4 + 4) / (4 + 6 + 2 unused px)
    assert s.aji == pytest.approx(8 / 12)
    assert s.count_bias == pytest.approx(0.5)
    assert s.size_bias == pytest.approx((0 + (4 - 6) / 6) / 2)


def test_split_nucleus():
    truth = np.zeros((6, 6), np.int32)
    truth[1:5, 1:5] = 1
    pred = np.zeros_like(truth)
    pred[1:5, 1:3] = 1
    pred[1:5, 3:5] = 2  # two halves, IoU exactly 0.5 each: no match
    s = score(truth, pred)
    assert (s.tp, s.fp, s.fn) == (0, 2, 1)
    assert s.f1 == 0.0 and s.pq == 0.0 and math.isnan(s.mean_iou)
    assert s.aji == pytest.approx(8 / (16 + 8))
    assert s.count_bias == pytest.approx(1.0)


def test_merged_nuclei():
    truth = np.zeros((6, 6), np.int32)
    truth[1:5, 1:3] = 1
    truth[1:5, 3:5] = 2
    pred = (truth > 0).astype(np.int32)
    s = score(truth, pred)
    assert (s.tp, s.fp, s.fn) == (0, 1, 2)
    assert s.f1 == 0.0
    # both true halves pair with the one prediction: (8 + 8) / (16 + 16)
    assert s.aji == pytest.approx(0.5)
    assert s.count_bias == pytest.approx(-0.5)


def test_empty_prediction():
    truth, _ = _pair()
    s = score(truth, np.zeros_like(truth))
    assert (s.tp, s.fp, s.fn) == (0, 0, 2)
    assert s.f1 == 0.0 and s.pq == 0.0 and s.aji == 0.0 and s.recall == 0.0
    assert s.count_bias == -1.0 and math.isnan(s.size_bias)


def test_empty_truth():
    _, pred = _pair()
    s = score(np.zeros_like(pred), pred)
    assert (s.tp, s.fp, s.fn) == (0, 3, 0)
    assert s.f1 == 0.0 and s.pq == 0.0 and s.aji == 0.0 and s.precision == 0.0
    assert math.isnan(s.count_bias)


def test_both_empty_is_perfect():
    z = np.zeros((4, 4), np.int32)
    s = score(z, z)
    assert s.f1 == 1.0 and s.pq == 1.0 and s.aji == 1.0
    assert math.isnan(s.mean_iou)


def test_label_ids_do_not_matter():
    truth, pred = _pair()
    relabelled = np.where(pred > 0, 100 - pred, 0)
    assert score(truth, relabelled) == score(truth, pred)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="differ in shape"):
        score(np.zeros((4, 4), int), np.zeros((4, 5), int))
    with pytest.raises(ValueError, match="integer labels"):
        score(np.zeros((4, 4)), np.zeros((4, 4), int))
    with pytest.raises(ValueError, match="negative"):
        score(-np.ones((4, 4), int), np.zeros((4, 4), int))


def test_error_map_colours_fp_and_fn():
    truth, pred = _pair()
    truth[7, 0] = 3  # a missed nucleus
    m = error_map(truth, pred)
    assert (m[0:2, 0:2] == 1).all()  # matched
    assert (m[0, 6:8] == 2).all()  # false positive
    assert m[7, 0] == 3  # false negative
    assert m[3, 3] == 0


def test_morphometrics_and_ks_shift():
    lab = np.zeros((20, 20), np.int32)
    lab[0:4, 0:4] = 1
    lab[10:12, 10:18] = 2
    m = morphometrics(lab, mpp=0.5)
    assert m["area_um2"].tolist() == [4.0, 4.0]
    assert m["eccentricity"][0] == pytest.approx(0.0) and m["eccentricity"][1] > 0.9
    shift = morphometric_shift(m, m)
    assert shift["area_um2"] == 0.0
    other = morphometrics(np.pad(lab[0:4, 0:4], 4) * 3, mpp=1.0)
    assert morphometric_shift(m, other)["area_um2"] == 1.0
