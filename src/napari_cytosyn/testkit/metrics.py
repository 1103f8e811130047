"""Instance segmentation scores of a predicted label image against a ground-truth one.

Inputs are ``(H, W)`` non-negative integer label images (0 = background) of one shape. Nuclei
match when their IoU exceeds 0.5 (panoptic-quality convention, Kirillov et al. 2019: unique
without an assignment problem). Two empty images score 1 (``mean_iou``: NaN); one empty image
gives F1, PQ and AJI 0.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


def _check_pair(truth: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    truth, pred = np.asarray(truth), np.asarray(pred)
    for name, a in (("truth", truth), ("prediction", pred)):
        if a.ndim != 2:
            raise ValueError(f"{name} must be a 2-D label image, got shape {a.shape}")
        if not np.issubdtype(a.dtype, np.integer) and a.dtype != bool:
            raise ValueError(f"{name} must hold integer labels, got dtype {a.dtype}")
        if a.size and a.min() < 0:
            raise ValueError(f"{name} has negative labels; 0 is background, > 0 nuclei")
    if truth.shape != pred.shape:
        raise ValueError(f"truth {truth.shape} and prediction {pred.shape} differ in shape")
    return truth.astype(np.int64), pred.astype(np.int64)


@dataclass(frozen=True)
class Overlaps:
    """Areas and pairwise intersections of two label images.

    true_ids / pred_ids: the instance ids present; true_area / pred_area: their areas (px);
    inter: ``(n_true, n_pred)`` intersection areas (px).
    """

    true_ids: np.ndarray
    pred_ids: np.ndarray
    true_area: np.ndarray
    pred_area: np.ndarray
    inter: np.ndarray

    @property
    def iou(self) -> np.ndarray:
        union = self.true_area[:, None] + self.pred_area[None, :] - self.inter
        return np.where(union > 0, self.inter / np.maximum(union, 1), 0.0)


def overlaps(truth: np.ndarray, pred: np.ndarray) -> Overlaps:
    """Pairwise intersections of every true and predicted instance (one pass over pixels)."""
    truth, pred = _check_pair(truth, pred)
    true_ids, t_inv = np.unique(truth, return_inverse=True)
    pred_ids, p_inv = np.unique(pred, return_inverse=True)
    table = np.zeros((len(true_ids), len(pred_ids)), np.int64)
    np.add.at(table, (t_inv.ravel(), p_inv.ravel()), 1)
    t_keep, p_keep = true_ids > 0, pred_ids > 0
    return Overlaps(
        true_ids=true_ids[t_keep],
        pred_ids=pred_ids[p_keep],
        true_area=table[t_keep].sum(1),
        pred_area=table[:, p_keep].sum(0),
        inter=table[np.ix_(t_keep, p_keep)],
    )


def match(ov: Overlaps) -> list[tuple[int, int, float]]:
    """Pairs ``(true index, pred index, iou)`` with IoU > 0.5 (which makes them unique)."""
    iou = ov.iou
    ti, pj = np.nonzero(iou > 0.5)
    return [(int(i), int(j), float(iou[i, j])) for i, j in zip(ti, pj, strict=True)]


def aji(ov: Overlaps) -> float:
    """Aggregated Jaccard index (Kumar et al. 2017).

    Every true nucleus is paired with the predicted one of highest IoU (a prediction may serve
    several); the sum of their intersections is divided by the sum of their unions plus the
    areas of unpaired true nuclei and of predictions never used.
    """
    n_t, n_p = len(ov.true_ids), len(ov.pred_ids)
    if n_t == 0 and n_p == 0:
        return 1.0
    if n_t == 0 or n_p == 0:
        return 0.0
    iou = ov.iou
    inter_sum, union_sum = 0, 0
    used = np.zeros(n_p, bool)
    for i in range(n_t):
        j = int(np.argmax(iou[i]))
        if ov.inter[i, j] == 0:
            union_sum += ov.true_area[i]
            continue
        inter_sum += ov.inter[i, j]
        union_sum += ov.true_area[i] + ov.pred_area[j] - ov.inter[i, j]
        used[j] = True
    union_sum += ov.pred_area[~used].sum()
    return float(inter_sum / union_sum)


@dataclass(frozen=True)
class Scores:
    """Scores of one prediction against one truth: counts ``n_true``, ``n_pred``, ``tp``, ``fp``,
    ``fn`` (matching at IoU > 0.5); ``f1 = 2 tp / (2 tp + fp + fn)``, ``precision``, ``recall``;
    ``mean_iou`` of matched pairs; ``pq = mean_iou * f1``; ``aji``; ``count_bias = (n_pred -
    n_true) / n_true``; ``size_bias``: mean ``(pred area - true area) / true area`` over matched
    pairs (NaN where a ratio has no pairs or no true nuclei).
    """

    n_true: int
    n_pred: int
    tp: int
    fp: int
    fn: int
    f1: float
    precision: float
    recall: float
    mean_iou: float
    pq: float
    aji: float
    count_bias: float
    size_bias: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def score(truth: np.ndarray, pred: np.ndarray) -> Scores:
    """All scores of ``pred`` against ``truth`` (both ``(H, W)`` integer label images)."""
    ov = overlaps(truth, pred)
    pairs = match(ov)
    n_t, n_p, tp = len(ov.true_ids), len(ov.pred_ids), len(pairs)
    fp, fn = n_p - tp, n_t - tp
    both_empty = n_t == 0 and n_p == 0
    f1 = 1.0 if both_empty else 2 * tp / (2 * tp + fp + fn)
    mean_iou = float(np.mean([p[2] for p in pairs])) if pairs else math.nan
    pq = 1.0 if both_empty else mean_iou * f1 if pairs else 0.0
    if pairs:
        ratios = [(ov.pred_area[j] - ov.true_area[i]) / ov.true_area[i] for i, j, _ in pairs]
        size_bias = float(np.mean(ratios))
    else:
        size_bias = math.nan
    return Scores(
        n_true=n_t,
        n_pred=n_p,
        tp=tp,
        fp=fp,
        fn=fn,
        f1=float(f1),
        precision=1.0 if n_p == 0 and n_t == 0 else (tp / n_p if n_p else 0.0),
        recall=1.0 if n_t == 0 and n_p == 0 else (tp / n_t if n_t else 0.0),
        mean_iou=mean_iou,
        pq=float(pq),
        aji=aji(ov),
        count_bias=(n_p - n_t) / n_t if n_t else math.nan,
        size_bias=size_bias,
    )


def error_map(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """``(H, W)`` uint8: 1 matched prediction, 2 false positive, 3 missed (false negative) truth.

    Missed truth is drawn over predictions, so a nucleus that was split or merged shows red.
    """
    truth, pred = _check_pair(truth, pred)
    ov = overlaps(truth, pred)
    pairs = match(ov)
    tp_pred = ov.pred_ids[[j for _, j, _ in pairs]] if pairs else np.array([], np.int64)
    tp_true = ov.true_ids[[i for i, _, _ in pairs]] if pairs else np.array([], np.int64)
    out = np.zeros(truth.shape, np.uint8)
    out[np.isin(pred, tp_pred)] = 1
    out[(pred > 0) & ~np.isin(pred, tp_pred)] = 2
    out[(truth > 0) & ~np.isin(truth, tp_true)] = 3
    return out


def morphometrics(labels: np.ndarray, mpp: float = 0.5) -> dict[str, np.ndarray]:
    """Per-nucleus shape features: ``area_um2``, ``eccentricity``, ``solidity``,
    ``perimeter_um`` (1-D float arrays, one value per instance)."""
    from skimage.measure import regionprops_table

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D, got shape {labels.shape}")
    props = regionprops_table(
        labels.astype(np.int32), properties=("area", "eccentricity", "solidity", "perimeter")
    )
    return {
        "area_um2": np.asarray(props["area"], float) * mpp**2,
        "eccentricity": np.asarray(props["eccentricity"], float),
        "solidity": np.asarray(props["solidity"], float),
        "perimeter_um": np.asarray(props["perimeter"], float) * mpp,
    }


def morphometric_shift(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    """Two-sample Kolmogorov-Smirnov statistic per feature (0 = same distribution, 1 = disjoint)."""
    from scipy.stats import ks_2samp

    out = {}
    for key in a:
        if len(a[key]) == 0 or len(b[key]) == 0:
            out[key] = math.nan
        else:
            out[key] = float(ks_2samp(a[key], b[key]).statistic)
    return out
