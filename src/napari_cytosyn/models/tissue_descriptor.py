"""A fixed, deterministic descriptor of a patch of real tissue ("tissue like here").

``cytosyn-tiny`` is conditioned on this vector instead of a learned encoder's embedding: no
network, deterministic, readable. For a ``(H, W, 3)`` uint8 patch at 0.5 um/px, :data:`FEATURES`
are: mean haematoxylin and eosin optical densities over tissue (mean RGB < 220); tissue share;
nuclei per 1000 um^2 of tissue and their mean area in um^2
(:func:`napari_cytosyn.quality.segment_nuclei`); share of tissue inside nuclei; chromatin texture
(mean over nuclei of the haematoxylin sd inside each); stroma texture (eosin sd outside nuclei).
The model normalises them with its training crops' mean and sd (``cytosyn_tiny.json``).
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
    lab = segment_nuclei(rgb, mpp, od=d)
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
