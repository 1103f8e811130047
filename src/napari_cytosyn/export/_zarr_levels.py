"""Pyramid levels written through zarr's API, shared by the exporters: level arrays with
NGFF chunk keys (Blosc-zstd, shards for zarr v3), block readers from a source or from the level
before (``chunk_grid.downsample_area``), and the scratch pyramid the TIFF writers build when
given a single level.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_cytosyn import chunk_grid
from napari_cytosyn.export._stream import aligned_block_px, bounded_map, read_block

# Blosc-zstd level 1: on H&E tiles levels 3-5 cost 6-10x the CPU for < 3 % smaller chunks.
BLOSC = {"cname": "zstd", "clevel": 1}
#: Shards hold this many chunks per side when sharding is on (NGFF 0.5 only).
SHARD_CHUNKS = 4
#: ``shards="auto"`` shards arrays with more chunks than this: one file per 16 chunks matters
#: on file systems and object stores once a level has many thousands of chunks.
AUTO_SHARD_MIN_CHUNKS = 256


def compressor(zarr_format: int) -> Any:
    if zarr_format == 2:
        from numcodecs import Blosc

        return Blosc(**BLOSC, shuffle=Blosc.SHUFFLE)
    from zarr.codecs import BloscCodec

    return BloscCodec(**BLOSC, shuffle="shuffle")


def shard_px_for(
    shape_hw: Sequence[int], chunk_px: int, zarr_format: int, shards: str | int | None
) -> int | None:
    """Shard edge in px of an array, or ``None`` (not sharded).

    ``shards``: ``"auto"`` (zarr v3 arrays with more than ``AUTO_SHARD_MIN_CHUNKS`` chunks get
    shards of ``SHARD_CHUNKS`` x ``SHARD_CHUNKS`` chunks), ``None``/``0`` (never) or a shard edge
    in px (a multiple of ``chunk_px``; zarr v3 only).
    """
    if not shards:
        return None
    if zarr_format == 2:
        if shards == "auto":
            return None
        raise ValueError("sharding needs NGFF 0.5 (zarr v3); pass version='0.5' or no shards")
    if shards == "auto":
        n = math.ceil(shape_hw[0] / chunk_px) * math.ceil(shape_hw[1] / chunk_px)
        return SHARD_CHUNKS * chunk_px if n > AUTO_SHARD_MIN_CHUNKS else None
    shard = int(shards)
    if shard <= 0 or shard % chunk_px:
        raise ValueError(
            f"shard edge must be a positive multiple of chunk_px {chunk_px}, got {shards}"
        )
    return shard


def create_level_array(
    group: Any,
    path: str,
    shape: Sequence[int],
    chunks: Sequence[int],
    zarr_format: int,
    shard_px: int | None = None,
) -> Any:
    """A uint8 (c, y, x) array in ``group`` with NGFF-conformant chunk keys for the format."""
    kwargs: dict[str, Any] = {
        "name": path,
        "shape": tuple(int(s) for s in shape),
        "chunks": tuple(int(c) for c in chunks),
        "dtype": "uint8",
        "fill_value": 0,
        "compressors": [compressor(zarr_format)],
    }
    if zarr_format == 2:
        kwargs["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
    else:
        kwargs["dimension_names"] = ("c", "y", "x")
        if shard_px:
            kwargs["shards"] = (int(chunks[0]), shard_px, shard_px)
    return group.create_array(**kwargs)


def chunk_count(shapes: Sequence[Sequence[int]], chunk_px: int) -> int:
    return sum(math.ceil(h / chunk_px) * math.ceil(w / chunk_px) for h, w in shapes)


def reader_from_source(level: Any) -> Callable[[int, int, int, int], np.ndarray]:
    def read(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        block = read_block(level, y0, y1, x0, x1)
        return block if block.ndim == 3 else block[..., None]

    return read


def reader_from_coarser(
    prev: Any, shape: Sequence[int], factor: tuple[int, int], reduce: str
) -> Callable[[int, int, int, int], np.ndarray]:
    """Read a block of a level by reducing the (already written, (c, y, x)) previous level."""
    fy, fx = factor
    ph, pw = prev.shape[1], prev.shape[2]

    def read(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        src = np.asarray(prev[:, y0 * fy : min(y1 * fy, ph), x0 * fx : min(x1 * fx, pw)])
        out = chunk_grid.downsample_area(np.moveaxis(src, 0, -1), (fy, fx), reduce)
        return fit_block(out, y1 - y0, x1 - x0)

    return read


def fit_block(block: np.ndarray, h: int, w: int) -> np.ndarray:
    """Crop or edge-pad ``block`` to ``(h, w)`` (vendor levels round sizes their own way)."""
    block = block[:h, :w]
    if block.shape[0] < h or block.shape[1] < w:
        pad = [(0, h - block.shape[0]), (0, w - block.shape[1])] + [(0, 0)] * (block.ndim - 2)
        block = np.pad(block, pad, mode="edge")
    return block


def level_factor(big: Sequence[int], small: Sequence[int]) -> tuple[int, int]:
    return max(1, round(big[0] / small[0])), max(1, round(big[1] / small[1]))


def write_level(
    dst: Any,
    read: Callable[[int, int, int, int], np.ndarray],
    block_px: tuple[int, int],
    chunk_px: int,
    workers: int,
    cancel: Any,
    tick: Callable[[int], None],
) -> None:
    """Fill ``dst`` block by block through zarr's API (its own codec, chunk keys and shards).

    Blocks are whole chunks (whole shards when sharded), so no chunk or shard is written by two
    threads and zarr never reads back what it writes.
    """
    h, w = dst.shape[1], dst.shape[2]

    def job(tile: tuple[int, int, int, int]) -> int:
        y0, y1, x0, x1 = tile
        data = read(y0, y1, x0, x1)
        dst[:, y0:y1, x0:x1] = np.moveaxis(data.astype(np.uint8, copy=False), -1, 0)
        return math.ceil((y1 - y0) / chunk_px) * math.ceil((x1 - x0) / chunk_px)

    for n in bounded_map(job, chunk_grid.tiles((h, w), block_px), workers, cancel=cancel):
        tick(n)


def block_px_for(source: Any, chunk_px: int, shard_px: int | None) -> tuple[int, int]:
    if shard_px:
        return shard_px, shard_px
    return aligned_block_px(source, chunk_px) if source is not None else (chunk_px, chunk_px)


def build_scratch_pyramid(
    level0: Any,
    shapes: Sequence[Sequence[int]],
    path: Path,
    mask_value: int | None,
    tile_px: int,
    workers: int,
    cancel: Any,
) -> list[Any]:
    """Levels ``1..`` of ``shapes`` built from ``level0`` into a scratch zarr at ``path``.

    Each level is reduced from the one before (read back from the scratch), never from a
    full-resolution copy in memory: box mean for images, max for a mask (``mask_value`` set,
    pixels ``mask_value`` where ``level0`` is non-zero). Returns ``(c, y, x)`` zarr arrays.
    """
    import zarr

    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    channels = 1 if mask_value is not None else 3
    prev: Any = SourceAsCYX(level0, mask_value)
    built: list[Any] = []
    for i, shape in enumerate(shapes[1:], start=1):
        dst = create_level_array(root, str(i), (channels, *shape), (channels, tile_px, tile_px), 3)
        factor = level_factor(shapes[i - 1], shape)
        reduce = "max" if mask_value is not None else "mean"
        read = reader_from_coarser(prev, shape, factor, reduce)
        write_level(dst, read, (tile_px, tile_px), tile_px, workers, cancel, lambda n: None)
        built.append(dst)
        prev = dst
    return built


class SourceAsCYX:
    """A (y, x, c) source (or a (y, x) mask) seen as (c, y, x) for level reduction."""

    def __init__(self, level: Any, mask_value: int | None):
        self.level, self.mask_value = level, mask_value
        h, w = level.shape[:2]
        self.shape = (1 if mask_value is not None else 3, h, w)

    def __getitem__(self, key: tuple[slice, slice, slice]) -> np.ndarray:
        _, ys, xs = key
        block = read_block(self.level, ys.start, ys.stop, xs.start, xs.stop)
        if self.mask_value is not None:
            block = ((block != 0) * np.uint8(self.mask_value)).astype(np.uint8)[..., None]
        return np.moveaxis(block, -1, 0)
