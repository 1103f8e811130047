"""The on-disk store behind synthetic slides and edit stores: layout, atomic chunks, completion.

Layout (zarr v3, one local directory)::

    <store>/zarr.json                 attributes["napari_cytosyn"]: format, version, kind, spec...
    <store>/levels/<k>                uint8 (h_k, w_k, 3), chunks (chunk_px, chunk_px, 3)
    <store>/done/<k>                  uint8 (ny_k, nx_k) completion map, 1 = chunk finished
    <store>/...                       kind-specific arrays (latents, phase cache, masks)
    <store>/cytosyn.lock              advisory lock file guarding completion-map updates

Why it is safe to kill a writer at any moment:

- zarr's local store writes every chunk to a temporary file and renames it into place, so a
  chunk file is either the old one or the complete new one, never torn;
- a chunk is written first and marked in the completion map afterwards, so a chunk marked done
  always has its pixels on disk; a chunk whose mark was not written is simply computed again
  (computation is deterministic, so rewriting it is harmless);
- marks are merged under a lock (a thread lock plus ``fcntl.flock`` across processes) by
  reading the map block from disk, setting the bit and writing it back, so concurrent writers
  never erase each other's marks.

Nothing is allocated in proportion to the slide: arrays are sparse (chunks exist only once
written) and the completion map of a 200,000 x 200,000 px slide with 512 px chunks is
391 x 391 bytes.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import shutil
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from .pyramid import chunk_bounds, chunk_grid

try:  # POSIX: completion-map updates are serialised across processes too
    import fcntl
except ImportError:  # pragma: no cover - Windows keeps the in-process lock only
    fcntl = None

FORMAT_NAME = "napari-cytosyn"
FORMAT_VERSION = 1
ATTRS_KEY = "napari_cytosyn"
_MAP_BLOCK = 256
_LOCK_FILE = "cytosyn.lock"


class StoreError(ValueError):
    """A store path or its contents cannot be used as asked."""


class StoreExistsError(StoreError, FileExistsError):
    """The path already holds a store (or other data) and overwriting was not allowed."""


class StoreMismatchError(StoreError):
    """The store was written with a different model, settings or geometry than requested."""


def _software_version() -> str:
    try:
        from importlib.metadata import version

        return version("napari-cytosyn")
    except Exception:
        return "unknown"


def read_store_attrs(path: str | os.PathLike) -> dict[str, Any] | None:
    """Our attributes of the store at ``path``, or ``None`` when it is not one of ours."""
    path = Path(path)
    if not (path / "zarr.json").is_file():
        return None
    try:
        root = zarr.open_group(str(path), mode="r")
    except Exception:
        return None
    attrs = root.attrs.asdict().get(ATTRS_KEY)
    if not isinstance(attrs, dict) or attrs.get("format") != FORMAT_NAME:
        return None
    return attrs


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
    """Which chunks of one level are finished: a small uint8 grid mirrored to a zarr array.

    ``grid`` is the in-memory view (``(ny, nx)`` uint8, 1 = done); :meth:`mark` persists a mark
    by merging it into the block on disk under the store's lock, and :meth:`refresh` rereads the
    whole map (to see chunks written by other processes).
    """

    def __init__(self, array: zarr.Array, lock: _StoreLock) -> None:
        self.array = array
        self._lock = lock
        self.grid = np.asarray(array[...], dtype=np.uint8)

    @property
    def shape(self) -> tuple[int, int]:
        return self.grid.shape

    def is_done(self, cy: int, cx: int) -> bool:
        return bool(self.grid[cy, cx])

    def count(self) -> int:
        """Number of finished chunks."""
        return int(np.count_nonzero(self.grid))

    def refresh(self) -> None:
        """Reread the map from disk, keeping marks made in this process."""
        self.grid = np.maximum(self.grid, np.asarray(self.array[...], dtype=np.uint8))

    def _block(self, cy: int, cx: int) -> tuple[slice, slice]:
        by, bx = (cy // _MAP_BLOCK) * _MAP_BLOCK, (cx // _MAP_BLOCK) * _MAP_BLOCK
        return (
            slice(by, min(by + _MAP_BLOCK, self.grid.shape[0])),
            slice(bx, min(bx + _MAP_BLOCK, self.grid.shape[1])),
        )

    def mark(self, cy: int, cx: int, value: int = 1) -> None:
        """Persist chunk ``(cy, cx)`` as finished (``value=0`` clears it)."""
        sl = self._block(cy, cx)
        with self._lock:
            on_disk = np.asarray(self.array[sl], dtype=np.uint8)
            merged = np.maximum(on_disk, self.grid[sl])
            merged[cy - sl[0].start, cx - sl[1].start] = value
            self.array[sl] = merged
            self.grid[sl] = merged


class _StoreLock:
    """A re-entrant thread lock plus an advisory file lock shared by all processes."""

    def __init__(self, path: Path, writable: bool) -> None:
        self._thread_lock = threading.RLock()
        self._path = path
        self._writable = writable
        self._depth = 0
        self._fh = None

    def __enter__(self) -> _StoreLock:
        self._thread_lock.acquire()
        if self._depth == 0 and fcntl is not None and self._writable:
            self._fh = open(self._path, "a+b")
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX)
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
        self._thread_lock.release()


class SlideStore:
    """A pyramid of uint8 RGB levels in a zarr v3 directory, with a completion map per level.

    Use :meth:`create` and :meth:`open`; ``kind`` names what the store is for
    (``"synthetic-slide"``, ``"edit-store"``) and is checked on open.
    """

    def __init__(self, path: Path, root: zarr.Group, writable: bool) -> None:
        self.path = path
        self.root = root
        self.writable = writable
        self.attrs: dict[str, Any] = root.attrs.asdict()[ATTRS_KEY]
        self.kind: str = self.attrs["kind"]
        self.chunk_px: int = int(self.attrs["chunk_px"])
        self.level_shapes: list[tuple[int, int]] = [tuple(s) for s in self.attrs["level_shapes"]]
        self.lock = _StoreLock(path / _LOCK_FILE, writable)
        self.flight = SingleFlight()
        self._levels = [self._open_array(f"levels/{k}") for k in range(len(self.level_shapes))]
        self._levels_dir = os.fspath(path / "levels")
        self._fast = [_plain_zstd(path / "levels" / str(k)) for k in range(len(self.level_shapes))]
        self._done = [
            CompletionMap(self._open_array(f"done/{k}"), self.lock)
            for k in range(len(self.level_shapes))
        ]

    # -- creation and opening -------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        kind: str,
        level_shapes: list[tuple[int, int]],
        chunk_px: int,
        attrs: dict[str, Any],
        overwrite: bool = False,
    ) -> SlideStore:
        """Create an empty store at ``path``; sparse, so its size does not depend on the slide's.

        Raises :class:`StoreExistsError` if ``path`` exists, unless it is an (empty directory or
        a) store of ours and ``overwrite`` is true; a path holding anything else is never
        deleted.
        """
        path = Path(path)
        if chunk_px <= 0 or chunk_px % 16:
            raise ValueError(f"chunk_px must be a positive multiple of 16, got {chunk_px}")
        if path.exists():
            ours = read_store_attrs(path) is not None
            empty_dir = path.is_dir() and not any(path.iterdir())
            if not empty_dir:
                if not ours:
                    raise StoreExistsError(
                        f"{path} exists and is not a napari-cytosyn store; "
                        "choose a new path (it will not be overwritten)"
                    )
                if not overwrite:
                    raise StoreExistsError(
                        f"{path} already holds a napari-cytosyn store; open it, or pass "
                        "overwrite=True to replace it"
                    )
                _remove_store(path)
        meta = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "kind": kind,
            "chunk_px": int(chunk_px),
            "level_shapes": [[int(h), int(w)] for h, w in level_shapes],
            "software_version": _software_version(),
            "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            **attrs,
        }
        # Arrays first, attributes last: a store interrupted while being created is not
        # recognised as ours and can be recreated.
        root = zarr.open_group(str(path), mode="w")
        for k, (h, w) in enumerate(level_shapes):
            root.create_array(
                f"levels/{k}",
                shape=(h, w, 3),
                chunks=(chunk_px, chunk_px, 3),
                dtype="uint8",
                fill_value=255,
                dimension_names=["y", "x", "c"],
            )
            ny, nx = chunk_grid((h, w), chunk_px)
            root.create_array(
                f"done/{k}",
                shape=(ny, nx),
                chunks=(min(_MAP_BLOCK, ny), min(_MAP_BLOCK, nx)),
                dtype="uint8",
                fill_value=0,
            )
        root.attrs[ATTRS_KEY] = meta
        return cls(path, root, writable=True)

    @classmethod
    def open(
        cls, path: str | os.PathLike, kind: str, mode: str = "r+", verify: bool = True
    ) -> SlideStore:
        """Open an existing store of ``kind``; ``mode`` ``"r"`` or ``"r+"``.

        With ``verify``, every chunk marked done is checked to exist on disk; a mark without its
        chunk (a store copied partially, a chunk deleted by hand) is cleared with a warning so
        the chunk is computed again.
        """
        path = Path(path)
        if mode not in ("r", "r+"):
            raise ValueError(f"mode must be 'r' or 'r+', got {mode!r}")
        if not path.exists():
            raise FileNotFoundError(f"no store at {path}")
        attrs = read_store_attrs(path)
        if attrs is None:
            raise StoreError(f"{path} is not a napari-cytosyn store (no {ATTRS_KEY!r} attributes)")
        if attrs.get("format_version") != FORMAT_VERSION:
            raise StoreError(
                f"{path} has store format version {attrs.get('format_version')}, this software "
                f"reads version {FORMAT_VERSION}; open it with a matching napari-cytosyn"
            )
        if attrs.get("kind") != kind:
            raise StoreError(f"{path} is a {attrs.get('kind')!r} store, not a {kind!r} store")
        root = zarr.open_group(str(path), mode=mode)
        store = cls(path, root, writable=mode == "r+")
        if verify:
            store.verify()
        return store

    def _open_array(self, name: str) -> zarr.Array:
        # Chunks equal to the fill value must still be written: a mark must imply a file.
        return self.root[name].with_config({"write_empty_chunks": True})

    def open_array(self, name: str) -> zarr.Array:
        """A kind-specific array of the store, configured to always write its chunks."""
        return self._open_array(name)

    def verify(self) -> int:
        """Clear marks whose chunk file is missing; returns how many were cleared."""
        cleared = 0
        for k, done in enumerate(self._done):
            for cy, cx in zip(*np.nonzero(done.grid), strict=True):
                if not self.chunk_file(k, int(cy), int(cx)).is_file():
                    warnings.warn(
                        f"{self.path}: chunk ({cy}, {cx}) of level {k} was marked done but is "
                        "missing; it will be computed again",
                        stacklevel=2,
                    )
                    if self.writable:
                        done.mark(int(cy), int(cx), value=0)
                    else:
                        done.grid[cy, cx] = 0
                    cleared += 1
        return cleared

    # -- geometry -----------------------------------------------------------------------------

    @property
    def n_levels(self) -> int:
        return len(self.level_shapes)

    def grid(self, level: int) -> tuple[int, int]:
        """Chunk grid ``(ny, nx)`` of ``level``."""
        return chunk_grid(self.level_shapes[level], self.chunk_px)

    def bounds(self, level: int, cy: int, cx: int) -> tuple[int, int, int, int]:
        """Pixel bounds ``(y0, y1, x0, x1)`` of a chunk."""
        return chunk_bounds(self.level_shapes[level], self.chunk_px, cy, cx)

    def level_array(self, level: int) -> zarr.Array:
        """The zarr array of ``level`` (read it only where chunks are done)."""
        return self._levels[level]

    def completion(self, level: int) -> CompletionMap:
        return self._done[level]

    def chunk_file(self, level: int, cy: int, cx: int) -> Path:
        """Path of a level chunk's file (zarr v3 default key encoding)."""
        return Path(self._chunk_path(level, cy, cx))

    # -- chunks -------------------------------------------------------------------------------

    def is_done(self, level: int, cy: int, cx: int) -> bool:
        return self._done[level].is_done(cy, cx)

    def read_chunk(self, level: int, cy: int, cx: int, copy: bool = True) -> np.ndarray:
        """Pixels ``(h, w, 3)`` uint8 of a chunk as stored (fill value 255 where never written).

        Always a fresh, writable array; ``copy`` is kept for callers that asked for a view
        (the zstd fast path decodes straight into a new array, so there is nothing to copy)."""
        y0, y1, x0, x1 = self.bounds(level, cy, cx)
        codec = self._fast[level]
        if codec is not None:
            # One file read and one zstd decode into the output array: ~10x less overhead than
            # a zarr call for a single chunk (zarr's async machinery costs ~1.5 ms per call).
            try:
                with open(self._chunk_path(level, cy, cx), "rb") as fh:
                    raw = fh.read()
            except FileNotFoundError:
                return np.full((y1 - y0, x1 - x0, 3), 255, dtype=np.uint8)
            c = self.chunk_px
            full = np.empty((c, c, 3), dtype=np.uint8)
            codec.decode(raw, out=full)
            return full[: y1 - y0, : x1 - x0]
        return np.asarray(self._levels[level][y0:y1, x0:x1])

    def _chunk_path(self, level: int, cy: int, cx: int) -> str:
        # String formatting, not pathlib: this is on the read path of every finished chunk.
        return f"{self._levels_dir}/{level}/c/{cy}/{cx}/0"

    def write_chunk(self, level: int, cy: int, cx: int, rgb: np.ndarray) -> None:
        """Write a chunk's pixels, then mark it done (the order that makes kills safe)."""
        if not self.writable:
            raise StoreError(f"{self.path} was opened read-only")
        y0, y1, x0, x1 = self.bounds(level, cy, cx)
        if rgb.shape != (y1 - y0, x1 - x0, 3) or rgb.dtype != np.uint8:
            raise ValueError(
                f"chunk ({cy}, {cx}) of level {level} needs ({y1 - y0}, {x1 - x0}, 3) uint8, "
                f"got {rgb.shape} {rgb.dtype}"
            )
        self._levels[level][y0:y1, x0:x1] = rgb
        self._done[level].mark(cy, cx)

    def refresh(self) -> None:
        """Reread the completion maps (chunks finished by other processes)."""
        for done in self._done:
            done.refresh()

    def set_attrs(self, **updates: Any) -> None:
        """Merge ``updates`` into our attributes."""
        with self.lock:
            self.attrs.update(updates)
            self.root.attrs[ATTRS_KEY] = self.attrs


def _remove_store(path: Path) -> None:
    """Delete a store of ours: flush this process's writers into it, move it aside, delete."""
    from .phase_cache import flush_caches_under

    flush_caches_under(path)
    trash = path.with_name(f".{path.name}.deleting-{os.getpid()}-{threading.get_ident()}")
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _plain_zstd(array_dir: Path) -> Any:
    """A zstd codec when the array's chunks are plain bytes + zstd (our default), else None."""
    import json

    try:
        meta = json.loads((array_dir / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    codecs = meta.get("codecs", [])
    encoding = meta.get("chunk_key_encoding", {}).get("configuration", {})
    if (
        meta.get("data_type") != "uint8"
        or [c.get("name") for c in codecs] != ["bytes", "zstd"]
        or encoding.get("separator", "/") != "/"
    ):
        return None
    from numcodecs import Zstd

    return Zstd()
