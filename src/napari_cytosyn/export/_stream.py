"""Pieces shared by the writers: atomic outputs, a bounded tile loop, level readers, checks.

An export's memory is bounded by ``workers x window x block`` pixels whatever the slide size.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from napari_cytosyn import chunk_grid

T = TypeVar("T")
R = TypeVar("R")
ProgressFn = Callable[[int, int], None]
#: ``read(y0, y1, x0, x1) -> (h, w, samples)`` uint8: how writers read a level.
Reader = Callable[[int, int, int, int], np.ndarray]


def check_cancel(cancel: Any) -> None:
    """Raise ``napari_cytosyn.sampling.Cancelled`` when ``cancel.is_set()``."""
    if cancel is not None and cancel.is_set():
        from napari_cytosyn.sampling import Cancelled

        raise Cancelled("export cancelled")


def output_path(path: str | os.PathLike, overwrite: bool) -> Path:
    """Validate an output path: refuse an existing one unless ``overwrite``; parent must exist."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} already exists; pass overwrite=True (--overwrite) to replace it"
        )
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder {path.parent} does not exist; create it first")
    return path


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``, moved to ``path`` on success and removed on an
    exception (a failed export leaves nothing under the final name; ``path`` is untouched)."""
    from napari_cytosyn.slide.store_io import remove_path

    path = output_path(path, overwrite)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
    except BaseException:
        remove_path(tmp)
        raise
    if path.exists():
        trash = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(path, trash)
        os.replace(tmp, path)
        remove_path(trash)
    else:
        os.replace(tmp, path)


def bounded_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    workers: int,
    window: int | None = None,
    cancel: Any = None,
) -> Iterator[R]:
    """``map(fn, items)`` on ``workers`` threads, in order, at most ``window`` in flight (not
    all submitted up front: bounded memory for millions of tiles); ``cancel`` checked between."""
    workers = max(1, int(workers))
    window = window or 2 * workers
    if workers == 1:
        for item in items:
            check_cancel(cancel)
            yield fn(item)
        return
    pending: deque[Future[R]] = deque()
    with ThreadPoolExecutor(workers, thread_name_prefix="cytosyn-export") as pool:
        try:
            for item in items:
                check_cancel(cancel)
                pending.append(pool.submit(fn, item))
                if len(pending) >= window:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()


def read_block(level: Any, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    """Region ``[y0:y1, x0:x1]`` of a numpy/zarr/dask array as numpy, computed synchronously.

    Tiles are read from a thread pool already; nested dask thread pools would only oversubscribe.
    """
    block = level[y0:y1, x0:x1]
    compute = getattr(block, "compute", None)
    if callable(compute):
        return np.asarray(compute(scheduler="synchronous"))
    return np.asarray(block)


def source_reader(level: Any, mask_value: int | None = None) -> Reader:
    """Reader of a ``(y, x, 3)`` image level, or of a ``(y, x)`` mask as ``(h, w, 1)``
    ``mask_value`` where set, 0 elsewhere."""

    def read(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        block = read_block(level, y0, y1, x0, x1)
        if mask_value is not None:
            return ((block != 0) * np.uint8(mask_value)).astype(np.uint8)[..., None]
        return block

    return read


def cyx_reader(arr: Any) -> Reader:
    """Reader of a written ``(c, y, x)`` level array, as ``(h, w, c)``."""

    def read(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return np.moveaxis(np.asarray(arr[:, y0:y1, x0:x1]), 0, -1)

    return read


def source_chunk_hw(level: Any) -> tuple[int, int] | None:
    """(y, x) chunk size of a dask or zarr array (first chunk for dask), or ``None``."""
    chunks = getattr(level, "chunks", None)
    if not chunks or len(chunks) < 2:
        return None
    if isinstance(chunks[0], tuple):  # dask: tuple of per-block sizes per axis
        return int(chunks[0][0]), int(chunks[1][0])
    return int(chunks[0]), int(chunks[1])


def aligned_block_px(level: Any, tile_px: int) -> tuple[int, int]:
    """Read-block size for ``level``: its chunk size when that is a multiple of ``tile_px``.

    Reading a 512 px tile out of a 1024 px source chunk would decompress that chunk 4 times;
    reading whole source chunks and writing the 4 output tiles in them decompresses it once.
    """
    chunk = source_chunk_hw(level)
    if chunk is None:
        return tile_px, tile_px
    cy, cx = chunk
    if cy % tile_px == 0 and cx % tile_px == 0:
        return min(cy, 4096), min(cx, 4096)
    return tile_px, tile_px


def level_downsamples(shapes: Sequence[Sequence[int]]) -> list[tuple[float, float]]:
    """Per-level downsample ``(dy, dx)`` relative to level 0 from the level shapes.

    Ratios within 2 % of an integer are snapped to it: a 2x pyramid of an odd-sized image has
    shape ratios like 7.98 where every reader (and the pixels) mean 8.
    """

    def snap(r: float) -> float:
        n = round(r)
        return float(n) if n >= 1 and abs(r - n) <= 0.02 * n else r

    h0, w0 = shapes[0][0], shapes[0][1]
    return [(snap(h0 / s[0]), snap(w0 / s[1])) for s in shapes]


def validate_levels(levels: Sequence[Any], what: str = "levels") -> None:
    """Check a pyramid: non-empty, (y, x, 3) uint8 at each level, shrinking."""
    if not levels:
        raise ValueError(f"{what} is empty; pass at least the full-resolution level")
    prev = None
    for i, lv in enumerate(levels):
        shape, dtype = tuple(lv.shape), np.dtype(lv.dtype)
        if len(shape) != 3 or shape[2] != 3 or dtype != np.uint8:
            raise ValueError(
                f"{what}[{i}] must be (y, x, 3) uint8 RGB, got shape {shape} dtype {dtype}"
            )
        if prev is not None and (shape[0] > prev[0] or shape[1] > prev[1]):
            raise ValueError(f"{what}[{i}] {shape[:2]} is larger than level {i - 1} {prev[:2]}")
        prev = shape


def pyramid_shapes(
    levels: Sequence[Any], min_level_px: int, mask_levels: Sequence[Any] | None = None
) -> list[tuple[int, ...]]:
    """The output's level shapes ``(y, x)``: the given levels', or for a single level its 2x
    levels down to ``min_level_px``; ``mask_levels`` (if any) are checked against them."""
    given = [tuple(int(s) for s in lv.shape[:2]) for lv in levels]
    shapes = given if len(given) > 1 else chunk_grid.level_shapes(*given[0], min_level_px)
    if mask_levels is not None:
        validate_masks(mask_levels, shapes)
    return shapes


def default_workers(workers: int | None) -> int:
    """``workers``, or by default ``min(4, cpu_count)`` threads."""
    return workers or min(4, os.cpu_count() or 1)


class ProgressCounter:
    """``tick(n)`` adds ``n`` units done and reports ``progress(done, total)`` (if given)."""

    def __init__(self, progress: ProgressFn | None, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def __call__(self, n: int) -> None:
        self.done += n
        if self.progress is not None:
            self.progress(self.done, self.total)


def validate_masks(mask_levels: Sequence[Any], shapes: Sequence[Sequence[int]]) -> None:
    """Check a mask pyramid against the image level shapes: (y, x) integer, same sizes."""
    if len(mask_levels) not in (1, len(shapes)):
        raise ValueError(
            f"mask pyramid has {len(mask_levels)} levels; give 1 (full resolution) or "
            f"{len(shapes)} (one per image level)"
        )
    for i, m in enumerate(mask_levels):
        if tuple(m.shape) != tuple(shapes[i][:2]):
            raise ValueError(
                f"mask level {i} has shape {tuple(m.shape)}, "
                f"image level {i} is {tuple(shapes[i][:2])}"
            )
        if np.dtype(m.dtype).kind not in "biu":
            raise ValueError(f"mask level {i} must be bool or integer labels, got {m.dtype}")
