"""A zarr-backed phase-state cache for the sampling engine's lazy mode.

The lazy sampler computes a chunk from windows whose intermediate (phase) states are shared with
neighbouring chunks; caching them on disk next to the slide means a neighbour computed tomorrow,
or by another process, reuses today's work. Implements the ``PhaseCache`` interface of
:mod:`napari_cytosyn.sampling` (``get(key) -> Tensor | None``, ``put(key, tensor)``).

Each entry is one small zarr array named after its key, with the CRC-32 and size of its chunk
in its metadata. It is written under a temporary name (carrying the writer's PID) and renamed
into place, so a reader never sees half an entry; an entry that fails its checksum, or cannot
be read at all, is a cache miss (removed, then recomputed and written again), never wrong
pixels. Temporary entries of writers that died are removed when a cache is opened.

A bounded in-memory LRU sits in front of the disk, and disk writes happen behind the
caller's back in a writer thread (creating a zarr array costs ~15 ms, a chunk needs dozens of
states): the sampler never waits for the disk, and an entry lost to a crash is simply
recomputed, bit-identically.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import threading
import uuid
import warnings
import weakref
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import zarr

_LIVE: weakref.WeakSet[ZarrPhaseCache] = weakref.WeakSet()
_SAFE = re.compile(r"[^A-Za-z0-9_.=-]")
# zarr has no bfloat16; such tensors are stored as float32 and cast back on read.
_UPCAST = {"torch.bfloat16": "float32"}


def key_name(key: Any) -> str:
    """A file-system-safe, unique name for a cache key (a string or a tuple of scalars)."""
    parts = key if isinstance(key, tuple | list) else (key,)
    text = "__".join(_SAFE.sub(lambda m: f"%{ord(m.group()):02x}", str(p)) for p in parts)
    if not text or text.startswith("."):
        text = "k" + text
    return text


class ZarrPhaseCache:
    """Phase states in a directory of zarr arrays, with an in-memory LRU of ``memory_mb``.

    Thread safe; safe for several processes sharing the directory (entries are written
    atomically; two processes writing one key write the same bits, the first rename wins).
    """

    def __init__(self, path: str | os.PathLike, memory_mb: float = 256.0) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        if not (self.path / "zarr.json").exists():
            zarr.open_group(str(self.path), mode="a")
        from .store_io import remove_dead_temporaries

        remove_dead_temporaries(self.path, prefix=".tmp-")
        # Identity of the directory: a cache whose directory was replaced (store overwritten)
        # must not write stale states into the new one.
        self._dir_id = _dir_id(self.path)
        self._memory_bytes = int(memory_mb * 2**20)
        self._lru: OrderedDict[str, Any] = OrderedDict()
        self._lru_bytes = 0
        self._guard = threading.Lock()
        self._pending: dict[str, Any] = {}
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        self.hits = 0
        self.misses = 0
        self.disk_reads = 0
        self.disk_writes = 0
        self.write_errors = 0
        self.damaged = 0  # entries found damaged on disk (treated as misses)
        _LIVE.add(self)

    def __contains__(self, key: Any) -> bool:
        name = key_name(key)
        with self._guard:
            if name in self._lru or name in self._pending:
                return True
        return (self.path / name / "zarr.json").is_file()

    def get(self, key: Any):
        """The tensor stored under ``key``, or ``None``."""
        name = key_name(key)
        with self._guard:
            if name in self._lru:
                self._lru.move_to_end(name)
                self.hits += 1
                return self._lru[name].clone()
            if name in self._pending:
                self.hits += 1
                return self._pending[name].clone()
        entry = self.path / name
        if not (entry / "zarr.json").is_file():
            with self._guard:
                self.misses += 1
            return None
        try:
            tensor = _read_entry(entry)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self._discard(entry, exc)
            return None
        with self._guard:
            self.disk_reads += 1
            self.hits += 1
        self._remember(name, tensor)
        return tensor.clone()

    def _discard(self, entry: Path, exc: Exception) -> None:
        """A damaged entry is a miss: move it out of the way so the state is written again."""
        with self._guard:
            self.misses += 1
            self.damaged += 1
        warnings.warn(
            f"phase cache {self.path}: entry {entry.name} is damaged ({exc}); computing it again",
            RuntimeWarning,
            stacklevel=3,
        )
        trash = self.path / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-damaged"
        try:
            os.rename(entry, trash)
        except OSError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def put(self, key: Any, tensor: Any) -> None:
        """Store ``tensor`` (any shape and dtype) under ``key``; an existing entry is kept.

        Returns at once; the disk write happens in the writer thread (see :meth:`flush`).
        """
        import torch

        name = key_name(key)
        t = tensor.detach().cpu() if isinstance(tensor, torch.Tensor) else torch.as_tensor(tensor)
        t = t.clone()
        self._remember(name, t)
        with self._guard:
            if name in self._pending or (self.path / name / "zarr.json").is_file():
                return
            self._pending[name] = t
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(
                    target=self._write_loop, name="cytosyn-phase-cache", daemon=True
                )
                self._writer.start()
        self._queue.put(name)

    def flush(self) -> None:
        """Block until every entry put so far is on disk."""
        self._queue.join()

    def _write_loop(self) -> None:
        while True:
            name = self._queue.get()
            try:
                with self._guard:
                    tensor = self._pending.get(name)
                if tensor is not None:
                    self._write(name, tensor)
            except Exception as exc:  # a cache that cannot write still serves from memory
                self.write_errors += 1
                if self.write_errors == 1:
                    warnings.warn(
                        f"phase cache {self.path}: writing {name} failed ({exc}); states will "
                        "be recomputed instead of reused",
                        RuntimeWarning,
                        stacklevel=1,
                    )
            finally:
                with self._guard:
                    self._pending.pop(name, None)
                self._queue.task_done()

    def _write(self, name: str, t: Any) -> None:
        import torch

        entry = self.path / name
        if _dir_id(self.path) != self._dir_id or (entry / "zarr.json").is_file():
            return
        dtype = str(t.dtype)
        data = np.require(t.to(torch.float32).numpy() if dtype in _UPCAST else t.numpy(), None, "C")
        tmp = self.path / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-{name}"
        try:
            _write_entry(tmp, data, dtype)
            try:
                os.rename(tmp, entry)
            except OSError:
                if not (entry / "zarr.json").is_file():
                    raise
            self.disk_writes += 1
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _remember(self, name: str, tensor: Any) -> None:
        size = tensor.element_size() * tensor.nelement()
        if size > self._memory_bytes:
            return
        with self._guard:
            if name in self._lru:
                self._lru.move_to_end(name)
                return
            self._lru[name] = tensor
            self._lru_bytes += size
            while self._lru_bytes > self._memory_bytes:
                _, old = self._lru.popitem(last=False)
                self._lru_bytes -= old.element_size() * old.nelement()

    def clear_memory(self) -> None:
        """Write pending entries, then drop the in-memory copies (the disk entries stay)."""
        self.flush()
        with self._guard:
            self._lru.clear()
            self._lru_bytes = 0

    def __len__(self) -> int:
        """Number of entries on disk (call :meth:`flush` first to count pending ones)."""
        return sum(1 for p in self.path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _dir_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def flush_caches_under(path: str | os.PathLike) -> None:
    """Finish pending writes of every cache of this process inside ``path`` (before deleting it)."""
    root = Path(path).resolve()
    for cache in list(_LIVE):
        if cache.path.resolve().is_relative_to(root):
            cache.flush()


_ZSTD_CODECS = [
    {"name": "bytes", "configuration": {"endian": "little"}},
    {"name": "zstd", "configuration": {"level": 0, "checksum": False}},
]


def _chunk_key(ndim: int) -> str:
    # "v2" key encoding: the one chunk sits next to zarr.json, no nested folders to create.
    return ".".join(["0"] * max(1, ndim))


def _write_entry(directory: Path, data: np.ndarray, torch_dtype: str) -> None:
    """Write ``data`` as a single-chunk zarr v3 array (metadata + one zstd chunk) directly.

    Going through ``zarr.create_array`` costs ~15 ms per entry, 50x the encoding; a chunk needs
    hundreds of states, and on a small CPU those milliseconds are taken from the sampler.
    """
    from numcodecs import Zstd

    data = data.astype(data.dtype.newbyteorder("<"), copy=False)
    meta = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": list(data.shape),
        "data_type": data.dtype.name,
        "chunk_grid": {
            "name": "regular",
            "configuration": {"chunk_shape": [max(1, n) for n in data.shape]},
        },
        "chunk_key_encoding": {"name": "v2", "configuration": {"separator": "."}},
        "fill_value": 0,
        "codecs": _ZSTD_CODECS,
        "attributes": {"torch_dtype": torch_dtype},
    }
    raw = Zstd(level=0).encode(data.tobytes())
    meta["attributes"].update(crc32=zlib.crc32(raw), nbytes=len(raw))
    directory.mkdir(parents=True)
    chunk = directory / _chunk_key(data.ndim)
    chunk.write_bytes(raw)
    (directory / "zarr.json").write_text(json.dumps(meta))


def _read_entry(directory: Path):
    """Read an entry written by :func:`_write_entry`, verified against its CRC-32 and size.

    Raises ``ValueError`` (or ``OSError``) for a damaged or foreign entry."""
    import torch

    meta = json.loads((directory / "zarr.json").read_text())
    shape = tuple(meta["shape"])
    attrs = meta.get("attributes", {})
    dtype = attrs.get("torch_dtype")
    chunk = directory / _chunk_key(len(shape))
    if meta.get("codecs") != _ZSTD_CODECS or "crc32" not in attrs:
        raise ValueError("not an entry written by this cache")
    from numcodecs import Zstd

    raw = chunk.read_bytes()
    if len(raw) != attrs["nbytes"] or zlib.crc32(raw) != attrs["crc32"]:
        raise ValueError("its checksum differs from its record")
    np_dtype = np.dtype(meta["data_type"]).newbyteorder("<")
    data = np.frombuffer(Zstd().decode(raw), dtype=np_dtype)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"holds {data.size} values, not {int(np.prod(shape))}")
    data = data.reshape(shape).astype(np.dtype(meta["data_type"]), copy=True)
    tensor = torch.from_numpy(data)
    if dtype in _UPCAST:
        tensor = tensor.to(getattr(torch, dtype.split(".", 1)[1]))
    return tensor
