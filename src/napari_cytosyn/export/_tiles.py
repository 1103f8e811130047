"""Tile streams shared by the TIFF writers (OME-TIFF and the SVS-layout generic TIFF).

A level is written from a ``Reader`` (``read(y0, y1, x0, x1) -> (h, w, samples) uint8``); the
tiles of a level are read on a small thread pool with a bounded look-ahead and handed to
tifffile in row-major order, which compresses them on its own pool. A single-level source gets
its coarser levels built into a scratch zarr next to the output first, because TIFF levels are
written one after the other.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_cytosyn import chunk_grid
from napari_cytosyn.export._stream import (
    ProgressCounter,
    ProgressFn,
    Reader,
    bounded_map,
    default_workers,
    pyramid_shapes,
    source_chunk_hw,
    source_reader,
    validate_levels,
)
from napari_cytosyn.pixel_size import PixelSize

#: Compression names accepted by the TIFF writers -> tifffile's names (``None``: uncompressed).
COMPRESSIONS = {"jpeg": "jpeg", "deflate": "zlib", "zlib": "zlib", "lzw": "lzw", "none": None}


def check_compression(compression: str, quality: int) -> str | None:
    """tifffile's name for ``compression``; raises ``ValueError`` naming the accepted ones."""
    key = str(compression).lower()
    if key not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {sorted(COMPRESSIONS)}, got {compression!r}")
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    return COMPRESSIONS[key]


def tiff_options(codec: str | None, quality: int) -> dict[str, Any]:
    """tifffile ``compression``/``compressionargs`` for a codec name from ``check_compression``."""
    return {
        "compression": codec,
        "compressionargs": {"level": int(quality)} if codec == "jpeg" else None,
    }


@dataclass
class TiffPlan:
    """What a TIFF writer writes: tifffile codec, tile edge, level shapes, pixel size, threads
    and the progress counter (tiles, twice with a mask)."""

    codec: str | None
    tile_px: int
    shapes: list[tuple[int, ...]]
    mpp: PixelSize | None
    workers: int
    tick: ProgressCounter


def tiff_plan(
    levels: Sequence[Any],
    mask_levels: Sequence[Any] | None,
    compression: str | None,
    quality: int,
    tile_px: int,
    mpp: Any,
    workers: int | None,
    progress: ProgressFn | None,
) -> TiffPlan:
    """Check a TIFF writer's arguments and plan the pyramid."""
    validate_levels(levels)
    # by default lossless with a mask: the real tissue of an inpainted slide must stay exact
    default = "deflate" if mask_levels is not None else "jpeg"
    codec = check_compression(compression or default, quality)
    tile_px = tile_px_for(levels[0], int(tile_px))
    if tile_px % 16:
        raise ValueError(f"TIFF tiles must be a multiple of 16 px, got {tile_px}")
    shapes = pyramid_shapes(levels, tile_px, mask_levels)
    n_tiles = sum(len(chunk_grid.tiles(s, (tile_px, tile_px))) for s in shapes)
    tick = ProgressCounter(progress, n_tiles * (2 if mask_levels is not None else 1))
    return TiffPlan(codec, tile_px, shapes, PixelSize.from_any(mpp), default_workers(workers), tick)


@contextlib.contextmanager
def scratch_dir(path: str | os.PathLike, tmp: Path) -> Iterator[Path]:
    """A folder beside the temporary output ``tmp`` for levels built on the way; removed after."""
    scratch = Path(tempfile.mkdtemp(prefix=f".{Path(path).name}.scratch-", dir=tmp.parent))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def tile_px_for(level: Any, default: int) -> int:
    """The source's chunk edge when it is a usable TIFF tile (multiple of 16, 256-1024 px)."""
    chunk = source_chunk_hw(level)
    if (
        chunk is not None
        and chunk[0] == chunk[1]
        and chunk[0] % 16 == 0
        and 256 <= chunk[0] <= 1024
    ):
        return chunk[0]
    return default


def tiles(
    read: Reader,
    shape: Sequence[int],
    tile_px: int,
    workers: int,
    cancel: Any,
    tick: Callable[[int], None],
) -> Iterator[np.ndarray]:
    """Row-major tiles of one level, each padded to ``(tile_px, tile_px[, samples])``."""

    def job(t: tuple[int, int, int, int]) -> np.ndarray:
        y0, y1, x0, x1 = t
        data = read(y0, y1, x0, x1)
        if data.shape[0] != tile_px or data.shape[1] != tile_px:
            full = np.zeros((tile_px, tile_px, data.shape[2]), np.uint8)
            full[: data.shape[0], : data.shape[1]] = data
            data = full
        if data.shape[2] == 1:  # single-sample pages take (tile, tile) tiles
            data = data[..., 0]
        return np.ascontiguousarray(data, dtype=np.uint8)

    for tile in bounded_map(
        job, chunk_grid.tiles(shape, (tile_px, tile_px)), workers, cancel=cancel
    ):
        tick(1)
        yield tile


def write_page(
    tif: Any,
    read: Reader,
    shape: Sequence[int],
    samples: int,
    tile_px: int,
    workers: int,
    cancel: Any,
    tick: Callable[[int], None],
    **kwargs: Any,
) -> None:
    """One tiled page of a level, its tiles streamed from ``read`` (``kwargs``: tifffile's)."""
    tif.write(
        tiles(read, shape, tile_px, workers, cancel, tick),
        shape=(*shape, samples) if samples > 1 else tuple(shape),
        dtype=np.uint8,
        tile=(tile_px, tile_px),
        maxworkers=workers,
        **kwargs,
    )


def level_readers(
    levels: Sequence[Any],
    shapes: Sequence[Sequence[int]],
    scratch: Path,
    mask_value: int | None,
    tile_px: int,
    workers: int,
    cancel: Any,
) -> list[Reader]:
    """A reader per output level: the given levels, or level 0 plus levels built in ``scratch``."""
    if len(levels) == len(shapes):
        return [source_reader(lv, mask_value) for lv in levels]
    from napari_cytosyn.export._zarr_levels import build_scratch_pyramid

    built = build_scratch_pyramid(
        levels[0], shapes, scratch / ("mask" if mask_value is not None else "image"),
        mask_value, tile_px, workers, cancel,
    )  # fmt: skip
    return [source_reader(levels[0], mask_value), *built]


def resolution_kwargs(
    mpp_xy: PixelSize | None, shape0: Sequence[int], shape: Sequence[int]
) -> dict[str, Any]:
    """tifffile's ``resolution`` (pixels per centimetre of this level) and unit, or nothing."""
    if mpp_xy is None:
        return {}
    dx, dy = shape0[1] / shape[1], shape0[0] / shape[0]
    return {
        "resolution": (1e4 / (mpp_xy.x * dx), 1e4 / (mpp_xy.y * dy)),
        "resolutionunit": "CENTIMETER",
    }
