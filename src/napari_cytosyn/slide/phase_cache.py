"""A zarr-backed phase-state cache for the sampling engine's lazy mode.

The lazy sampler computes a chunk from windows whose intermediate (phase) states are shared with
neighbouring chunks; caching them on disk next to the slide means a neighbour computed tomorrow,
or by another process, reuses today's work. Implements the ``PhaseCache`` interface of
:mod:`napari_cytosyn.sampling` (``get(key) -> Tensor | None``, ``put(key, tensor)``).

Each entry is one small zarr array named after its key. It is written under a temporary name and
renamed into place, so a reader (or a process that was killed mid-write) never sees half an
entry. A bounded in-memory LRU sits in front of the disk.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import zarr

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
        self._memory_bytes = int(memory_mb * 2**20)
        self._lru: OrderedDict[str, Any] = OrderedDict()
        self._lru_bytes = 0
        self._guard = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.disk_reads = 0

    def __contains__(self, key: Any) -> bool:
        name = key_name(key)
        return name in self._lru or (self.path / name / "zarr.json").is_file()

    def get(self, key: Any):
        """The tensor stored under ``key``, or ``None``."""
        import torch

        name = key_name(key)
        with self._guard:
            if name in self._lru:
                self._lru.move_to_end(name)
                self.hits += 1
                return self._lru[name].clone()
        entry = self.path / name
        if not (entry / "zarr.json").is_file():
            with self._guard:
                self.misses += 1
            return None
        arr = zarr.open_array(str(entry), mode="r")
        data = np.asarray(arr[...])
        tensor = torch.from_numpy(data)
        dtype = arr.attrs.get("torch_dtype")
        if dtype in _UPCAST:
            tensor = tensor.to(getattr(torch, dtype.split(".", 1)[1]))
        with self._guard:
            self.disk_reads += 1
            self.hits += 1
        self._remember(name, tensor)
        return tensor.clone()

    def put(self, key: Any, tensor: Any) -> None:
        """Store ``tensor`` (any shape and dtype) under ``key``; an existing entry is kept."""
        import torch

        name = key_name(key)
        entry = self.path / name
        t = tensor.detach().cpu() if isinstance(tensor, torch.Tensor) else torch.as_tensor(tensor)
        self._remember(name, t.clone())
        if (entry / "zarr.json").is_file():
            return
        dtype = str(t.dtype)
        data = t.to(torch.float32).numpy() if dtype in _UPCAST else t.numpy()
        tmp = self.path / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
        try:
            zarr.create_array(
                str(tmp),
                data=np.ascontiguousarray(data),
                chunks=data.shape or "auto",
                attributes={"torch_dtype": dtype},
            )
            try:
                os.rename(tmp, entry)
            except OSError:
                if not (entry / "zarr.json").is_file():
                    raise
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
        """Drop the in-memory copies (the disk entries stay)."""
        with self._guard:
            self._lru.clear()
            self._lru_bytes = 0

    def __len__(self) -> int:
        return sum(1 for p in self.path.iterdir() if p.is_dir() and not p.name.startswith("."))
