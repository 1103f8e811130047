"""Files of a store: atomic fsynced writes, chunk records, locks and leases, error types.

A chunk *record* is one uint64, ``size << 32 | crc32`` of the chunk's file bytes (edit stores:
the RGB file then the mask file), ``0`` for a chunk never finished; a file whose size or CRC
differs from its record is damaged.

Locks (POSIX ``flock``; elsewhere only the in-process part applies): ``cytosyn.lock``,
exclusive, for every read-modify-write of records and attributes; ``cytosyn.lease``, shared by
every process with the store open, exclusive for whoever deletes or replaces the store (an
``--overwrite`` of a store in use fails instead of pulling files from under a reader).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
import uuid
import zlib
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows keeps the in-process lock only
    fcntl = None

TMP_DIR = ".tmp"  # inside a store: files being written, named ``<pid>-<random>``
_PID_NAME = re.compile(r"^(?:\.[^/]*?[.-])?(\d+)-[0-9a-f]+")


def stored_json(value: Any) -> Any:
    """``value`` as a store attribute holds it: a JSON round trip (tuples become lists, what
    JSON cannot hold becomes its ``str``), so a recipe compares equal to its stored copy."""
    import json

    return json.loads(json.dumps(value, default=str))


class IncompleteSlideError(ValueError):
    """A synthetic slide still has chunks that were never rendered (export refuses it)."""


class StoreError(ValueError):
    """A store path or its contents cannot be used as asked."""


class StoreExistsError(StoreError, FileExistsError):
    """The path already holds a store (or other data) and overwriting was not allowed."""


class StoreMismatchError(StoreError):
    """The store was written with a different model, settings or geometry than requested."""


class StoreBusyError(StoreError):
    """The store is open in another process and cannot be replaced or deleted now."""


class StoreDamagedError(StoreError):
    """Part of the store (metadata, completion map) is unreadable or inconsistent."""


class ChunkDamagedError(StoreError):
    """A chunk recorded as finished is missing or differs from its record."""

    def __init__(self, message: str, level: int, cy: int, cx: int) -> None:
        super().__init__(message)
        self.level, self.cy, self.cx = level, cy, cx


def record_of(*parts: bytes) -> int:
    """The record of a chunk whose file(s) hold ``parts``: ``size << 32 | crc32``."""
    crc, size = 0, 0
    for part in parts:
        crc = zlib.crc32(part, crc)
        size += len(part)
    if size == 0 or size >= 2**31:
        raise ValueError(f"a chunk file of {size} bytes cannot be recorded")
    return (size << 32) | crc


def record_size(record: int) -> int:
    """The total file size a record stands for (bytes)."""
    return int(record) >> 32


def atomic_write(path: str, data: bytes, tmp_dir: str) -> None:
    """Write ``data`` to ``path``: a temporary file in ``tmp_dir``, fsynced, renamed into place.

    A reader (or a process killed mid-write) sees the old file or the complete new one.
    """
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{tmp_dir}/{os.getpid()}-{uuid.uuid4().hex[:12]}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileNotFoundError:
        os.makedirs(tmp_dir, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def pid_alive(pid: int) -> bool:
    """True when a process with ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def writer_pid(name: str) -> int | None:
    """The PID in a temporary name ``<pid>-<hex>...``, or ``None``."""
    m = _PID_NAME.match(name)
    return int(m.group(1)) if m else None


def remove_path(path: Path) -> None:
    """Remove a file, link or folder tree; what cannot be removed stays (no error)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            path.unlink()


def remove_dead_temporaries(directory: Path, prefix: str = "") -> list[Path]:
    """Remove entries of ``directory`` named ``<prefix><pid>-<hex>...`` whose process is gone.

    Temporary files and folders carry the writer's PID; one whose process no longer runs was
    left by a job killed mid-write and is never renamed into place.
    """
    removed: list[Path] = []
    try:
        entries = list(directory.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        m = _PID_NAME.match(entry.name[len(prefix) :])
        if m is None or pid_alive(int(m.group(1))):
            continue
        remove_path(entry)
        removed.append(entry)
    return removed


class StoreLock:
    """A re-entrant thread lock plus an exclusive ``flock`` shared by all processes."""

    def __init__(self, path: Path, writable: bool) -> None:
        self._thread_lock = threading.RLock()
        self._path = path
        self._writable = writable
        self._depth = 0
        self._fh = None

    def __enter__(self) -> StoreLock:
        self._thread_lock.acquire()
        try:
            if self._depth == 0 and fcntl is not None:
                self._fh = self._open()
                if self._fh is not None:
                    fcntl.flock(self._fh.fileno(), fcntl.LOCK_EX)
        except BaseException:
            self._thread_lock.release()
            raise
        self._depth += 1
        return self

    def _open(self):
        # Readers lock too (they wait for a writer between a chunk and its record); a store on
        # a read-only medium has no writers to wait for.
        try:
            return open(self._path, "a+b" if self._writable else "rb")
        except OSError:
            return None

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None
        self._thread_lock.release()


class Lease:
    """A shared lock on a store's lease file, held while the store is open in this process.

    :meth:`acquire` returns only once the lease file it locked is still the one at the store's
    path (a store replaced meanwhile is leased afresh), so what is read after it is the store
    that is leased.
    """

    def __init__(self, path: Path, writable: bool) -> None:
        self.path = path
        self._fd: int | None = None
        self._writable = writable

    def acquire(self) -> None:
        if fcntl is None:
            return
        for _ in range(100):
            flags = os.O_RDWR | os.O_CREAT if self._writable else os.O_RDONLY
            try:
                fd = os.open(self.path, flags, 0o644)
            except OSError:
                return  # a read-only copy without a lease file: nobody can replace it
            fcntl.flock(fd, fcntl.LOCK_SH)
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except OSError:
                same = False
            if same:
                self._fd = fd
                return
            os.close(fd)
        raise RuntimeError(f"{self.path.parent} keeps being replaced; cannot open it")

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        self.release()


@contextlib.contextmanager
def exclusive_lease(store: Path):
    """Hold the store's lease exclusively (no process has it open) or raise ``BlockingIOError``."""
    if fcntl is None or not (store / "cytosyn.lease").exists():
        yield
        return
    fd = os.open(store / "cytosyn.lease", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)
