"""Quality metrics for H&E tiles: stain histograms and classical nuclei statistics, no learned
feature extractor. Colour deconvolution (``rgb2hed``) gives haematoxylin and eosin densities,
compared by the 1-D Wasserstein distance of their distributions; a classical nuclei segmentation
(Otsu on smoothed haematoxylin, hole filling, distance-transform watershed) gives density per
mm^2 and mean nuclear area in um^2. Inputs are ``(H, W, 3)`` uint8 RGB arrays (or lists of them).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np

# Fixed histogram ranges (rgb2hed optical densities) so histograms of different images compare.
H_RANGE = (-0.05, 0.35)
E_RANGE = (-0.05, 0.35)
N_BINS = 128


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise ValueError(
            f"expected an (H, W, 3) uint8 RGB image, got shape {rgb.shape} dtype {rgb.dtype}; "
            "drop alpha and convert with np.uint8 first"
        )
    return rgb


def hed(rgb: np.ndarray) -> np.ndarray:
    """Haematoxylin/eosin/DAB optical densities ``(H, W, 3)`` float64 of a uint8 RGB image:
    scikit-image's ``rgb2hed``, the same values, with its log of each of the 256 levels looked
    up instead of computed per pixel."""
    from skimage.color import hed_from_rgb

    return np.maximum(_log_levels()[_check_rgb(rgb)] @ hed_from_rgb, 0)


@functools.cache
def _log_levels() -> np.ndarray:
    """``rgb2hed``'s optical density of each uint8 level before unmixing, ``(256,)`` float64."""
    from skimage.util import img_as_float

    levels = np.maximum(img_as_float(np.arange(256, dtype=np.uint8)), 1e-6)
    return np.log(levels) / np.log(1e-6)


def hed_histograms(images: np.ndarray | list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Normalised H and E histograms (each ``(N_BINS,)`` float64 summing to 1) over ``images``."""
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = [images]
    h_hist = np.zeros(N_BINS)
    e_hist = np.zeros(N_BINS)
    for im in images:
        d = hed(im)
        h_hist += np.histogram(d[..., 0], bins=N_BINS, range=H_RANGE)[0]
        e_hist += np.histogram(d[..., 1], bins=N_BINS, range=E_RANGE)[0]
    return h_hist / max(h_hist.sum(), 1), e_hist / max(e_hist.sum(), 1)


def _w1(p: np.ndarray, q: np.ndarray, bin_width: float) -> float:
    """1-D Wasserstein distance between two histograms on the same bins."""
    return float(np.abs(np.cumsum(p) - np.cumsum(q)).sum() * bin_width)


def hed_distance(a: np.ndarray | list[np.ndarray], b: np.ndarray | list[np.ndarray]) -> float:
    """Mean of the H and E Wasserstein distances (optical-density units) between image sets."""
    ha, ea = hed_histograms(a)
    hb, eb = hed_histograms(b)
    wh = (H_RANGE[1] - H_RANGE[0]) / N_BINS
    we = (E_RANGE[1] - E_RANGE[0]) / N_BINS
    return 0.5 * (_w1(ha, hb, wh) + _w1(ea, eb, we))


def segment_nuclei(
    rgb: np.ndarray, mpp: float = 0.5, od: np.ndarray | None = None, clip: float | None = None
) -> np.ndarray:
    """Label image ``(H, W)`` int32 of nuclei found by a classical pipeline.

    Haematoxylin channel, Gaussian smoothing (0.5 um), Otsu threshold, hole filling, removal of
    objects under 8 um^2, and a distance-transform watershed that splits touching nuclei whose
    centres are at least 3 um apart. ``od``: the image's :func:`hed` when the caller has it.
    ``clip``: Otsu's threshold of the channel clipped at this percentile, so that a few
    saturated pixels (pen ink, R = G = 0) cannot pull it to their level.
    """
    from scipy import ndimage as ndi
    from skimage.filters import gaussian, threshold_otsu
    from skimage.measure import label
    from skimage.segmentation import watershed

    h = gaussian((hed(rgb) if od is None else od)[..., 0], sigma=0.5 / mpp)
    if float(h.max() - h.min()) < 1e-6:
        return np.zeros(h.shape, np.int32)
    mask = h > threshold_otsu(h if clip is None else np.minimum(h, np.percentile(h, clip)))
    # holes: background not 4-connected to the image's edge (ndi.binary_fill_holes, faster)
    bg, _n = ndi.label(~mask)
    hole = np.ones(_n + 1, bool)
    hole[np.concatenate([bg[0], bg[-1], bg[:, 0], bg[:, -1]])] = False
    mask = ndi.binary_opening(mask | hole[bg], iterations=1)
    lab = label(mask)
    keep = np.bincount(lab.ravel()) >= max(1, round(8.0 / mpp**2))
    keep[0] = False
    lab = (np.cumsum(keep) * keep)[lab]  # the kept objects numbered as label() numbers them
    mask = lab > 0
    dist = ndi.distance_transform_edt(mask)
    peaks = _peaks_per_label(dist, lab, max(1, round(3.0 / mpp)))
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-dist, markers, mask=mask).astype(np.int32)


def _peaks_per_label(image: np.ndarray, labels: np.ndarray, min_distance: int) -> np.ndarray:
    """``skimage.feature.peak_local_max(image, min_distance=min_distance, labels=labels)`` for a
    2-D image: the same peaks ``(N, 2)`` int64 in the same order (label by label, highest
    first), found for all labels at once instead of in a Python loop over them, which took 60 %
    of :func:`segment_nuclei` (and so of the tissue descriptor, which a twin computes per window).

    As scikit-image does: labels within ``min_distance`` px of the edge are dropped; a pixel is
    a candidate when no pixel of its label in the ``2 min_distance + 1`` square around it is
    higher (a label whose pixels all are: its pixels that an opening removes), and above the
    image's minimum; candidates, highest first, are kept unless a kept one of the same label lies
    closer than ``min_distance`` (Chebyshev).
    """
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max

    md = int(min_distance)
    if md < 2 or image.ndim != 2:
        return peak_local_max(image, min_distance=md, labels=labels)
    h, w = image.shape
    lab = labels.astype(np.int64)
    lab[:md], lab[-md:], lab[:, :md], lab[:, -md:] = 0, 0, 0, 0
    inl = lab > 0
    if not inl.any():
        return np.empty((0, 2), dtype=np.int64)
    # Window maxima of keys label * big + value rank (exact integers) are the maxima of the
    # highest label in the window (of the lowest with the labels reversed): exact for a pixel
    # whose label is one of the two; pixels between two other labels are compared one by one.
    _, rank = np.unique(image[inl], return_inverse=True)
    r = np.zeros((h, w), np.int64)
    r[inl] = rank.reshape(-1) + 1
    big, top = int(rank.max()) + 2, int(lab.max()) + 1
    cand = np.zeros((h, w), bool)
    own = np.zeros((h, w), bool)
    for key in (lab, top - lab):
        k = np.where(inl, key * big + r, -1)
        m = ndi.maximum_filter(k, size=2 * md + 1, mode="nearest")
        mine = inl & (m // big == key)
        cand |= mine & (m == k)
        own |= mine
    d = np.arange(-md, md + 1)
    ys, xs = np.nonzero(inl & ~own)
    for s in range(0, ys.size, 4096):  # bounded memory on large images
        y, x = ys[s : s + 4096, None, None], xs[s : s + 4096, None, None]
        yy, xx = np.clip(y + d[:, None], 0, h - 1), np.clip(x + d, 0, w - 1)
        higher = (lab[yy, xx] == lab[y, x]) & (image[yy, xx] > image[y, x])
        cand[y[:, 0, 0], x[:, 0, 0]] = ~higher.any(axis=(1, 2))
    n_lab = np.bincount(lab[inl], minlength=top)
    flat = np.nonzero((np.bincount(lab[cand], minlength=top) == n_lab) & (n_lab > 0))[0]
    objects = ndi.find_objects(lab) if flat.size else []
    for k in flat:
        m = lab[objects[k - 1]] == k
        c = cand[objects[k - 1]]
        c[m] = False
        c[m ^ ndi.binary_opening(m)] = True
    cand &= image > image.min()
    ys, xs = np.nonzero(cand)
    order = np.lexsort((-image[ys, xs], lab[ys, xs]))  # stable: raster order on ties
    ys, xs, lv = ys[order], xs[order], lab[ys[order], xs[order]]
    keep = np.ones(ys.size, bool)
    starts = np.flatnonzero(np.r_[True, lv[1:] != lv[:-1], True])
    for s, e in itertools.pairwise(starts):
        if e - s < 2:
            continue
        near = (np.abs(ys[s:e, None] - ys[s:e]) < md) & (np.abs(xs[s:e, None] - xs[s:e]) < md)
        gone = np.zeros(e - s, bool)
        for i in range(e - s):
            keep[s + i] = not gone[i]
            if keep[s + i]:
                gone |= near[i]
    return np.stack([ys[keep], xs[keep]], 1)


@dataclass(frozen=True)
class NucleiStats:
    """Nuclei density (per mm^2 of image) and mean nuclear area (um^2) over a set of images."""

    count: int
    area_mm2: float
    density_per_mm2: float
    mean_area_um2: float


def nuclei_stats(
    images: np.ndarray | list[np.ndarray], mpp: float = 0.5, clip: float | None = None
) -> NucleiStats:
    """Pool :func:`segment_nuclei` (``clip`` as there) over ``images`` (each ``(H, W, 3)``
    uint8 at ``mpp``)."""
    if mpp <= 0:
        raise ValueError(f"mpp must be positive microns per pixel, got {mpp}")
    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = [images]
    count, px_total, nuc_px = 0, 0, 0
    for im in images:
        lab = segment_nuclei(im, mpp, clip=clip)
        n = int(lab.max())
        count += n
        nuc_px += int((lab > 0).sum())
        px_total += lab.size
    area_mm2 = px_total * mpp**2 / 1e6
    return NucleiStats(
        count=count,
        area_mm2=area_mm2,
        density_per_mm2=count / area_mm2 if area_mm2 else 0.0,
        mean_area_um2=nuc_px * mpp**2 / count if count else 0.0,
    )


def relative_error(value: float, reference: float) -> float:
    """``|value - reference| / |reference|``; inf when the reference is 0 and value is not."""
    if reference == 0:
        return 0.0 if value == 0 else float("inf")
    return abs(value - reference) / abs(reference)


def h_sharpness(rgb: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Variance of the Laplacian of the haematoxylin channel (a focus/sharpness measure).

    ``mask`` ``(H, W)`` bool restricts the variance to those pixels (the Laplacian is computed
    on the whole image first, so the mask's border does not count as an edge).
    """
    from scipy import ndimage as ndi

    lap = ndi.laplace(hed(rgb)[..., 0])
    if mask is None:
        return float(lap.var())
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != lap.shape:
        raise ValueError(f"mask shape {mask.shape} does not match the image {lap.shape}")
    if mask.sum() < 2:
        raise ValueError("the mask selects fewer than 2 pixels")
    return float(lap[mask].var())


def nuclear_texture(images: np.ndarray | list[np.ndarray], mpp: float = 0.5) -> float:
    """Chromatin texture: mean over nuclei of the std of haematoxylin inside each nucleus."""
    from scipy import ndimage as ndi

    if isinstance(images, np.ndarray) and images.ndim == 3:
        images = [images]
    stds = []
    for im in images:
        lab = segment_nuclei(im, mpp)
        n = int(lab.max())
        if n:
            h = hed(im)[..., 0]
            stds.extend(np.atleast_1d(ndi.standard_deviation(h, lab, np.arange(1, n + 1))))
    return float(np.mean(stds)) if stds else 0.0


REALISM_FEATURES = (
    "h_mean",
    "h_std",
    "e_mean",
    "e_std",
    "log_h_laplacian_var",
    "nuclei_per_1000um2",
    "nuclear_area_um2",
    "nuclear_h_std",
    "nuclear_solidity",
    "nuclear_eccentricity",
)


def realism_features(rgb: np.ndarray, mpp: float = 0.5) -> np.ndarray:
    """:data:`REALISM_FEATURES` of one patch: stain (H and E mean and std), texture (log
    Laplacian variance of H, mean H std inside nuclei) and nuclear morphology (density, mean
    area, solidity, eccentricity) -> ``(10,)`` float64."""
    from skimage.measure import regionprops

    d = hed(rgb)
    h, e = d[..., 0], d[..., 1]
    lab = segment_nuclei(rgb, mpp)
    props = regionprops(lab, intensity_image=h)
    area_um2 = lab.size * mpp**2
    if props:
        areas = [p.area * mpp**2 for p in props]
        hstd = [float(np.std(p.image_intensity[p.image])) for p in props]
        sol = [p.solidity for p in props]
        ecc = [p.eccentricity for p in props]
        nuc = [np.mean(areas), np.mean(hstd), np.mean(sol), np.mean(ecc)]
    else:
        nuc = [0.0, 0.0, 0.0, 0.0]
    return np.array(
        [
            h.mean(),
            h.std(),
            e.mean(),
            e.std(),
            np.log(h_sharpness(rgb) + 1e-12),
            len(props) / area_um2 * 1000.0,
            *nuc,
        ],
        dtype=np.float64,
    )


def _logistic_fit(x: np.ndarray, y: np.ndarray, l2: float = 1.0, iters: int = 50) -> np.ndarray:
    """L2-regularised logistic regression by Newton's method; returns ``(D + 1,)`` weights."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    reg = np.eye(xb.shape[1]) * l2
    reg[-1, -1] = 0.0
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ w, -30, 30)))
        grad = xb.T @ (p - y) + reg @ w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + reg + 1e-9 * np.eye(len(w))
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties counted half)."""
    from scipy.stats import rankdata

    scores, labels = np.asarray(scores, float), np.asarray(labels).astype(bool)
    n1, n0 = int(labels.sum()), int((~labels).sum())
    if n1 == 0 or n0 == 0:
        raise ValueError("AUC needs both classes")
    r = rankdata(scores)
    return float((r[labels].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def cv_auc(x: np.ndarray, y: np.ndarray, folds: int = 5, seed: int = 0, l2: float = 1.0) -> float:
    """Cross-validated AUC of a standardised logistic regression separating ``y`` = 1 from 0.

    Stratified ``folds``-fold split (seeded); scores of all held-out folds are pooled into one
    AUC. 0.5 = indistinguishable, 1.0 = perfectly separable.
    """
    x, y = np.asarray(x, float), np.asarray(y).astype(int)
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), int)
    for cls in (0, 1):
        idx = rng.permutation(np.nonzero(y == cls)[0])
        fold[idx] = np.arange(len(idx)) % folds
    scores = np.empty(len(y))
    for f in range(folds):
        tr, te = fold != f, fold == f
        mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-9
        w = _logistic_fit((x[tr] - mu) / sd, y[tr], l2=l2)
        scores[te] = np.hstack([(x[te] - mu) / sd, np.ones((te.sum(), 1))]) @ w
    return auc(scores, y)
