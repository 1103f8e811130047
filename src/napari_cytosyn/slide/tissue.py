"""Tissue masks: where on a slide there is tissue, from a thumbnail.

H&E tissue is darker and more saturated than the glass around it; Otsu's threshold on a blend of
darkness and saturation separates the two on most slides, and a small morphological clean-up
removes dust and fills holes in fatty areas.
"""

from __future__ import annotations

import numpy as np


def otsu_tissue_mask(thumbnail: np.ndarray, min_object_frac: float = 0.001) -> np.ndarray:
    """``(h, w)`` bool tissue mask of an ``(h, w, 3)`` uint8 thumbnail by Otsu's threshold;
    islands and holes under ``min_object_frac`` of it are removed. Blank glass: all False."""
    from skimage.color import rgb2hsv
    from skimage.filters import threshold_otsu
    from skimage.morphology import remove_small_holes, remove_small_objects

    if thumbnail.ndim != 3 or thumbnail.shape[2] < 3 or thumbnail.dtype != np.uint8:
        raise ValueError(
            f"thumbnail must be (h, w, 3) uint8 RGB, got {thumbnail.shape} {thumbnail.dtype}"
        )
    rgb = thumbnail[..., :3]
    darkness = 1.0 - rgb.astype(np.float64).mean(axis=2) / 255.0
    saturation = rgb2hsv(rgb)[..., 1]
    score = 0.5 * darkness + 0.5 * saturation
    if float(score.max() - score.min()) < 0.02:
        return np.zeros(rgb.shape[:2], dtype=bool)
    mask = score > threshold_otsu(score)
    min_px = max(1, int(min_object_frac * mask.size))
    mask = remove_small_objects(mask, max_size=min_px)
    return remove_small_holes(mask, max_size=min_px)
