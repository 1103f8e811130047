"""The two reference nucleus segmenters of the kit: RGB ``(H, W, 3)`` uint8 at 0.5 um/px ->
labels ``(H, W)`` int32.

- :func:`otsu_watershed`: haematoxylin (``rgb2hed``), Gaussian smoothing, Otsu threshold, small
  objects removed, holes filled, touching nuclei split by a distance-transform watershed; it also
  makes the pseudo-labels the embedded mask-conditioned model is trained on;
- :func:`threshold_components`: deliberately worse: no smoothing, filling or splitting, masks
  dilated by 1 px.
"""

from __future__ import annotations

import numpy as np


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"expected a uint8 RGB image, got dtype {rgb.dtype}")
    return rgb[..., :3]


def hematoxylin(rgb: np.ndarray) -> np.ndarray:
    """Hematoxylin optical density ``(H, W)`` float32 of an RGB uint8 image."""
    from skimage.color import rgb2hed

    return rgb2hed(_check_rgb(rgb)).astype(np.float32)[..., 0]


def otsu_watershed(rgb: np.ndarray, mpp: float = 0.5) -> np.ndarray:
    """Nuclei by Otsu + watershed on the hematoxylin channel; ``(H, W)`` int32 labels.

    At 0.5 um/px (nuclei ~6-20 px across; scaled to ``mpp``): smoothing sigma 1 px, objects
    under 12 px dropped, watershed seeds at least 4 px apart.
    """
    if not mpp > 0:
        raise ValueError(f"mpp must be positive, got {mpp}")
    k = 0.5 / mpp
    sigma_px, min_distance_px, min_area_px = k, max(1, round(4 * k)), max(1, round(12 * k * k))
    from scipy import ndimage as ndi
    from skimage.feature import peak_local_max
    from skimage.filters import gaussian, threshold_otsu
    from skimage.morphology import remove_small_objects
    from skimage.segmentation import watershed

    h = gaussian(hematoxylin(rgb), sigma_px)
    # a few near-black pixels have huge optical densities that would drag Otsu's threshold up
    h = np.minimum(h, np.quantile(h, 0.995))
    if float(h.max() - h.min()) < 1e-6:
        return np.zeros(h.shape, np.int32)
    fg = h > threshold_otsu(h)
    fg = ndi.binary_fill_holes(ndi.binary_opening(fg, iterations=1))
    fg = remove_small_objects(fg, max_size=min_area_px - 1)
    if not fg.any():
        return np.zeros(h.shape, np.int32)
    dist = ndi.distance_transform_edt(fg)
    dist = gaussian(dist, 1.0)
    comp, _ = ndi.label(fg)
    peaks = peak_local_max(dist, min_distance=min_distance_px, labels=comp, exclude_border=False)
    markers = np.zeros(h.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-dist, markers, mask=fg)
    return relabel(remove_small_objects(labels, max_size=min_area_px - 1))


def threshold_components(rgb: np.ndarray) -> np.ndarray:
    """A deliberately worse segmenter: hematoxylin Otsu without smoothing, hole filling or
    splitting (touching nuclei stay merged), objects dilated by 1 px; ``(H, W)`` int32."""
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    h = hematoxylin(rgb)
    if float(h.max() - h.min()) < 1e-6:
        return np.zeros(h.shape, np.int32)
    fg = ndi.binary_dilation(h > threshold_otsu(h), iterations=1)
    labels, _ = ndi.label(fg)
    return labels.astype(np.int32)


def relabel(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 1..N in order, ``(H, W)`` int32."""
    from skimage.segmentation import relabel_sequential

    return relabel_sequential(np.asarray(labels, np.int32))[0]


#: Name -> callable of the shipped methods (``builtin:<name>`` in the runner).
REFERENCE_METHODS = {"otsu_watershed": otsu_watershed, "threshold_components": threshold_components}
