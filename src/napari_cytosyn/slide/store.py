"""The on-disk store behind synthetic slides and edit stores: layout, verified chunks, completion.

Layout (zarr v3 metadata, one local directory)::

    <store>/zarr.json                 attributes["napari_cytosyn"]: format, version, kind, spec...
    <store>/levels/<k>                uint8 (h_k, w_k, 3), chunks (chunk_px, chunk_px, 3)
    <store>/mask/<k>                  edit stores: uint8 (h_k, w_k) where the edit applies
    <store>/done/<k>                  uint64 (ny_k, nx_k) completion record per chunk
    <store>/...                       kind-specific arrays (latents, phase cache, tissue mask)
    <store>/cytosyn.lock              exclusive lock of read-modify-write updates
    <store>/cytosyn.lease             shared by every process using the store
    <store>/.tmp/                     files being written (named by the writer's PID)

Integrity, the guarantees (tested in ``tests/slide/test_store_integrity.py``):

- a chunk file is written to a temporary file, fsynced and renamed into place, then its record
  (``size << 32 | crc32`` of the file bytes, :mod:`.store_io`) is merged into the completion
  map block under the store's lock, itself written the same atomic way; a process killed at
  any moment leaves every chunk either unrecorded (computed again) or complete;
- every read of a recorded chunk checks its size and CRC-32: a missing, truncated or garbled
  chunk raises :class:`ChunkDamagedError` naming the chunk (synthetic slides recompute it where
  they can), so no reader ever sees fill values or wrong bytes for a chunk that should exist;
- attribute updates are read-modify-write under the store's lock (no lost edit records);
- a store is created in a temporary sibling folder and renamed into place: of two processes
  creating one store, one fails; ``overwrite`` replaces only a store of the same kind and only
  while no other process holds it open (its lease).

Chunk files are written by hand (not through zarr's store) because the record is the CRC of
the file's exact bytes and the file must be fsynced before its record is; zarr's local store
neither fsyncs nor gives the bytes back (see docs/architecture.md for the measurements). The
files are zarr v3 chunks, so zarr and dask read a store as it is. Arrays are sparse; the
completion record holds 9 bytes a chunk in memory, for at most :data:`MAX_CHUNKS` chunks.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import uuid
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from napari_cytosyn.chunk_grid import chunk_bounds, grid_shape, pieces

from .store_io import (
    TMP_DIR,
    ChunkDamagedError,
    Lease,
    StoreBusyError,
    StoreDamagedError,
    StoreError,
    StoreExistsError,
    StoreLock,
    StoreMismatchError,
    atomic_write,
    exclusive_lease,
    record_of,
    record_size,
    remove_dead_temporaries,
)
from .store_map import _MAP_BLOCK, CompletionMap, SingleFlight, VerifiedLevel

__all__ = [
    "ChunkDamagedError",
    "SlideStore",
    "StoreBusyError",
    "StoreDamagedError",
    "StoreError",
    "StoreExistsError",
    "StoreMismatchError",
    "read_store_attrs",
]

FORMAT_NAME = "napari-cytosyn"
FORMAT_VERSION = 2
ATTRS_KEY = "napari_cytosyn"
MAX_CHUNKS = 2**20  # level-0 chunks of one store: 1,048,576 (524,288 px a side at 512 px)
_LOCK_FILE = "cytosyn.lock"
_LEASE_FILE = "cytosyn.lease"
_ZSTD = {"name": "zstd", "configuration": {"level": 0, "checksum": False}}
# Stores open in this process, by resolved path: replacing a store retires them first.
_OPEN: weakref.WeakValueDictionary[tuple[str, int], SlideStore] = weakref.WeakValueDictionary()


def _software_version() -> str:
    try:
        from importlib.metadata import version

        return version("napari-cytosyn")
    except Exception:
        return "unknown"


def read_store_attrs(path: str | os.PathLike) -> dict[str, Any] | None:
    """Our attributes of the store at ``path``, or ``None`` when it is not one of ours."""
    path = Path(path)
    try:
        meta = json.loads((path / "zarr.json").read_text())
    except (OSError, ValueError):
        return None
    attrs = meta.get("attributes", {}).get(ATTRS_KEY) if isinstance(meta, dict) else None
    if not isinstance(attrs, dict) or attrs.get("format") != FORMAT_NAME:
        return None
    return attrs


class SlideStore:
    """A pyramid of uint8 RGB levels with a completion map per level (:meth:`create`,
    :meth:`open`); ``kind`` (``"synthetic-slide"``, ``"edit-store"``) is checked on open. Edit
    stores also hold a mask per level, written and verified with the RGB chunk."""

    def __init__(self, path: Path, writable: bool, lease: Lease, tolerant: bool = False) -> None:
        from numcodecs import Zstd

        self.tolerant = tolerant
        self.path = path
        self.writable = writable
        self._lease = lease
        self.root = zarr.open_group(str(path), mode="r+" if writable else "r")
        attrs = self.root.attrs.asdict().get(ATTRS_KEY)
        if not isinstance(attrs, dict):
            raise StoreDamagedError(f"{path}: the store's attributes are missing")
        self.attrs: dict[str, Any] = attrs
        self.kind: str = attrs["kind"]
        self.chunk_px: int = int(attrs["chunk_px"])
        self.level_shapes: list[tuple[int, int]] = [tuple(s) for s in attrs["level_shapes"]]
        self.masks: bool = bool(attrs.get("masks", False))
        self.tmp_dir = os.fspath(path / TMP_DIR)
        self.lock = StoreLock(path / _LOCK_FILE, writable)
        self.flight = SingleFlight()
        self._codec = Zstd(level=0)
        self._levels_dir = os.fspath(path / "levels")
        self._mask_dir = os.fspath(path / "mask")
        self.replaced = False
        self._check_geometry()
        self._done = [CompletionMap(self, k) for k in range(len(self.level_shapes))]
        _OPEN[(os.fspath(path.resolve()), id(self))] = self

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
        masks: bool = False,
        populate: Callable[[zarr.Group], None] | None = None,
    ) -> SlideStore:
        """Create an empty (sparse) store at ``path``: built in a temporary sibling folder
        (``populate(group)`` adds kind-specific arrays) and renamed into place, so a concurrent
        creator fails (:class:`StoreExistsError`). An existing path is refused unless an empty
        folder, or, with ``overwrite``, a store of ours of this ``kind`` no other process has
        open (:class:`StoreBusyError`); anything else is never deleted."""
        path = Path(path)
        if chunk_px <= 0 or chunk_px % 16:
            raise ValueError(f"chunk_px must be a positive multiple of 16, got {chunk_px}")
        ny, nx = grid_shape(level_shapes[0], chunk_px)
        if ny * nx > MAX_CHUNKS:
            raise StoreError(
                f"a {level_shapes[0][1]} x {level_shapes[0][0]} px slide in {chunk_px} px chunks "
                f"has {ny * nx:,} chunks, over the limit of {MAX_CHUNKS:,}; use larger chunks "
                "or a smaller slide"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        for tag in ("creating", "deleting"):
            remove_dead_temporaries(path.parent, prefix=f".{path.name}.{tag}-")
        _check_replaceable(path, kind, overwrite)
        meta = {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "kind": kind,
            "chunk_px": int(chunk_px),
            "level_shapes": [[int(h), int(w)] for h, w in level_shapes],
            "masks": bool(masks),
            "software_version": _software_version(),
            "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            **attrs,
        }
        tmp = path.with_name(f".{path.name}.creating-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            _build(tmp, level_shapes, chunk_px, masks, meta, populate)
            # Checked again: another process may have created the store meanwhile.
            try:
                _check_replaceable(path, kind, overwrite)
            except StoreExistsError as exc:
                raise StoreExistsError(f"{exc} (created by another process meanwhile)") from exc
            if overwrite and read_store_attrs(path) is not None:
                _remove_store(path)  # ours and of this kind (checked just above)
            try:
                os.rename(tmp, path)
            except OSError as exc:
                raise StoreExistsError(
                    f"{path} was created by another process meanwhile; open it, or run again "
                    "with overwrite"
                ) from exc
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return cls.open(path, kind)

    @classmethod
    def open(
        cls, path: str | os.PathLike, kind: str, mode: str = "r+", tolerant: bool = False
    ) -> SlideStore:
        """Open a store of ``kind`` (``mode`` ``"r"`` or ``"r+"``), leased until :meth:`close`
        (it cannot be replaced meanwhile). ``tolerant``: damaged completion-map blocks read as
        empty and are listed in each map's ``damaged_blocks`` (for ``check``)."""
        path = Path(path)
        if mode not in ("r", "r+"):
            raise ValueError(f"mode must be 'r' or 'r+', got {mode!r}")
        if not path.exists():
            raise FileNotFoundError(f"no store at {path}")
        lease = Lease(path / _LEASE_FILE, writable=mode == "r+")
        lease.acquire()
        try:
            attrs = read_store_attrs(path)
            if attrs is None:
                raise StoreError(
                    f"{path} is not a napari-cytosyn store (no {ATTRS_KEY!r} attributes)"
                )
            if attrs.get("format_version") != FORMAT_VERSION:
                raise StoreError(
                    f"{path} has store format version {attrs.get('format_version')}, this "
                    f"software reads version {FORMAT_VERSION}; create the store again"
                )
            if attrs.get("kind") != kind:
                raise StoreError(f"{path} is a {attrs.get('kind')!r} store, not a {kind!r} store")
            store = cls(path, mode == "r+", lease, tolerant)
        except BaseException:
            lease.release()
            raise
        if store.writable:
            remove_dead_temporaries(path / TMP_DIR)
        return store

    def close(self) -> None:
        """Give up this process's lease (the store may then be replaced by others)."""
        self._lease.release()

    def _retire(self) -> None:
        """This store is being replaced (in this process): refuse every later read and write."""
        self.replaced = True
        self._lease.release()

    def _check_current(self) -> None:
        if self.replaced:
            raise StoreError(f"{self.path} was replaced by a new store; open it again")

    def _check_geometry(self) -> None:
        """The level arrays must have the shapes and chunks the attributes say."""
        for name, spec in _array_specs(self.level_shapes, self.chunk_px, self.masks):
            shape, chunks = list(spec["shape"]), list(spec["chunks"])
            try:
                meta = json.loads((self.path / name / "zarr.json").read_text())
                got = meta["shape"], meta["chunk_grid"]["configuration"]["chunk_shape"]
                codecs = [x.get("name") for x in meta.get("codecs", [])]
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise StoreDamagedError(f"{self.path}: array {name} is unreadable ({exc})") from exc
            if list(got[0]) != shape or list(got[1]) != chunks or codecs != ["bytes", "zstd"]:
                raise StoreDamagedError(
                    f"{self.path}: array {name} has shape {got[0]} and chunks {got[1]}, the "
                    f"store's attributes say {shape} and {chunks}; the store was edited, "
                    "create it again"
                )

    # -- geometry -----------------------------------------------------------------------------

    @property
    def n_levels(self) -> int:
        return len(self.level_shapes)

    def grid(self, level: int) -> tuple[int, int]:
        """Chunk grid ``(ny, nx)`` of ``level``."""
        return grid_shape(self.level_shapes[level], self.chunk_px)

    def bounds(self, level: int, cy: int, cx: int) -> tuple[int, int, int, int]:
        """Pixel bounds ``(y0, y1, x0, x1)`` of a chunk."""
        return chunk_bounds(self.level_shapes[level], self.chunk_px, cy, cx)

    def level_array(self, level: int) -> VerifiedLevel:
        """``level`` as an array ``(h, w, 3)`` uint8 read through the verified chunk reader."""
        return VerifiedLevel(self, level)

    def mask_array(self, level: int) -> VerifiedLevel:
        """An edit store's mask of ``level`` ``(h, w)`` uint8, read like :meth:`level_array`."""
        return VerifiedLevel(self, level, mask=True)

    def completion(self, level: int) -> CompletionMap:
        return self._done[level]

    def open_array(self, name: str) -> zarr.Array:
        """A kind-specific array of the store, configured to always write its chunks."""
        return self.root[name].with_config({"write_empty_chunks": True})

    def chunk_file(self, level: int, cy: int, cx: int) -> Path:
        """Path of a level chunk's file (zarr v3 default key encoding)."""
        return Path(self._chunk_path(level, cy, cx))

    def mask_file(self, level: int, cy: int, cx: int) -> Path:
        """Path of an edit store's mask chunk file."""
        return Path(f"{self._mask_dir}/{level}/c/{cy}/{cx}")

    def _chunk_path(self, level: int, cy: int, cx: int) -> str:
        # String formatting, not pathlib: this is on the read path of every finished chunk.
        return f"{self._levels_dir}/{level}/c/{cy}/{cx}/0"

    # -- chunks -------------------------------------------------------------------------------

    def is_done(self, level: int, cy: int, cx: int) -> bool:
        return self._done[level].is_done(cy, cx)

    def _files(self, level: int, cy: int, cx: int) -> list[str]:
        files = [self._chunk_path(level, cy, cx)]
        if self.masks:
            files.append(os.fspath(self.mask_file(level, cy, cx)))
        return files

    def _check_files(
        self, level: int, cy: int, cx: int, record: int, read: bool = True
    ) -> tuple[list, str]:
        """(the chunk's file contents, "") when they match ``record``, else ([], the problem).
        ``read=False`` checks sizes only (one ``stat`` a file) and returns no contents."""
        raws, size = [], 0
        for name in self._files(level, cy, cx):
            try:
                if read:
                    with open(name, "rb") as fh:
                        raws.append(fh.read())
                    size += len(raws[-1])
                else:
                    size += os.stat(name).st_size
            except FileNotFoundError:
                return [], f"file {name} is missing"
        if size != record_size(record):
            return [], f"its files hold {size} bytes, its record says {record_size(record)}"
        if read and record_of(*raws) != record:
            return [], "its checksum differs from its record"
        return raws, ""

    def _verified(self, level: int, cy: int, cx: int) -> list[bytes] | None:
        """The file contents of a finished chunk (``None`` when not finished), verified."""
        self._check_current()
        done = self._done[level]
        record = done.record(cy, cx)
        if record == 0:
            return None
        raws, problem = self._check_files(level, cy, cx, record)
        if not raws:
            # Another process may have rewritten the chunk (edit stores): reread its record
            # while no writer is in the middle of a chunk, then check again.
            with self.lock:
                done.refresh_chunk(cy, cx)
                record = done.record(cy, cx)
                if record == 0:
                    return None
                raws, problem = self._check_files(level, cy, cx, record)
        if raws:
            return raws
        raise ChunkDamagedError(
            f"{self.path}: chunk ({cy}, {cx}) of level {level} is damaged ({problem}); run "
            f"`napari-cytosyn check {self.path} --repair`",
            level,
            cy,
            cx,
        )

    def _decode(self, raw: bytes, shape: tuple[int, ...], level: int, cy: int, cx: int):
        out = np.empty(shape, dtype=np.uint8)
        try:
            self._codec.decode(raw, out=out)
        except Exception as exc:
            raise ChunkDamagedError(
                f"{self.path}: chunk ({cy}, {cx}) of level {level} cannot be decoded ({exc})",
                level,
                cy,
                cx,
            ) from exc
        return out

    def read_chunk(self, level: int, cy: int, cx: int) -> np.ndarray:
        """Pixels ``(h, w, 3)`` uint8 of a chunk (fill value 255 where never finished), a fresh
        writable array. Raises :class:`ChunkDamagedError` when a finished chunk is missing or
        damaged."""
        return self.read_chunk_and_mask(level, cy, cx)[0]

    def read_chunk_and_mask(
        self, level: int, cy: int, cx: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """RGB ``(h, w, 3)`` and, in edit stores, mask ``(h, w)`` uint8 of a chunk, verified."""
        y0, y1, x0, x1 = self.bounds(level, cy, cx)
        h, w, c = y1 - y0, x1 - x0, self.chunk_px
        raws = self._verified(level, cy, cx)
        if raws is None:
            rgb = np.full((h, w, 3), 255, dtype=np.uint8)
            return rgb, (np.zeros((h, w), dtype=np.uint8) if self.masks else None)
        rgb = self._decode(raws[0], (c, c, 3), level, cy, cx)[:h, :w]
        mask = self._decode(raws[1], (c, c), level, cy, cx)[:h, :w] if self.masks else None
        return rgb, mask

    def read_region(
        self, level: int, y: int, x: int, h: int, w: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """RGB ``(h, w, 3)`` and (edit stores) mask ``(h, w)`` uint8 of a region of a level."""
        rgb = np.full((h, w, 3), 255, dtype=np.uint8)
        mask = np.zeros((h, w), dtype=np.uint8) if self.masks else None
        if h <= 0 or w <= 0:
            return rgb, mask
        for p in pieces(self.level_shapes[level], self.chunk_px, y, x, h, w):
            if not self._done[level].is_done(p.cy, p.cx):
                continue
            crgb, cmask = self.read_chunk_and_mask(level, p.cy, p.cx)
            rgb[p.out] = crgb[p.chunk]
            if mask is not None:
                mask[p.out] = cmask[p.chunk]
        return rgb, mask

    def write_chunk(
        self, level: int, cy: int, cx: int, rgb: np.ndarray, mask: np.ndarray | None = None
    ) -> None:
        """Write a chunk's pixels (and an edit store's mask), then record it as finished.

        Files are written atomically and fsynced before the record: a chunk recorded as finished
        always has its complete files on disk."""
        if not self.writable:
            raise StoreError(f"{self.path} was opened read-only")
        self._check_current()
        y0, y1, x0, x1 = self.bounds(level, cy, cx)
        h, w, c = y1 - y0, x1 - x0, self.chunk_px
        if rgb.shape != (h, w, 3) or rgb.dtype != np.uint8:
            raise ValueError(
                f"chunk ({cy}, {cx}) of level {level} needs ({h}, {w}, 3) uint8, "
                f"got {rgb.shape} {rgb.dtype}"
            )
        if self.masks != (mask is not None):
            raise ValueError(f"{self.path}: a mask is {'required' if self.masks else 'not used'}")
        full = np.full((c, c, 3), 255, dtype=np.uint8)
        full[:h, :w] = rgb
        parts = [self._codec.encode(full)]
        if mask is not None:
            fmask = np.zeros((c, c), dtype=np.uint8)
            fmask[:h, :w] = mask
            parts.append(self._codec.encode(fmask))
        for name, raw in zip(self._files(level, cy, cx), parts, strict=True):
            atomic_write(name, raw, self.tmp_dir)
        self._done[level].mark(cy, cx, record_of(*parts))

    def damaged_chunks(self, level: int, full: bool = False) -> list[tuple[int, int, str]]:
        """``[(cy, cx, problem), ...]``: finished chunks of ``level`` whose files do not match
        their records; sizes only (one ``stat`` a file) unless ``full`` (CRC-32 too)."""
        self._check_current()
        out = []
        done = self._done[level]
        ys, xs = np.nonzero(done.grid)
        for cy, cx in zip(ys.tolist(), xs.tolist(), strict=True):
            problem = self._check_files(level, cy, cx, done.record(cy, cx), read=full)[1]
            if problem:
                out.append((cy, cx, problem))
        return out

    def clear_chunk(self, level: int, cy: int, cx: int) -> None:
        """Forget a chunk's record (it will be computed again); its files are left as they are."""
        self._done[level].mark(cy, cx, 0)

    def refresh(self) -> None:
        """Reread the completion maps (chunks finished by other processes)."""
        for done in self._done:
            done.refresh()

    # -- attributes -----------------------------------------------------------------------

    def update_attrs(self, change: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
        """Read our attributes from disk, apply ``change`` and write them, all under the lock.

        Concurrent updates from several processes are serialised: none is lost."""
        with self.lock:
            current = read_store_attrs(self.path)
            if current is None:
                raise StoreDamagedError(f"{self.path}: the store's attributes are unreadable")
            updated = change(dict(current))
            self.root.attrs[ATTRS_KEY] = updated
            self.attrs = updated
            return updated

    def reload_attrs(self) -> dict[str, Any]:
        """Reread our attributes from disk (updates made by other processes)."""
        current = read_store_attrs(self.path)
        if current is not None:
            self.attrs = current
        return self.attrs


def _build(
    tmp: Path,
    level_shapes: list[tuple[int, int]],
    chunk_px: int,
    masks: bool,
    meta: dict[str, Any],
    populate: Callable[[zarr.Group], None] | None,
) -> None:
    """Write a new, empty store into ``tmp`` (arrays, lock and lease files, attributes last)."""
    root = zarr.open_group(str(tmp), mode="w")
    for name, spec in _array_specs(level_shapes, chunk_px, masks):
        root.create_array(name, **spec, compressors=[_ZSTD])
    if populate is not None:
        populate(root)
    for name in (_LOCK_FILE, _LEASE_FILE):
        (tmp / name).touch()
    (tmp / TMP_DIR).mkdir()
    root.attrs[ATTRS_KEY] = meta


def _array_specs(
    level_shapes: list[tuple[int, int]], chunk_px: int, masks: bool
) -> list[tuple[str, dict[str, Any]]]:
    """``(name, create_array arguments)`` of a store's arrays: per level the RGB, an edit
    store's mask, and the completion records (one uint64 a chunk, in blocks)."""
    c, out = chunk_px, []
    for k, (h, w) in enumerate(level_shapes):
        out.append((f"levels/{k}", {"shape": (h, w, 3), "chunks": (c, c, 3), "dtype": "uint8",
                    "fill_value": 255, "dimension_names": ["y", "x", "c"]}))  # fmt: skip
        if masks:
            out.append((f"mask/{k}", {"shape": (h, w), "chunks": (c, c), "dtype": "uint8",
                        "fill_value": 0, "dimension_names": ["y", "x"]}))  # fmt: skip
        ny, nx = grid_shape((h, w), c)
        block = (min(_MAP_BLOCK, ny), min(_MAP_BLOCK, nx))
        out.append((f"done/{k}", {"shape": (ny, nx), "chunks": block, "dtype": "uint64",
                    "fill_value": 0}))  # fmt: skip
    return out


def _check_replaceable(path: Path, kind: str, overwrite: bool) -> None:
    if not path.exists():
        return
    if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
        return
    attrs = read_store_attrs(path)
    if attrs is None:
        raise StoreExistsError(
            f"{path} exists and is not a napari-cytosyn store; choose a new path (it will not "
            "be overwritten)"
        )
    if attrs.get("kind") != kind:
        raise StoreExistsError(
            f"{path} holds a napari-cytosyn {attrs.get('kind')!r} store, not a {kind!r} store; "
            "it will not be replaced: choose another path"
        )
    if not overwrite:
        raise StoreExistsError(
            f"{path} already holds a napari-cytosyn store; open it, or pass overwrite=True to "
            "replace it"
        )


def _remove_store(path: Path) -> None:
    """Delete a store of ours that no process has open: move it aside, then delete it."""
    from .phase_cache import flush_caches_under

    flush_caches_under(path)
    resolved = os.fspath(path.resolve())
    for (where, _), store in list(_OPEN.items()):
        if where == resolved:
            store._retire()
    trash = path.with_name(f".{path.name}.deleting-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with exclusive_lease(path):
            os.rename(path, trash)
    except BlockingIOError as exc:
        raise StoreBusyError(
            f"{path} is open in another process (an export, a render or a viewer); it cannot "
            "be replaced until that finishes"
        ) from exc
    shutil.rmtree(trash, ignore_errors=True)
