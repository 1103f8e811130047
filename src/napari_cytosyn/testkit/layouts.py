"""Nucleus layouts: instance label images that synthetic H&E is conditioned on.

A :class:`Layout` is a test image's ground truth: ``labels`` ``(H, W)`` int32 (0 = background),
``tissue`` ``(H, W)`` bool (outside is glass) and ``mpp``. Made by :func:`procedural_layout`
(seeded random nuclei, :class:`LayoutParams`), :func:`layout_from_labels` (a painted or loaded
label image, resampled to the model's resolution) or :func:`layout_from_image` (a classical
segmentation of real tissue, for a synthetic twin with the same nuclei).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .methods import otsu_watershed, relabel


@dataclass
class Layout:
    """Ground truth of one test image (see module doc). ``source`` says how it was made."""

    labels: np.ndarray
    tissue: np.ndarray
    mpp: float = 0.5
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        lab = np.asarray(self.labels)
        if lab.ndim != 2:
            raise ValueError(f"layout labels must be 2-D (H, W), got shape {lab.shape}")
        if not np.issubdtype(lab.dtype, np.integer) and lab.dtype != bool:
            raise ValueError(f"layout labels must be integers, got dtype {lab.dtype}")
        if lab.size and lab.min() < 0:
            raise ValueError("layout labels must be >= 0 (0 = background)")
        self.labels = lab.astype(np.int32)
        tissue = np.asarray(self.tissue, bool)
        if tissue.shape != lab.shape:
            raise ValueError(f"tissue mask {tissue.shape} differs from labels {lab.shape}")
        self.tissue = tissue
        if not self.mpp > 0:
            raise ValueError(f"mpp must be positive, got {self.mpp}")

    @property
    def shape(self) -> tuple[int, int]:
        return self.labels.shape

    @property
    def n_nuclei(self) -> int:
        return len(np.unique(self.labels[self.labels > 0]))


@dataclass(frozen=True)
class LayoutParams:
    """Parameters of :func:`procedural_layout` (lengths in um, densities per mm^2 of tissue).

    density_per_mm2: expected nuclei (dense tumour ~5000-8000, stroma ~1000).
    radius_um, radius_sd_um: normal equivalent radius ``sqrt(area / pi)``, clipped to
        ``[0.4, 2.5] x radius_um``. elongation, elongation_sd: long / short axis, lognormal, >= 1.
    clustering: share of nuclei in clusters (Thomas process) of spread ``cluster_radius_um`` and
        ``cluster_size`` nuclei on average. tissue_fraction, tissue_scale_um: share and feature
        size of the smooth random tissue region (1 = all tissue).
    max_overlap: a nucleus overlapping earlier ones by more than this share of its area is dropped
        (otherwise clipped: nuclei never share pixels).
    """

    density_per_mm2: float = 4000.0
    radius_um: float = 3.2
    radius_sd_um: float = 0.6
    elongation: float = 1.4
    elongation_sd: float = 0.2
    clustering: float = 0.3
    cluster_radius_um: float = 12.0
    cluster_size: float = 8.0
    tissue_fraction: float = 1.0
    tissue_scale_um: float = 60.0
    max_overlap: float = 0.2

    def __post_init__(self):
        checks = (
            (self.density_per_mm2 >= 0, "density_per_mm2 must be >= 0"),
            (self.radius_um > 0, "radius_um must be > 0"),
            (self.radius_sd_um >= 0, "radius_sd_um must be >= 0"),
            (self.elongation >= 1, "elongation must be >= 1 (1 = round)"),
            (self.elongation_sd >= 0, "elongation_sd must be >= 0"),
            (0 <= self.clustering <= 1, "clustering must be in [0, 1]"),
            (self.cluster_radius_um > 0, "cluster_radius_um must be > 0"),
            (self.cluster_size >= 1, "cluster_size must be >= 1"),
            (0 < self.tissue_fraction <= 1, "tissue_fraction must be in (0, 1]"),
            (self.tissue_scale_um > 0, "tissue_scale_um must be > 0"),
            (0 <= self.max_overlap < 1, "max_overlap must be in [0, 1)"),
        )
        for ok, message in checks:
            if not ok:
                raise ValueError(f"{message}, got {self}")

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def tissue_region(shape: tuple[int, int], fraction: float, scale_px: float, rng) -> np.ndarray:
    """A smooth random tissue mask ``(H, W)`` bool covering ``fraction`` of the image."""
    from scipy import ndimage as ndi

    if fraction >= 1.0:
        return np.ones(shape, bool)
    field_ = ndi.gaussian_filter(rng.standard_normal(shape), scale_px / 2, mode="wrap")
    return field_ > np.quantile(field_, 1.0 - fraction)


def _centres(n: int, tissue: np.ndarray, p: LayoutParams, mpp: float, rng) -> np.ndarray:
    """``(n, 2)`` float centres in tissue: a uniform part and a Thomas-process part."""
    ys, xs = np.nonzero(tissue)
    if len(ys) == 0 or n == 0:
        return np.zeros((0, 2))
    n_cl = int(rng.binomial(n, p.clustering))
    uni = rng.integers(len(ys), size=n - n_cl)
    pts = [np.stack([ys[uni], xs[uni]], 1) + rng.uniform(-0.5, 0.5, (n - n_cl, 2))]
    if n_cl:
        n_parents = max(1, round(n_cl / p.cluster_size))
        par = rng.integers(len(ys), size=n_parents)
        parents = np.stack([ys[par], xs[par]], 1).astype(float)
        child = parents[rng.integers(n_parents, size=n_cl)]
        child = child + rng.normal(0, p.cluster_radius_um / mpp, (n_cl, 2))
        h, w = tissue.shape
        child = child[(child[:, 0] >= 0) & (child[:, 0] < h) & (child[:, 1] >= 0)]
        child = child[child[:, 1] < w]
        child = child[tissue[child[:, 0].astype(int), child[:, 1].astype(int)]]
        pts.append(child)
    out = np.concatenate(pts)
    return out[rng.permutation(len(out))]


def procedural_layout(
    shape: tuple[int, int],
    params: LayoutParams | None = None,
    seed: int = 0,
    mpp: float = 0.5,
) -> Layout:
    """Random nuclei on a ``shape = (H, W)`` px canvas at ``mpp`` um/px; same seed, same layout.

    The number of nuclei is Poisson with mean ``density_per_mm2 x tissue area``; each is an
    ellipse with equivalent radius and elongation drawn from ``params``, at a random angle.
    Nuclei are drawn in order and never share pixels: one overlapping earlier ones by more than
    ``max_overlap`` of its area is dropped, otherwise clipped to the free pixels.
    """
    from skimage.draw import ellipse

    p = params or LayoutParams()
    h, w = (int(v) for v in shape)
    if h < 8 or w < 8:
        raise ValueError(f"layout shape must be at least 8 x 8 px, got {shape}")
    rng = np.random.default_rng(seed)
    tissue = tissue_region((h, w), p.tissue_fraction, p.tissue_scale_um / mpp, rng)
    area_mm2 = tissue.sum() * (mpp * 1e-3) ** 2
    n = int(rng.poisson(p.density_per_mm2 * area_mm2))
    centres = _centres(n, tissue, p, mpp, rng)
    labels = np.zeros((h, w), np.int32)
    next_id = 1
    for cy, cx in centres:
        r_um = rng.normal(p.radius_um, p.radius_sd_um)
        r_um = float(np.clip(r_um, 0.4 * p.radius_um, 2.5 * p.radius_um))
        e = max(1.0, float(p.elongation * math.exp(rng.normal(0, p.elongation_sd))))
        r = r_um / mpp
        a, b = r * math.sqrt(e), r / math.sqrt(e)
        rr, cc = ellipse(cy, cx, a, b, shape=(h, w), rotation=float(rng.uniform(0, math.pi)))
        if len(rr) == 0:
            continue
        free = labels[rr, cc] == 0
        if 1.0 - free.mean() > p.max_overlap:
            continue
        labels[rr[free], cc[free]] = next_id
        next_id += 1
    labels[~tissue] = 0
    return Layout(
        labels=relabel(labels),
        tissue=tissue,
        mpp=mpp,
        source={"kind": "procedural", "seed": int(seed), "params": p.to_dict()},
    )


def resample_labels(labels: np.ndarray, factor: float) -> np.ndarray:
    """Nearest-neighbour resampling of a label image by ``factor`` (2 = twice as many px)."""
    labels = np.asarray(labels)
    if factor == 1.0:
        return labels.copy()
    h, w = labels.shape
    nh, nw = max(1, round(h * factor)), max(1, round(w * factor))
    yi = np.minimum(((np.arange(nh) + 0.5) / factor).astype(int), h - 1)
    xi = np.minimum(((np.arange(nw) + 0.5) / factor).astype(int), w - 1)
    return labels[np.ix_(yi, xi)]


def layout_from_labels(
    labels: np.ndarray,
    mpp: float = 0.5,
    model_mpp: float = 0.5,
    tissue: np.ndarray | None = None,
) -> Layout:
    """A layout from a painted or loaded label image at ``mpp`` um/px, resampled to
    ``model_mpp`` (nearest neighbour) and relabelled 1..N. ``tissue`` defaults to everywhere."""
    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise ValueError(
            f"labels must be a 2-D image (a single-plane Labels layer), got {lab.shape}"
        )
    if not np.issubdtype(lab.dtype, np.integer) and lab.dtype != bool:
        raise ValueError(f"labels must hold integers, got dtype {lab.dtype}")
    if not mpp > 0 or not model_mpp > 0:
        raise ValueError(f"mpp values must be positive, got mpp={mpp}, model_mpp={model_mpp}")
    factor = mpp / model_mpp
    lab = resample_labels(lab.astype(np.int64), factor)
    t = np.ones(lab.shape, bool) if tissue is None else resample_labels(np.asarray(tissue), factor)
    return Layout(
        labels=relabel(lab),
        tissue=t.astype(bool),
        mpp=model_mpp,
        source={"kind": "labels", "input_mpp": float(mpp)},
    )


def rgb_at(rgb: np.ndarray, mpp: float, model_mpp: float) -> np.ndarray:
    """``(H, W, 3)`` uint8 at ``mpp`` um/px resampled (anti-aliased) to ``model_mpp``."""
    if abs(mpp - model_mpp) <= 1e-6:
        return rgb
    from skimage.transform import rescale

    out = rescale(rgb, mpp / model_mpp, channel_axis=2, anti_aliasing=True, preserve_range=True)
    return np.clip(out.round(), 0, 255).astype(np.uint8)


def layout_from_image(rgb: np.ndarray, mpp: float = 0.5, model_mpp: float = 0.5) -> Layout:
    """A layout from real tissue: the reference segmenter (Otsu + watershed on hematoxylin) run
    on ``rgb`` ``(H, W, 3)`` uint8 at ``mpp`` um/px, resampled to ``model_mpp``. The tissue
    mask is where the image is not bright glass."""
    from skimage.color import rgb2gray
    from skimage.morphology import remove_small_objects

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {rgb.shape} {rgb.dtype}")
    rgb = rgb_at(rgb[..., :3], mpp, model_mpp)
    labels = otsu_watershed(rgb)
    # glass: bright regions of at least ~16 um^2 (lumens and small gaps stay tissue)
    glass = remove_small_objects(rgb2gray(rgb) >= 0.85, max_size=int(16 / model_mpp**2))
    tissue = ~glass | (labels > 0)
    return Layout(
        labels=labels,
        tissue=tissue,
        mpp=model_mpp,
        source={"kind": "image", "input_mpp": float(mpp), "method": "otsu_watershed"},
    )
