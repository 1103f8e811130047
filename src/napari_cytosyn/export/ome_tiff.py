"""Pyramidal OME-TIFF writer (tifffile): tiled, SubIFD levels, JPEG or lossless, streamed.

Layout (what QuPath, OMERO, Bio-Formats and tifffile expect of a pyramidal OME-TIFF):

- series 0, the RGB image: level 0 in the main IFD, coarser levels in its SubIFDs
  (``NewSubfileType = 1``); OME-XML ``PhysicalSizeX/Y`` in µm and TIFF resolution tags per level;
  the provenance JSON in the OME ``Image/Description``.
- series 1 (only for composites), ``synthetic mask``: uint8 (1 = synthetic), same pyramid,
  always deflate-compressed.

Tiles are produced by a generator that reads the source blocks on a small thread pool (bounded
look-ahead) and tifffile compresses them on its own thread pool, so memory does not grow with
the slide. A single-level source gets its coarser levels built into a scratch zarr first (from the
level above, one pass each), because TIFF levels must be written one after the other.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_cytosyn.export._stream import (
    ProgressFn,
    atomic_output,
    bounded_map,
    pyramid_shapes,
    read_block,
    source_chunk_hw,
    tile_grid,
    validate_levels,
    validate_masks,
)
from napari_cytosyn.export.ome_zarr import (
    _level_factor,
    _reader_from_coarser,
    _write_level,
    create_level_array,
    normalise_mpp,
)

COMPRESSIONS = {"jpeg": "jpeg", "deflate": "zlib", "zlib": "zlib", "lzw": "lzw", "none": None}
Reader = Callable[[int, int, int, int], np.ndarray]


def _tile_px_for(level: Any, default: int) -> int:
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


def _tiles(
    read: Reader,
    shape: Sequence[int],
    tile_px: int,
    workers: int,
    cancel: Any,
    tick: Callable[[int], None],
) -> Iterator[np.ndarray]:
    """Row-major tiles of one level, each padded to ``(tile_px, tile_px, samples)``."""

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

    for tile in bounded_map(job, tile_grid(shape, (tile_px, tile_px)), workers, cancel=cancel):
        tick(1)
        yield tile


def _source_reader(level: Any, mask: bool = False) -> Reader:
    def read(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        block = read_block(level, y0, y1, x0, x1)
        if mask:
            return (block != 0).astype(np.uint8)[..., None]
        return block

    return read


def _scratch_reader(arr: Any) -> Reader:
    def read(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return np.moveaxis(np.asarray(arr[:, y0:y1, x0:x1]), 0, -1)

    return read


class _SourceAsCYX:
    """A (y, x, c) source seen as (c, y, x), so the zarr writer's coarsening can read it."""

    def __init__(self, level: Any, mask: bool):
        self.level, self.mask = level, mask
        h, w = level.shape[:2]
        self.shape = (1 if mask else 3, h, w)

    def __getitem__(self, key: tuple[slice, slice, slice]) -> np.ndarray:
        _, ys, xs = key
        block = read_block(self.level, ys.start, ys.stop, xs.start, xs.stop)
        if self.mask:
            block = (block != 0).astype(np.uint8)[..., None]
        return np.moveaxis(block, -1, 0)


def _build_scratch_levels(
    source: Any,
    shapes: Sequence[Sequence[int]],
    scratch: Path,
    mask: bool,
    tile_px: int,
    workers: int,
    cancel: Any,
) -> list[Reader]:
    """Readers for levels ``1..`` built into a scratch zarr from ``source`` level 0."""
    import zarr

    root = zarr.open_group(str(scratch / ("mask" if mask else "image")), mode="w", zarr_format=3)
    channels = 1 if mask else 3
    prev: Any = _SourceAsCYX(source, mask)
    readers: list[Reader] = []
    for i, shape in enumerate(shapes[1:], start=1):
        dst = create_level_array(root, str(i), (channels, *shape), (channels, tile_px, tile_px), 3)
        factor = _level_factor(shapes[i - 1], shape)
        read = _reader_from_coarser(prev, shape, factor, "max" if mask else "mean")
        _write_level(dst, read, (tile_px, tile_px), tile_px, workers, cancel, lambda n: None)
        readers.append(_scratch_reader(dst))
        prev = dst
    return readers


def write_ome_tiff(
    path: str | os.PathLike,
    levels: Sequence[Any],
    *,
    mpp: float | Sequence[float] | None = None,
    mask_levels: Sequence[Any] | None = None,
    provenance: dict[str, Any] | None = None,
    name: str | None = None,
    compression: str = "jpeg",
    quality: int = 90,
    tile_px: int = 512,
    min_level_px: int | None = None,
    overwrite: bool = False,
    workers: int | None = None,
    progress: ProgressFn | None = None,
    cancel: Any = None,
) -> Path:
    """Write an RGB pyramid (and optional synthetic mask) as a tiled pyramidal OME-TIFF.

    Parameters
    ----------
    path: output file, conventionally ``*.ome.tif``; written to a temporary sibling and renamed
        at the end; an existing file is refused unless ``overwrite``.
    levels: the pyramid, finest first, ``(y, x, 3)`` uint8 arrays (dask, zarr, numpy). With one
        level, 2x levels are built (box mean) down to ``min_level_px`` (default ``tile_px``).
    mpp: microns per pixel of level 0 (``x_um`` or ``(x_um, y_um)``); written as OME
        ``PhysicalSizeX/Y`` (µm) and as TIFF resolution (pixels per cm) on every level.
    mask_levels: ``(y, x)`` arrays, non-zero = synthetic; one per level or only the finest.
    compression: ``"jpeg"`` (lossy, ``quality`` 1-100), ``"deflate"``/``"zlib"`` or ``"lzw"``
        (lossless) or ``"none"``.
    tile_px: TIFF tile edge (multiple of 16); a source chunked in square 256-1024 px chunks that
        are multiples of 16 is tiled by its own chunk size so each chunk is read once.
    progress: ``progress(done, total)`` in tiles; ``cancel``: ``.is_set()`` aborts (raising
        ``Cancelled``), leaving no output.

    Returns the final path.
    """
    import tifffile

    validate_levels(levels)
    key = compression.lower()
    if key not in COMPRESSIONS:
        raise ValueError(f"compression must be one of {sorted(COMPRESSIONS)}, got {compression!r}")
    codec = COMPRESSIONS[key]
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    mpp_xy = normalise_mpp(mpp)
    tile_px = _tile_px_for(levels[0], int(tile_px))
    if tile_px % 16:
        raise ValueError(f"TIFF tiles must be a multiple of 16 px, got {tile_px}")
    given = [tuple(int(s) for s in lv.shape[:2]) for lv in levels]
    shapes = given if len(given) > 1 else pyramid_shapes(given[0], min_level_px or tile_px)
    if mask_levels is not None:
        validate_masks(mask_levels, shapes)
    workers = workers or min(4, os.cpu_count() or 1)
    name = name or Path(path).name.removesuffix(".tif").removesuffix(".tiff").removesuffix(".ome")

    n_tiles = sum(len(tile_grid(s, (tile_px, tile_px))) for s in shapes)
    total = n_tiles * (2 if mask_levels is not None else 1)
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    with atomic_output(path, overwrite) as tmp:
        scratch = Path(tempfile.mkdtemp(prefix=f".{Path(path).name}.scratch-", dir=tmp.parent))
        try:
            image_readers = _level_readers(levels, shapes, scratch, False, tile_px, workers, cancel)
            mask_readers = (
                _level_readers(mask_levels, shapes, scratch, True, tile_px, workers, cancel)
                if mask_levels is not None
                else None
            )
            with tifffile.TiffWriter(tmp, bigtiff=True, ome=True) as tif:
                image_meta: dict[str, Any] = {"axes": "YXS", "Name": name}
                if provenance:
                    image_meta["Description"] = json.dumps(provenance, sort_keys=True)
                options = {
                    "photometric": "rgb",
                    "compression": codec,
                    "compressionargs": {"level": int(quality)} if codec == "jpeg" else None,
                }
                _write_series(
                    tif, image_readers, shapes, 3, mpp_xy, image_meta, options, tile_px,
                    workers, cancel, tick,
                )  # fmt: skip
                if mask_readers is not None:
                    mask_meta = {"axes": "YX", "Name": "synthetic mask"}
                    mask_options = {"photometric": "minisblack", "compression": "zlib"}
                    _write_series(
                        tif, mask_readers, shapes, 1, mpp_xy, mask_meta, mask_options, tile_px,
                        workers, cancel, tick,
                    )  # fmt: skip
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return Path(path)


def _level_readers(
    levels: Sequence[Any],
    shapes: Sequence[Sequence[int]],
    scratch: Path,
    mask: bool,
    tile_px: int,
    workers: int,
    cancel: Any,
) -> list[Reader]:
    if len(levels) == len(shapes):
        return [_source_reader(lv, mask) for lv in levels]
    first = _source_reader(levels[0], mask)
    return [
        first,
        *_build_scratch_levels(levels[0], shapes, scratch, mask, tile_px, workers, cancel),
    ]


def _write_series(
    tif: Any,
    readers: Sequence[Reader],
    shapes: Sequence[Sequence[int]],
    samples: int,
    mpp_xy: tuple[float, float] | None,
    metadata: dict[str, Any],
    options: dict[str, Any],
    tile_px: int,
    workers: int,
    cancel: Any,
    tick: Callable[[int], None],
) -> None:
    h0, w0 = shapes[0]
    for i, (read, shape) in enumerate(zip(readers, shapes, strict=True)):
        kwargs: dict[str, Any] = dict(options)
        if mpp_xy is not None:
            # pixels per centimetre of this level
            dx, dy = w0 / shape[1], h0 / shape[0]
            kwargs["resolution"] = (1e4 / (mpp_xy[0] * dx), 1e4 / (mpp_xy[1] * dy))
            kwargs["resolutionunit"] = "CENTIMETER"
        if i == 0:
            meta = dict(metadata)
            if mpp_xy is not None:
                meta.update(
                    PhysicalSizeX=mpp_xy[0],
                    PhysicalSizeXUnit="µm",
                    PhysicalSizeY=mpp_xy[1],
                    PhysicalSizeYUnit="µm",
                )
            kwargs.update(metadata=meta, subifds=len(shapes) - 1)
        else:
            kwargs.update(subfiletype=1, metadata=None)
        tif.write(
            _tiles(read, shape, tile_px, workers, cancel, tick),
            shape=(*shape, samples) if samples > 1 else tuple(shape),
            dtype=np.uint8,
            tile=(tile_px, tile_px),
            maxworkers=workers,
            **kwargs,
        )
