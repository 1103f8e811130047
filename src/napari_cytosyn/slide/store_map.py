"""The in-memory side of a store: completion maps, verified level views, single flight."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from .store_io import StoreDamagedError, atomic_write

if TYPE_CHECKING:
    from .store import SlideStore

_MAP_BLOCK = 128  # completion records per block side


def encode_block(block: np.ndarray) -> bytes:
    """Bytes of a completion-map block file: little-endian uint64, zstd (a zarr v3 chunk)."""
    from numcodecs import Zstd

    return Zstd(level=0).encode(np.ascontiguousarray(block, dtype="<u8").tobytes())


def decode_block(raw: bytes, shape: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`encode_block`; raises ``ValueError`` on a damaged block."""
    from numcodecs import Zstd

    try:
        data = Zstd().decode(raw)
    except Exception as exc:
        raise ValueError(f"cannot decode ({exc})") from exc
    n = int(np.prod(shape)) * 8
    if len(data) != n:
        raise ValueError(f"holds {len(data)} bytes, not {n}")
    return np.frombuffer(data, dtype="<u8").reshape(shape).astype(np.uint64)


class SingleFlight:
    """Per-key locks so that one computation runs per key while others wait for it.

    ``with flight.hold(key): ...`` blocks while another thread holds the same key; locks are
    dropped once no thread needs them, so memory follows the work in flight, not the slide.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[Any, list] = {}

    @contextlib.contextmanager
    def hold(self, key: Any) -> Iterator[None]:
        with self._guard:
            entry = self._locks.setdefault(key, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._guard:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._locks[key]


class CompletionMap:
    """Which chunks of one level are finished: ``records`` ``(ny, nx)`` uint64 (0 = not
    finished) and ``grid`` ``(ny, nx)`` uint8 (1 = finished) in memory; :meth:`mark` merges a
    record into its block file under the store's lock, :meth:`refresh` rereads the map. A
    block file that cannot be decoded raises :class:`StoreDamagedError`."""

    def __init__(self, store: SlideStore, level: int) -> None:
        self._store = store
        self.level = level
        self.dir = os.fspath(store.path / "done" / str(level))
        ny, nx = store.grid(level)
        self.block = (min(_MAP_BLOCK, ny), min(_MAP_BLOCK, nx))
        self.records = np.zeros((ny, nx), dtype=np.uint64)
        self.grid = np.zeros((ny, nx), dtype=np.uint8)
        self.damaged_blocks: set[tuple[int, int]] = set()  # filled only by tolerant stores
        self.refresh()

    @property
    def shape(self) -> tuple[int, int]:
        return self.grid.shape

    def is_done(self, cy: int, cx: int) -> bool:
        return bool(self.grid[cy, cx])

    def count(self) -> int:
        """Number of finished chunks."""
        return int(np.count_nonzero(self.grid))

    def block_path(self, by: int, bx: int) -> str:
        return f"{self.dir}/c/{by}/{bx}"

    def blocks(self) -> Iterator[tuple[int, int]]:
        ny, nx = self.shape
        bh, bw = self.block
        for by in range(-(-ny // bh)):
            for bx in range(-(-nx // bw)):
                yield by, bx

    def _slices(self, by: int, bx: int) -> tuple[slice, slice]:
        bh, bw = self.block
        return slice(by * bh, (by + 1) * bh), slice(bx * bw, (bx + 1) * bw)

    def read_block(self, by: int, bx: int) -> np.ndarray:
        """The block's records as on disk ``(bh, bw)`` uint64 (zeros when never written)."""
        path = self.block_path(by, bx)
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            return np.zeros(self.block, dtype=np.uint64)
        try:
            return decode_block(raw, self.block)
        except ValueError as exc:
            raise StoreDamagedError(
                f"{self._store.path}: completion map block {by},{bx} of level {self.level} is "
                f"damaged ({exc}); run `napari-cytosyn check {self._store.path} --repair`"
            ) from exc

    def _load_block(self, by: int, bx: int) -> None:
        sy, sx = self._slices(by, bx)
        h, w = self.records[sy, sx].shape
        try:
            block = self.read_block(by, bx)[:h, :w]
        except StoreDamagedError:
            if not self._store.tolerant:
                raise
            self.damaged_blocks.add((by, bx))
            block = np.zeros((h, w), dtype=np.uint64)
        self.records[sy, sx] = block
        self.grid[sy, sx] = block != 0

    def refresh(self) -> None:
        """Reread the whole map from disk."""
        for by, bx in self.blocks():
            self._load_block(by, bx)

    def refresh_chunk(self, cy: int, cx: int) -> None:
        """Reread the block holding chunk ``(cy, cx)``."""
        bh, bw = self.block
        self._load_block(cy // bh, cx // bw)

    def record(self, cy: int, cx: int) -> int:
        return int(self.records[cy, cx])

    def mark(self, cy: int, cx: int, record: int = 1) -> None:
        """Persist chunk ``(cy, cx)``'s record (``0`` clears it) into the block on disk."""
        bh, bw = self.block
        by, bx = cy // bh, cx // bw
        with self._store.lock:
            block = self.read_block(by, bx)
            block[cy - by * bh, cx - bx * bw] = record
            self.write_block(by, bx, block)

    def write_block(self, by: int, bx: int, block: np.ndarray) -> None:
        """Write a whole block ``(bh, bw)`` uint64 atomically and adopt it in memory."""
        atomic_write(self.block_path(by, bx), encode_block(block), self._store.tmp_dir)
        sy, sx = self._slices(by, bx)
        h, w = self.records[sy, sx].shape
        self.records[sy, sx] = block[:h, :w]
        self.grid[sy, sx] = block[:h, :w] != 0


class VerifiedLevel:
    """Array view of a store level whose reads go through the verified chunk reader.

    Supports ``shape``, ``dtype``, ``ndim``, ``chunks`` and ``[y0:y1, x0:x1]`` / ``[...]``
    slicing (steps of 1), so exports and scripts read a level like a zarr array; unfinished
    chunks read as the fill value (255, or 0 for masks), damaged ones raise
    :class:`ChunkDamagedError`.
    """

    def __init__(self, store: SlideStore, level: int, mask: bool = False) -> None:
        self.store, self.level, self.mask = store, level, mask
        h, w = store.level_shapes[level]
        c = store.chunk_px
        self.shape = (h, w) if mask else (h, w, 3)
        self.chunks = (c, c) if mask else (c, c, 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = len(self.shape)

    def __getitem__(self, key: Any) -> np.ndarray:
        if key is Ellipsis:
            key = ()
        if not isinstance(key, tuple):
            key = (key,)
        key = tuple(k for k in key if k is not Ellipsis)
        h, w = self.shape[:2]
        ys = key[0] if len(key) > 0 else slice(None)
        xs = key[1] if len(key) > 1 else slice(None)
        if not (isinstance(ys, slice) and isinstance(xs, slice)):
            raise TypeError("a store level is read with slices, e.g. level[y0:y1, x0:x1]")
        y0, y1, sy = ys.indices(h)
        x0, x1, sx = xs.indices(w)
        if sy != 1 or sx != 1:
            raise ValueError("store levels are read with steps of 1")
        out = self.store.read_region(self.level, y0, x0, max(0, y1 - y0), max(0, x1 - x0))
        out = out[1] if self.mask else out[0]
        return out[(slice(None), slice(None), *key[2:])] if len(key) > 2 else out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[...]
        return out if dtype is None else out.astype(dtype)
