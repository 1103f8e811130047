"""Seam metric shared by tests and benchmarks (numpy only).

There is no standard one: the mean absolute intensity step across the window lattice lines,
divided by the same across random non-lattice lines (1.0 = no seam). The random lines share the
lattice lines' residues modulo ``grid_px`` (the latent factor), so a decoder's own 8-px periodic
structure does not bias the ratio.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def _steps_at(img: np.ndarray, lines: np.ndarray, axis: int) -> np.ndarray:
    """Mean |img[line] - img[line - 1]| along ``axis`` for each line index (> 0)."""
    a = np.take(img, lines, axis=axis)
    b = np.take(img, lines - 1, axis=axis)
    other = tuple(i for i in range(img.ndim) if i != axis)
    return np.abs(a - b).mean(axis=other)


def lattice_lines(size_px: int, period_px: int, offset_px: int = 0) -> np.ndarray:
    """Line positions ``offset + k * period`` strictly inside ``(0, size_px)``."""
    start = offset_px % period_px
    lines = np.arange(start, size_px, period_px)
    return lines[(lines > 0) & (lines < size_px)]


def seam_score(
    image: np.ndarray,
    lines_y: Iterable[int],
    lines_x: Iterable[int],
    grid_px: int = 8,
    n_random: int = 256,
    seed: int = 0,
) -> float:
    """Seam score of ``image`` ``(H, W)`` or ``(H, W, C)`` for the given lattice lines.

    ``lines_y`` are row indices r where a seam would lie between rows r-1 and r (same for
    columns). Returns mean step across those lines / mean step across random other lines on the
    same ``grid_px`` residues. 1.0 means the lattice lines look like anywhere else.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 2:
        img = img[..., None]
    h, w = img.shape[:2]
    ly = np.unique(np.asarray(list(lines_y), dtype=np.int64))
    lx = np.unique(np.asarray(list(lines_x), dtype=np.int64))
    ly = ly[(ly > 0) & (ly < h)]
    lx = lx[(lx > 0) & (lx < w)]
    if ly.size + lx.size == 0:
        raise ValueError("seam_score needs at least one lattice line inside the image")
    rng = np.random.default_rng(seed)
    on = []
    off = []
    for lines, axis, size in ((ly, 0, h), (lx, 1, w)):
        if lines.size == 0:
            continue
        residues = np.unique(lines % grid_px)
        cand = np.arange(1, size)
        cand = cand[np.isin(cand % grid_px, residues) & ~np.isin(cand, lines)]
        if cand.size == 0:
            raise ValueError("image too small to draw random comparison lines")
        pick = rng.choice(cand, size=min(n_random, cand.size), replace=False)
        on.append(_steps_at(img, lines, axis))
        off.append(_steps_at(img, np.sort(pick), axis))
    return float(np.concatenate(on).mean() / np.concatenate(off).mean())
