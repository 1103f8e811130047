"""A zarr-backed phase-state cache for the sampling engine's lazy mode.

The lazy sampler computes a chunk from windows whose intermediate (phase) states neighbouring
chunks share; cached on disk next to the slide, they are reused by a neighbour computed later
or by another process. Implements ``PhaseCache`` (``get(key) -> Tensor | None``,
``put(key, tensor)``) for keys ``(phase, cell_y, cell_x)``.

Layout: phase ``p`` is the array ``phase{p}`` of shape ``(2**21, 2**21, *state_shape)``, one
chunk per cell (cell ``(i, j)`` at ``(i + 2**20, j + 2**20)``: shifted lattices have negative
cells), float32 (bfloat16 states cast back on read), zstd + CRC-32C, fill value NaN (never
written: a miss). Chunks go through zarr's store (temporary file renamed into place); a chunk
failing its checksum, or an unreadable array, is a miss (removed, recomputed), never wrong
pixels. No fsync: a state lost to a crash is recomputed bit-identically.

A bounded LRU sits in front of the disk; writes happen in a writer thread, batched into one
call of zarr's store. Reads and writes run the array's own codecs synchronously (zarr's
``array[i, j]`` costs a trip to its event loop thread, ~10x the decode).
"""

from __future__ import annotations

import contextlib
import os
import queue
import shutil
import threading
import uuid
import warnings
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import zarr

_LIVE: weakref.WeakSet[ZarrPhaseCache] = weakref.WeakSet()
# zarr has no bfloat16; such tensors are stored as float32 and cast back on read.
_UPCAST = {"torch.bfloat16"}
#: Cells on each side of the origin a phase array holds (a cell is a window stride, >= 2 latents).
CELL_OFFSET = 2**20
#: States the writer thread stores in one call of zarr's store (one trip to its event loop).
_WRITE_BATCH = 64


def key_name(key: Any) -> str:
    """The array and chunk of a key ``(phase, cell_y, cell_x)``, as ``"phase{p}[i, j]"``."""
    phase, i, j = _check_key(key)
    return f"phase{phase}[{i}, {j}]"


def _check_key(key: Any) -> tuple[int, int, int]:
    if not (isinstance(key, tuple) and len(key) == 3 and all(isinstance(k, int) for k in key)):
        raise TypeError(f"phase cache keys are (phase, cell_y, cell_x) ints, got {key!r}")
    phase, i, j = key
    if phase < 0 or not (-CELL_OFFSET <= i < CELL_OFFSET and -CELL_OFFSET <= j < CELL_OFFSET):
        raise ValueError(f"phase cache key {key!r} is outside the cache's cell range")
    return key


class ZarrPhaseCache:
    """Phase states in a zarr group, one array per phase, behind an LRU of ``memory_mb``.
    Thread safe, and process safe (chunks replaced atomically; one key is the same bits)."""

    def __init__(self, path: str | os.PathLike, memory_mb: float = 256.0) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._group = zarr.open_group(str(self.path), mode="a")
        # Identity of the directory: a cache whose directory was replaced (store overwritten)
        # must not write stale states into the new one.
        self._dir_id = _dir_id(self.path)
        self._memory_bytes = int(memory_mb * 2**20)
        self._lru: OrderedDict[tuple[int, int, int], Any] = OrderedDict()
        self._lru_bytes = 0
        self._guard = threading.Lock()
        self._arrays: dict[int, Any] = {}
        self._arrays_lock = threading.Lock()
        self._pending: dict[tuple[int, int, int], Any] = {}
        self._queue: queue.Queue[tuple[int, int, int]] = queue.Queue()
        self._writer: threading.Thread | None = None
        self.hits = 0
        self.misses = 0
        self.disk_reads = 0
        self.write_errors = 0
        self.damaged = 0  # chunks or arrays found damaged on disk (treated as misses)
        _LIVE.add(self)

    # -- the phase arrays --------------------------------------------------------------------

    def _array(self, phase: int, create_like: Any = None) -> Any:
        """The zarr array of ``phase`` (``None`` when absent); created, shaped like the state
        ``create_like`` (a CPU tensor), when absent and one is given."""
        arr = self._arrays.get(phase)
        if arr is not None:
            return arr
        name = f"phase{phase}"
        if create_like is None and not (self.path / name / "zarr.json").is_file():
            return None
        with self._arrays_lock:
            arr = self._arrays.get(phase)
            if arr is not None:
                return arr
            try:
                arr = zarr.open_array(str(self.path / name), mode="r+")
            except FileNotFoundError:
                if create_like is None:
                    return None
                arr = self._create(name, create_like)
            except Exception as exc:  # unreadable metadata: the whole phase is a miss
                self._discard_array(name, exc)
                if create_like is None:
                    return None
                arr = self._create(name, create_like)
            self._arrays[phase] = arr
            return arr

    def _create(self, name: str, like: Any) -> Any:
        from zarr.codecs import BytesCodec, Crc32cCodec, ZstdCodec

        n = 2 * CELL_OFFSET
        shape = tuple(int(d) for d in like.shape)
        try:
            return self._group.create_array(
                name,
                shape=(n, n, *shape),
                chunks=(1, 1, *[max(1, d) for d in shape]),
                dtype="float32",
                fill_value=np.nan,
                serializer=BytesCodec(),
                compressors=[ZstdCodec(level=0), Crc32cCodec()],
                chunk_key_encoding={"name": "v2", "separator": "."},
                attributes={"torch_dtype": str(like.dtype)},
            )
        except zarr.errors.ContainsArrayError:  # another process made it first
            return zarr.open_array(str(self.path / name), mode="r+")

    def _discard_array(self, name: str, exc: Exception) -> None:
        self._warn_damaged(name, exc)
        trash = self.path / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}-damaged"
        try:
            os.rename(self.path / name, trash)
        except OSError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def _warn_damaged(self, what: str, exc: Exception) -> None:
        with self._guard:
            self.damaged += 1
        warnings.warn(
            f"phase cache {self.path}: {what} is damaged ({exc}); computing it again",
            RuntimeWarning,
            stacklevel=4,
        )

    def _stored(self, key: tuple[int, int, int]) -> bool:
        arr = self._array(key[0])
        if arr is None:
            return False
        # A stat of the chunk's file: the planner asks this for every cell of a cone, and zarr's
        # store.exists costs 30x more (0.3 ms).
        return os.path.exists(self.path / f"phase{key[0]}" / _chunk_key(arr, key))

    # -- PhaseCache -------------------------------------------------------------------------

    def __contains__(self, key: Any) -> bool:
        key = _check_key(key)
        with self._guard:
            if key in self._lru or key in self._pending:
                return True
        return self._stored(key)

    def get(self, key: Any):
        """The tensor stored under ``key`` ``(phase, cell_y, cell_x)``, or ``None``."""
        key = _check_key(key)
        with self._guard:
            if key in self._lru:
                self._lru.move_to_end(key)
                self.hits += 1
                return self._lru[key].clone()
            if key in self._pending:
                self.hits += 1
                return self._pending[key].clone()
        tensor = self._read(key)
        with self._guard:
            if tensor is None:
                self.misses += 1
                return None
            self.disk_reads += 1
            self.hits += 1
        self._remember(key, tensor)
        return tensor.clone()

    def _read(self, key: tuple[int, int, int]):
        """The state on disk, or ``None`` (absent, removed meanwhile, damaged: then removed)."""
        import torch

        arr = self._array(key[0])
        if arr is None or not self._stored(key):
            return None
        try:
            data = self._decode(arr, key)
        except FileNotFoundError:  # removed meanwhile (a repair, another process's discard)
            return None
        except Exception as exc:  # checksum or decoding failed
            self._warn_damaged(f"state {key_name(key)}", exc)
            self._delete_chunk(arr, key)
            return None
        if data.size and np.isnan(data.flat[0]):  # never written: the fill value
            return None
        tensor = torch.from_numpy(np.require(data, requirements=["C", "W"]))
        dtype = arr.attrs.get("torch_dtype")
        if dtype in _UPCAST:
            tensor = tensor.to(getattr(torch, dtype.split(".", 1)[1]))
        return tensor

    def _decode(self, arr: Any, key: tuple[int, int, int]) -> np.ndarray:
        """The state ``(C, W, W)`` float32 of ``key``: the chunk file's bytes through the
        array's own codecs (CRC-32C check, zstd, bytes), synchronously."""
        from zarr.core.buffer import default_buffer_prototype

        prototype = default_buffer_prototype()
        codecs = list(arr.metadata.codecs)
        path = self.path / f"phase{key[0]}" / _chunk_key(arr, key)
        buf = prototype.buffer.from_bytes(path.read_bytes())
        spec = arr.metadata.get_chunk_spec(_coords(arr, key), arr._async_array.config, prototype)
        for codec in reversed(codecs[1:]):
            buf = codec._decode_sync(buf, spec)
        return codecs[0]._decode_sync(buf, spec).as_numpy_array().reshape(arr.chunks[2:])

    def _delete_chunk(self, arr: Any, key: tuple[int, int, int]) -> None:
        from zarr.core.sync import sync

        with contextlib.suppress(OSError):
            sync(arr.store.delete(_chunk_path(arr, key)))

    def put(self, key: Any, tensor: Any) -> None:
        """Store ``tensor`` ``(C, W, W)`` under ``key``; an existing entry is kept.

        Returns at once; the disk write happens in the writer thread (see :meth:`flush`).
        """
        import torch

        key = _check_key(key)
        t = tensor.detach().cpu() if isinstance(tensor, torch.Tensor) else torch.as_tensor(tensor)
        t = t.clone()
        self._remember(key, t)
        with self._guard:
            if key in self._pending:
                return
            self._pending[key] = t
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(
                    target=self._write_loop, name="cytosyn-phase-cache", daemon=True
                )
                self._writer.start()
        self._queue.put(key)

    def flush(self) -> None:
        """Block until every entry put so far is on disk."""
        self._queue.join()

    def _write_loop(self) -> None:
        while True:
            keys = [self._queue.get()]
            while len(keys) < _WRITE_BATCH:
                try:
                    keys.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                with self._guard:
                    items = [(k, self._pending.get(k)) for k in keys]
                self._write([(k, t) for k, t in items if t is not None])
            except Exception as exc:  # a cache that cannot write still serves from memory
                self.write_errors += 1
                if self.write_errors == 1:
                    warnings.warn(
                        f"phase cache {self.path}: writing {len(keys)} states failed ({exc}); "
                        "states will be recomputed instead of reused",
                        RuntimeWarning,
                        stacklevel=1,
                    )
            finally:
                with self._guard:
                    for key in keys:
                        self._pending.pop(key, None)
                for _ in keys:
                    self._queue.task_done()

    def _write(self, items: list[tuple[tuple[int, int, int], Any]]) -> None:
        """Write states through zarr: each encoded by its array's codecs, then all stored in
        one call of the store (zarr writes each chunk to a temporary file and renames it)."""
        import asyncio

        import torch
        from zarr.core.sync import sync

        if _dir_id(self.path) != self._dir_id:
            return
        chunks = []
        for key, t in items:
            if self._stored(key):
                continue
            arr = self._array(key[0], create_like=t)
            chunks.append((arr, _chunk_path(arr, key), _encode(arr, key, t.to(torch.float32))))

        async def store_all() -> None:
            await asyncio.gather(*(arr.store.set(path, buf) for arr, path, buf in chunks))

        if chunks:
            sync(store_all())

    def _remember(self, key: tuple[int, int, int], tensor: Any) -> None:
        size = tensor.element_size() * tensor.nelement()
        if size > self._memory_bytes:
            return
        with self._guard:
            if key in self._lru:
                self._lru.move_to_end(key)
                return
            self._lru[key] = tensor
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

    def _phase_arrays(self) -> list[tuple[str, Any]]:
        """``(name, array or the exception opening it raised)`` of every phase on disk."""
        out = []
        for entry in sorted(self.path.glob("phase*")):
            try:
                out.append((entry.name, zarr.open_array(str(entry), mode="r")))
            except Exception as exc:
                out.append((entry.name, exc))
        return out

    def stored_keys(self) -> list[tuple[int, int, int]]:
        """Keys of the states on disk (call :meth:`flush` first to include pending ones)."""
        from zarr.core.sync import sync

        keys = []
        for name, arr in self._phase_arrays():
            if isinstance(arr, Exception):
                continue
            phase, prefix = int(name[len("phase") :]), _prefix(arr)
            for chunk in sync(_list(arr.store, prefix)):
                coords = _chunk_coords(arr, chunk[len(prefix) :])
                if coords is not None:
                    keys.append((phase, coords[0] - CELL_OFFSET, coords[1] - CELL_OFFSET))
        return keys

    def verify(self, repair: bool = False) -> list[str]:
        """Read every stored state (checksums); returns what is damaged, removed with
        ``repair``."""
        problems = []
        for name, arr in self._phase_arrays():
            if isinstance(arr, Exception):
                problems.append(f"phase cache array {name} is damaged ({arr})")
                if repair:
                    shutil.rmtree(self.path / name, ignore_errors=True)
                    self._arrays.pop(int(name[len("phase") :]), None)
        for key in self.stored_keys():
            arr = self._array(key[0])
            try:
                arr[key[1] + CELL_OFFSET, key[2] + CELL_OFFSET]
            except Exception as exc:
                problems.append(f"phase cache state {key_name(key)} is damaged ({exc})")
                if repair:
                    self._delete_chunk(arr, key)
        return problems

    def __len__(self) -> int:
        """Number of states on disk (call :meth:`flush` first to count pending ones)."""
        return len(self.stored_keys())


def _encode(arr: Any, key: tuple[int, int, int], state: Any) -> Any:
    """The chunk of ``key`` holding ``state`` (a float32 tensor), encoded by the array's own
    codecs (bytes, zstd, CRC-32C) synchronously."""
    from zarr.core.buffer import default_buffer_prototype

    codecs = list(arr.metadata.codecs)
    prototype = default_buffer_prototype()
    spec = arr.metadata.get_chunk_spec(_coords(arr, key), arr._async_array.config, prototype)
    data = np.ascontiguousarray(state.numpy()).reshape(spec.shape)
    buf = codecs[0]._encode_sync(prototype.nd_buffer.from_numpy_array(data), spec)
    for codec in codecs[1:]:
        buf = codec._encode_sync(buf, spec)
    return buf


def _coords(arr: Any, key: tuple[int, int, int]) -> tuple[int, ...]:
    """The chunk coordinates of ``key`` in its phase array."""
    return (key[1] + CELL_OFFSET, key[2] + CELL_OFFSET, *([0] * (arr.ndim - 2)))


def _chunk_key(arr: Any, key: tuple[int, int, int]) -> str:
    return arr.metadata.encode_chunk_key(_coords(arr, key))


def _chunk_path(arr: Any, key: tuple[int, int, int]) -> str:
    return _prefix(arr) + _chunk_key(arr, key)


def _prefix(arr: Any) -> str:
    """The array's keys' prefix in its store ("" when the store is rooted at the array)."""
    return f"{arr.path}/" if arr.path else ""


def _chunk_coords(arr: Any, chunk_key: str) -> tuple[int, ...] | None:
    if chunk_key == "zarr.json" or chunk_key.endswith(".partial"):
        return None
    return tuple(arr.metadata.chunk_key_encoding.decode_chunk_key(chunk_key))


async def _list(store: Any, prefix: str) -> list[str]:
    return [k async for k in store.list_prefix(prefix)]


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
