"""A fixed, deterministic descriptor of a patch of real tissue ("tissue like here").

The embedded model ``cytosyn-tiny`` is conditioned on this vector instead of a learned encoder's
embedding: it is cheap (no network), deterministic and readable. For a ``(H, W, 3)`` uint8 patch
at 0.5 um/px it gives :data:`FEATURES`:

- ``h_mean``, ``e_mean``: mean haematoxylin and eosin optical densities (``rgb2hed``) over the
  tissue pixels (pixels whose mean RGB is below 220);
- ``tissue_frac``: share of tissue pixels;
- ``density``: nuclei per 1000 um^2 of tissue (classical segmentation of
  :func:`napari_cytosyn.quality.segment_nuclei`);
- ``area``: mean nuclear area in um^2 (0 without nuclei);
- ``nuc_frac``: share of tissue pixels inside nuclei;
- ``chromatin``: mean over nuclei of the standard deviation of haematoxylin inside each nucleus
  (chromatin texture);
- ``stroma_tex``: standard deviation of eosin over tissue pixels outside nuclei (fibre texture).

:func:`describe` returns the raw values; the model normalises them with the per-feature mean and
standard deviation of its training crops (stored in ``cytosyn_tiny.json``).
"""

from __future__ import annotations

import numpy as np

FEATURES = (
    "h_mean",
    "e_mean",
    "tissue_frac",
    "density",
    "area",
    "nuc_frac",
    "chromatin",
    "stroma_tex",
)
TISSUE_RGB_MAX = 220.0


def describe(rgb: np.ndarray, mpp: float = 0.5) -> np.ndarray:
    """Raw descriptor ``(len(FEATURES),)`` float64 of an ``(H, W, 3)`` uint8 patch at ``mpp``."""
    from scipy import ndimage as ndi

    from ..quality import _check_rgb, hed, segment_nuclei

    rgb = _check_rgb(rgb)
    if mpp <= 0:
        raise ValueError(f"mpp must be positive microns per pixel, got {mpp}")
    d = hed(rgb)
    h, e = d[..., 0], d[..., 1]
    tissue = rgb.mean(-1) < TISSUE_RGB_MAX
    n_tissue = int(tissue.sum())
    lab = segment_nuclei(rgb, mpp)
    n = int(lab.max())
    nuc = lab > 0
    tissue_um2 = max(n_tissue, 1) * mpp**2
    if n:
        idx = np.arange(1, n + 1)
        chrom = float(np.mean(ndi.standard_deviation(h, lab, idx)))
        area = float(nuc.sum()) * mpp**2 / n
    else:
        chrom, area = 0.0, 0.0
    stroma = tissue & ~nuc
    return np.array(
        [
            float(h[tissue].mean()) if n_tissue else 0.0,
            float(e[tissue].mean()) if n_tissue else 0.0,
            n_tissue / tissue.size,
            n / tissue_um2 * 1000.0,
            area,
            float((nuc & tissue).sum()) / max(n_tissue, 1),
            chrom,
            float(e[stroma].std()) if stroma.sum() > 1 else 0.0,
        ],
        dtype=np.float64,
    )


def describe_batch(rgb: np.ndarray, mpp: float = 0.5) -> np.ndarray:
    """:func:`describe` over ``(B, H, W, 3)`` uint8 patches -> ``(B, len(FEATURES))``."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 4:
        raise ValueError(f"expected (B, H, W, 3) uint8 patches, got shape {rgb.shape}")
    return np.stack([describe(p, mpp) for p in rgb])
