"""Pyramid geometry and area-average downsampling.

A level ``k`` pixel is the mean of the ``2 x 2`` block of level ``k - 1`` pixels it covers; at an
odd edge the block is cut by the border and the mean is taken over the pixels that exist, so a
parent chunk built from its (finished) children equals the same pixels of a whole-level
downsample, bit for bit. The same rule with an integer factor ``d`` (:func:`downsample_area`)
serves real-slide pyramids whose levels are 4x or 16x apart.
"""

from __future__ import annotations

import math

import numpy as np


def level_shapes(height: int, width: int, chunk_px: int) -> list[tuple[int, int]]:
    """Shapes ``(h, w)`` of a factor-2 pyramid, level 0 first, until one chunk holds a level.

    ``ceil`` rounding: level ``k`` has ``ceil(h / 2**k)`` rows, so every level-0 pixel
    contributes to every level.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"slide size must be positive, got {height} x {width} px")
    shapes = [(int(height), int(width))]
    while max(shapes[-1]) > chunk_px:
        h, w = shapes[-1]
        shapes.append(((h + 1) // 2, (w + 1) // 2))
    return shapes


def chunk_grid(shape: tuple[int, int], chunk_px: int) -> tuple[int, int]:
    """Number of chunks ``(ny, nx)`` covering an ``(h, w)`` level."""
    return math.ceil(shape[0] / chunk_px), math.ceil(shape[1] / chunk_px)


def chunk_bounds(
    shape: tuple[int, int], chunk_px: int, cy: int, cx: int
) -> tuple[int, int, int, int]:
    """Pixel bounds ``(y0, y1, x0, x1)`` of chunk ``(cy, cx)`` of a level, cut at its border."""
    ny, nx = chunk_grid(shape, chunk_px)
    if not (0 <= cy < ny and 0 <= cx < nx):
        raise IndexError(f"chunk ({cy}, {cx}) outside the {ny} x {nx} chunk grid")
    y0, x0 = cy * chunk_px, cx * chunk_px
    return y0, min(y0 + chunk_px, shape[0]), x0, min(x0 + chunk_px, shape[1])


def child_chunks(
    child_shape: tuple[int, int], chunk_px: int, cy: int, cx: int
) -> list[tuple[int, int]]:
    """Chunks of level ``k - 1`` (shape ``child_shape``) under chunk ``(cy, cx)`` of level ``k``.

    With an even ``chunk_px`` a parent chunk covers exactly a ``2 x 2`` block of child chunks
    (fewer at the border).
    """
    ny, nx = chunk_grid(child_shape, chunk_px)
    return [
        (y, x)
        for y in range(2 * cy, min(2 * cy + 2, ny))
        for x in range(2 * cx, min(2 * cx + 2, nx))
    ]


def downsample_area(image: np.ndarray, factor: int) -> np.ndarray:
    """Area-average ``image`` ``(h, w[, c])`` by an integer ``factor``.

    Returns ``(ceil(h / factor), ceil(w / factor)[, c])`` of the input dtype. Blocks cut by the
    border average the pixels they hold; integer results are rounded half up.
    """
    if factor < 1:
        raise ValueError(f"downsample factor must be >= 1, got {factor}")
    if factor == 1:
        return image.copy()
    h, w = image.shape[:2]
    oh, ow = -(-h // factor), -(-w // factor)
    pad = ((0, oh * factor - h), (0, ow * factor - w)) + ((0, 0),) * (image.ndim - 2)
    data = np.pad(image.astype(np.float64), pad)
    ones = np.pad(np.ones((h, w)), pad[:2])
    tail = image.shape[2:]
    sums = data.reshape(oh, factor, ow, factor, *tail).sum(axis=(1, 3))
    counts = ones.reshape(oh, factor, ow, factor).sum(axis=(1, 3))
    mean = sums / counts.reshape(oh, ow, *([1] * len(tail)))
    if np.issubdtype(image.dtype, np.integer):
        return np.floor(mean + 0.5).astype(image.dtype)
    return mean.astype(image.dtype)


def downsample_2x(image: np.ndarray) -> np.ndarray:
    """Area-average ``(h, w[, c])`` by 2: the rule that links adjacent pyramid levels."""
    return downsample_area(image, 2)


def build_parent_chunk(
    children: dict[tuple[int, int], np.ndarray],
    parent_shape: tuple[int, int],
    chunk_px: int,
    cy: int,
    cx: int,
) -> np.ndarray:
    """Level ``k`` chunk ``(cy, cx)`` from its level ``k - 1`` children.

    ``children`` maps each child chunk index (as from :func:`child_chunks`) to its pixels
    ``(h, w, c)`` uint8, cut at the level border. Returns ``(h, w, c)`` uint8 cut at the parent
    level border.
    """
    if chunk_px % 2:
        raise ValueError(f"chunk_px must be even for a factor-2 pyramid, got {chunk_px}")
    y0, y1, x0, x1 = chunk_bounds(parent_shape, chunk_px, cy, cx)
    first = next(iter(children.values()))
    rows = {y for y, _ in children}
    cols = {x for _, x in children}
    height = sum(children[(y, min(cols))].shape[0] for y in sorted(rows))
    width = sum(children[(min(rows), x)].shape[1] for x in sorted(cols))
    mosaic = np.empty((height, width, *first.shape[2:]), dtype=first.dtype)
    for (y, x), child in children.items():
        oy, ox = (y - 2 * cy) * chunk_px, (x - 2 * cx) * chunk_px
        mosaic[oy : oy + child.shape[0], ox : ox + child.shape[1]] = child
    out = downsample_2x(mosaic)
    return out[: y1 - y0, : x1 - x0]
