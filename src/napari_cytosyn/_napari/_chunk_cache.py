"""Decoded chunks of a synthetic slide, kept in memory for the layer napari slices.

napari slices a layer on the GUI thread, and re-slices the whole view each time a chunk lands
or the camera moves: reading 20-30 chunk files and decoding them there costs 7-20 ms of every
refresh on a loaded 2-core machine. Chunks of a synthetic slide never change once finished, so
their decoded pixels can be kept: the thread that wrote a chunk decodes it into the cache
(:meth:`ChunkCache.prefetch`, off the GUI thread), and the layer's reads copy from memory.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import Any

import numpy as np

ChunkKey = tuple[int, int, int]  # (level, cy, cx)

DEFAULT_CACHE_MB = 128  # 650 chunks of 256 px: a few screens of every level


class ChunkCache:
    """Least-recently-used decoded chunks ``(h, w, 3)`` uint8 of one slide, bounded in bytes
    (``max_bytes``; default ``DEFAULT_CACHE_MB``; 0 keeps nothing: every read decodes).

    Thread-safe: writer threads :meth:`prefetch`, the GUI thread :meth:`get`. Arrays are stored
    read-only and handed out as they are (callers copy what they keep).
    """

    def __init__(self, store: Any, max_bytes: int | None = None) -> None:
        if max_bytes is None:
            max_bytes = DEFAULT_CACHE_MB * 2**20
        if max_bytes < 0:
            raise ValueError(f"a chunk cache needs max_bytes >= 0, got {max_bytes}")
        self.store = store
        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self.hits = 0
        self.misses = 0
        self._chunks: OrderedDict[ChunkKey, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._chunks)

    def get(self, level: int, cy: int, cx: int) -> np.ndarray:
        """Pixels of finished chunk ``(level, cy, cx)``, decoded from the store on a miss."""
        key = (level, cy, cx)
        with self._lock:
            chunk = self._chunks.get(key)
            if chunk is not None:
                self._chunks.move_to_end(key)
                self.hits += 1
                return chunk
            self.misses += 1
        chunk = self.store.read_chunk(level, cy, cx, copy=False)
        self._put(key, chunk)
        return chunk

    def prefetch(self, level: int, cy: int, cx: int) -> None:
        """Decode a chunk that was just finished into the cache (call from the writer thread)."""
        if self.max_bytes:
            self._put((level, cy, cx), self.store.read_chunk(level, cy, cx, copy=False))

    def _put(self, key: ChunkKey, chunk: np.ndarray) -> None:
        if chunk.nbytes > self.max_bytes:
            return
        chunk.flags.writeable = False
        with self._lock:
            old = self._chunks.pop(key, None)
            if old is not None:
                self.nbytes -= old.nbytes
            self._chunks[key] = chunk
            self.nbytes += chunk.nbytes
            while self.nbytes > self.max_bytes:
                _, dropped = self._chunks.popitem(last=False)
                self.nbytes -= dropped.nbytes


_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def chunk_cache(slide: Any) -> ChunkCache:
    """The one :class:`ChunkCache` of a ``SyntheticSlide`` (made on first use)."""
    with _CACHES_LOCK:
        cache = _CACHES.get(slide)
        if cache is None:
            cache = _CACHES[slide] = ChunkCache(slide.store)
        return cache
