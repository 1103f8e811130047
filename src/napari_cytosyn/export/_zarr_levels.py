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
from napari_cytosyn.export._stream import (
    Reader,
    aligned_block_px,
    bounded_map,
    cyx_reader,
    source_reader,
)

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


def reader_from_coarser(
    prev: Reader, prev_shape: Sequence[int], shape: Sequence[int], reduce: str
) -> Reader:
    """Reader of a level made by reducing the level before (``prev``, of ``prev_shape``) with
    ``chunk_grid.downsample_area``; vendor levels round sizes their own way, so blocks are
    cropped or edge-padded to the level."""
    fy, fx = max(1, round(prev_shape[0] / shape[0])), max(1, round(prev_shape[1] / shape[1]))
    ph, pw = int(prev_shape[0]), int(prev_shape[1])

    def read(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        src = prev(y0 * fy, min(y1 * fy, ph), x0 * fx, min(x1 * fx, pw))
        block = chunk_grid.downsample_area(src, (fy, fx), reduce)[: y1 - y0, : x1 - x0]
        short = (y1 - y0 - block.shape[0], x1 - x0 - block.shape[1])
        if any(short):
            block = np.pad(block, ((0, short[0]), (0, short[1]), (0, 0)), mode="edge")
        return block

    return read


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
) -> list[Reader]:
    """Readers of levels ``1..`` of ``shapes``, built from ``level0`` into a scratch zarr at
    ``path``, each reduced from the one before (read back), never from a full-resolution copy
    in memory: box mean for images, max for a mask (``mask_value`` where ``level0`` is set)."""
    import zarr

    root = zarr.open_group(str(path), mode="w", zarr_format=3)
    channels = 1 if mask_value is not None else 3
    reduce = "max" if mask_value is not None else "mean"
    prev = source_reader(level0, mask_value)
    built: list[Reader] = []
    for i, shape in enumerate(shapes[1:], start=1):
        dst = create_level_array(root, str(i), (channels, *shape), (channels, tile_px, tile_px), 3)
        read = reader_from_coarser(prev, shapes[i - 1], shape, reduce)
        write_level(dst, read, (tile_px, tile_px), tile_px, workers, cancel, lambda n: None)
        prev = cyx_reader(dst)
        built.append(prev)
    return built
