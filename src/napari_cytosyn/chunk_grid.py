"""The chunk grid of a pyramid level, and the one area downsampler between levels.

Every part of the package that cuts an image into square chunks (the slide stores, the
viewport renderer, the napari layers, the exporters) takes its geometry from here:

- :func:`level_shapes`: the shapes of a factor-2 pyramid (``ceil`` rounding);
- :func:`grid_shape`, :func:`chunk_bounds`, :func:`child_chunks`, :func:`tiles`: the chunks of
  a level, their pixel bounds, and the chunks one level down under a chunk;
- :func:`chunk_range` and :func:`pieces`: the chunks under a rectangle, and for each the part
  of the rectangle it covers (where to paste it: ``out[p.out] = chunk[p.chunk]``);
- :func:`downsample_area`, :func:`downsample_known`, :func:`build_parent_chunk`: area averages;
- :func:`thumbnail`: the one thumbnail of a pyramid (slides and TIFF exports).

One border rule everywhere: a ``f x f`` block cut by the image border averages the pixels it
holds (for ``reduce="max"``: the maximum of those pixels), and integer means are rounded half
up. A parent chunk built from its finished children therefore equals the same pixels of a
whole-level downsample, bit for bit, and an exported pyramid equals the slide's own levels.

Plain numpy: imported by every layer, imports nothing of the package.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np


def level_shapes(height: int, width: int, min_px: int) -> list[tuple[int, int]]:
    """Shapes ``(h, w)`` of a factor-2 pyramid, level 0 first, down to the first level whose
    sides are both ``<= min_px`` (a slide passes its chunk size: one chunk holds the top).

    ``ceil`` rounding: level ``k`` has ``ceil(h / 2**k)`` rows, so every level-0 pixel
    contributes to every level.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"slide size must be positive, got {height} x {width} px")
    if min_px < 1:
        raise ValueError(f"the top level's size must be >= 1 px, got {min_px}")
    shapes = [(int(height), int(width))]
    while max(shapes[-1]) > min_px:
        h, w = shapes[-1]
        shapes.append(((h + 1) // 2, (w + 1) // 2))
    return shapes


def grid_shape(shape: Sequence[int], chunk_px: int | Sequence[int]) -> tuple[int, int]:
    """Number of chunks ``(ny, nx)`` covering an ``(h, w)`` level with ``chunk_px`` chunks
    (an int, or ``(ty, tx)`` for rectangular tiles)."""
    ty, tx = _pair(chunk_px)
    return -(-int(shape[0]) // ty), -(-int(shape[1]) // tx)


def chunk_bounds(
    shape: Sequence[int], chunk_px: int, cy: int, cx: int
) -> tuple[int, int, int, int]:
    """Pixel bounds ``(y0, y1, x0, x1)`` of chunk ``(cy, cx)`` of a level, cut at its border."""
    ny, nx = grid_shape(shape, chunk_px)
    if not (0 <= cy < ny and 0 <= cx < nx):
        raise IndexError(f"chunk ({cy}, {cx}) outside the {ny} x {nx} chunk grid")
    y0, x0 = cy * chunk_px, cx * chunk_px
    return y0, min(y0 + chunk_px, int(shape[0])), x0, min(x0 + chunk_px, int(shape[1]))


def tiles(shape: Sequence[int], tile: int | Sequence[int]) -> list[tuple[int, int, int, int]]:
    """Row-major tiles ``(y0, y1, x0, x1)`` covering an ``(h, w)`` level, cut at its border."""
    h, w = int(shape[0]), int(shape[1])
    ty, tx = _pair(tile)
    return [
        (y0, min(y0 + ty, h), x0, min(x0 + tx, w))
        for y0 in range(0, h, ty)
        for x0 in range(0, w, tx)
    ]


def child_chunks(
    child_shape: Sequence[int], chunk_px: int, cy: int, cx: int
) -> list[tuple[int, int]]:
    """Chunks of level ``k - 1`` (shape ``child_shape``) under chunk ``(cy, cx)`` of level ``k``.

    With an even ``chunk_px`` a parent chunk covers exactly a ``2 x 2`` block of child chunks
    (fewer at the border).
    """
    ny, nx = grid_shape(child_shape, chunk_px)
    return [
        (y, x)
        for y in range(2 * cy, min(2 * cy + 2, ny))
        for x in range(2 * cx, min(2 * cx + 2, nx))
    ]


def chunk_range(
    shape: Sequence[int],
    chunk_px: int,
    y0: int,
    x0: int,
    y1: int,
    x1: int,
    margin: int = 0,
) -> tuple[range, range]:
    """Chunk rows and columns under the rectangle ``[y0, y1) x [x0, x1)`` of a level, widened
    by ``margin`` chunks on each side and clipped to the grid (empty for an empty rectangle)."""
    ny, nx = grid_shape(shape, chunk_px)
    y0, x0 = max(0, int(y0)), max(0, int(x0))
    y1, x1 = min(int(shape[0]), int(y1)), min(int(shape[1]), int(x1))
    if y1 <= y0 or x1 <= x0:
        return range(0), range(0)
    c, m = int(chunk_px), int(margin)
    return (
        range(max(0, y0 // c - m), min(ny, -(-y1 // c) + m)),
        range(max(0, x0 // c - m), min(nx, -(-x1 // c) + m)),
    )


@dataclass(frozen=True)
class Piece:
    """Where chunk ``(cy, cx)`` meets a rectangle: ``out`` indexes the rectangle, ``chunk``
    the chunk (cut at the level border); paste with ``out_array[p.out] = chunk[p.chunk]``."""

    cy: int
    cx: int
    out: tuple[slice, slice]
    chunk: tuple[slice, slice]


def pieces(
    shape: Sequence[int] | None, chunk_px: int, y: int, x: int, h: int, w: int
) -> Iterator[Piece]:
    """The chunks of a level under the rectangle ``(y, x, h, w)`` (level px), row-major, each
    with the overlap as slices of the rectangle and of the chunk. The part of the rectangle
    outside the level is in no piece; ``shape=None``: an unbounded plane (lazy mode), whose
    chunk indices may be negative."""
    c = int(chunk_px)
    if shape is None:
        H = W = None
        empty = h <= 0 or w <= 0
        rows = range(0) if empty else range(y // c, -(-(y + h) // c))
        cols = range(0) if empty else range(x // c, -(-(x + w) // c))
    else:
        rows, cols = chunk_range(shape, c, y, x, y + h, x + w)
        H, W = int(shape[0]), int(shape[1])
    for cy in rows:
        by0 = cy * c
        by1 = by0 + c if H is None else min(by0 + c, H)
        ty0, ty1 = max(by0, y), min(by1, y + h)
        for cx in cols:
            bx0 = cx * c
            bx1 = bx0 + c if W is None else min(bx0 + c, W)
            tx0, tx1 = max(bx0, x), min(bx1, x + w)
            yield Piece(
                cy,
                cx,
                (slice(ty0 - y, ty1 - y), slice(tx0 - x, tx1 - x)),
                (slice(ty0 - by0, ty1 - by0), slice(tx0 - bx0, tx1 - bx0)),
            )


def downsample_area(
    image: np.ndarray, factor: int | Sequence[int] = 2, reduce: str = "mean"
) -> np.ndarray:
    """Area-reduce ``image`` ``(h, w[, c])`` by ``factor`` (an int or ``(fy, fx)``).

    Returns ``(ceil(h / fy), ceil(w / fx)[, c])`` of the input dtype. ``reduce="mean"``
    (images): blocks cut by the border average the pixels they hold, integer means rounded half
    up; ``reduce="max"`` (masks, labels): a pixel is set when any pixel of its block is.
    """
    fy, fx = _pair(factor)
    if reduce not in ("mean", "max"):
        raise ValueError(f"reduce must be 'mean' or 'max', got {reduce!r}")
    if fy == 1 and fx == 1:
        return image.copy()
    h, w = image.shape[:2]
    oh, ow = -(-h // fy), -(-w // fx)
    tail = image.shape[2:]
    if reduce == "max":
        # Repeating the border's pixels into the cut blocks leaves their maximum unchanged.
        data = _pad_to(image, oh * fy, ow * fx, mode="edge")
        return data.reshape(oh, fy, ow, fx, *tail).max(axis=(1, 3))
    integer = np.issubdtype(image.dtype, np.integer)
    sums = _pad_to(image, oh * fy, ow * fx).reshape(oh, fy, ow, fx, *tail)
    sums = sums.sum(axis=(1, 3), dtype=np.int64 if integer else np.float64)
    rows = np.minimum(fy, h - fy * np.arange(oh))
    cols = np.minimum(fx, w - fx * np.arange(ow))
    counts = (rows[:, None] * cols[None, :]).reshape(oh, ow, *([1] * len(tail)))
    if integer:
        return ((2 * sums + counts) // (2 * counts)).astype(image.dtype)  # rounded half up
    return (sums / counts).astype(image.dtype)


def downsample_known(
    image: np.ndarray, known: np.ndarray, factor: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Area-average the known pixels of a partly known image by ``factor``.

    ``image`` ``(h, w[, c])`` of an integer dtype, ``known`` ``(h, w)`` bool. Returns the mean of
    each block's known pixels (rounded half up; 0 where none is known) and ``(oh, ow)`` bool,
    True where the block has a known pixel. Where a block is fully known this equals
    :func:`downsample_area`, bit for bit.
    """
    if not np.issubdtype(image.dtype, np.integer):
        raise ValueError(f"downsample_known takes an integer image, got {image.dtype}")
    f = int(factor)
    h, w = image.shape[:2]
    oh, ow = -(-h // f), -(-w // f)
    tail = image.shape[2:]
    if f == 2 and image.dtype == np.uint8:
        return _halve_known_uint8(_pad_to(image, 2 * oh, 2 * ow), _pad_to(known, 2 * oh, 2 * ow))
    weight = known.astype(np.int64)
    weighted = image * weight.reshape(h, w, *([1] * len(tail)))
    sums = _pad_to(weighted, oh * f, ow * f).reshape(oh, f, ow, f, *tail).sum(axis=(1, 3))
    counts = _pad_to(weight, oh * f, ow * f).reshape(oh, f, ow, f).sum(axis=(1, 3))
    safe = np.maximum(counts, 1).reshape(oh, ow, *([1] * len(tail)))
    return ((2 * sums + safe) // (2 * safe)).astype(image.dtype), counts > 0


def _halve_known_uint8(image: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`downsample_known` by 2 of a uint8 image of even sides, in 16-bit integers (four
    pixels sum to at most 1020, doubled plus rounding 2044): the same result, ~5x faster than
    the general int64 path (provisional coarse chunks are built while the view refreshes)."""
    k = known.reshape(known.shape + (1,) * (image.ndim - 2))
    weighted = image.astype(np.uint16)
    weighted *= k
    sums = weighted[0::2, 0::2] + weighted[1::2, 0::2]
    sums += weighted[0::2, 1::2]
    sums += weighted[1::2, 1::2]
    counts = k[0::2, 0::2].astype(np.uint16) + k[1::2, 0::2]
    counts += k[0::2, 1::2]
    counts += k[1::2, 1::2]
    safe = np.maximum(counts, 1)
    sums *= 2
    sums += safe
    sums //= 2 * safe
    any_known = counts > 0
    return sums.astype(np.uint8), any_known.reshape(any_known.shape[:2])


def build_parent_chunk(
    children: dict[tuple[int, int], np.ndarray],
    parent_shape: Sequence[int],
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
    return downsample_area(mosaic, 2)[: y1 - y0, : x1 - x0]


def thumbnail(
    read_region: Callable[[int, int, int, int, int], np.ndarray],
    level_shapes: Sequence[Sequence[int]],
    max_px: int = 1024,
) -> np.ndarray:
    """``(h, w, c)`` thumbnail of a pyramid, longer side ``<= max_px``: the coarsest level at
    least ``max_px`` long, area-reduced by ``f = ceil(side / max_px)``.

    ``read_region(level, y, x, h, w)`` returns in-bounds pixels. The level is read in blocks of
    at most ~4096 x 4096 px (multiples of ``f``, so the result equals one whole-level
    :func:`downsample_area`): memory stays bounded for any slide.
    """
    if max_px < 1:
        raise ValueError(f"max_px must be >= 1, got {max_px}")
    level = max((k for k, s in enumerate(level_shapes) if max(s) >= max_px), default=0)
    h, w = (int(v) for v in level_shapes[level][:2])
    f = -(-max(h, w) // max_px)
    step = max(1, 4096 // f) * f
    rows = [
        np.concatenate(
            [
                downsample_area(read_region(level, y, x, min(step, h - y), min(step, w - x)), f)
                for x in range(0, w, step)
            ],
            axis=1,
        )
        for y in range(0, h, step)
    ]
    return np.ascontiguousarray(np.concatenate(rows, axis=0))


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    fy, fx = (value, value) if isinstance(value, int | np.integer) else value
    fy, fx = int(fy), int(fx)
    if fy < 1 or fx < 1:
        raise ValueError(f"a factor or tile size must be >= 1, got {value!r}")
    return fy, fx


def _pad_to(image: np.ndarray, h: int, w: int, mode: str = "constant") -> np.ndarray:
    ph, pw = h - image.shape[0], w - image.shape[1]
    if not ph and not pw:
        return image
    return np.pad(image, ((0, ph), (0, pw)) + ((0, 0),) * (image.ndim - 2), mode=mode)
