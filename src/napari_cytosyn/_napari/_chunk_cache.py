"""Decoded chunks of a synthetic slide, kept in memory for the layer napari slices, and
provisional coarse chunks built from whatever finer chunks exist.

napari slices a layer on the GUI thread, and re-slices the whole view each time a chunk lands
or the camera moves: reading 20-30 chunk files and decoding them there costs 7-20 ms of every
refresh on a loaded 2-core machine. Chunks of a synthetic slide never change once finished, so
their decoded pixels can be kept: the thread that wrote a chunk decodes it into the cache
(:meth:`ChunkCache.prefetch`, off the GUI thread), and the layer's reads copy from memory.

A coarse chunk is stored only once all the chunks under it are finished. Until then a zoomed-out
view shows a *provisional* chunk (:meth:`ChunkCache.provisional`): the area average of the
finished pixels under it, with a mask of which of its pixels are known. Provisional chunks live
in this cache only, never in the store, so an export can never take one for a finished chunk;
they are rebuilt by the writing thread as finer chunks land (:meth:`ChunkCache.landed`).
Chunks being generated may also have a progressive preview (``ChunkCache.previews``, see
:mod:`._preview`), dropped when they land.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import Any

import numpy as np

ChunkKey = tuple[int, int, int]  # (level, cy, cx)
Partial = tuple[np.ndarray, np.ndarray]  # rgb (h, w, 3) uint8, known (h, w) bool

DEFAULT_CACHE_MB = 128  # 650 chunks of 256 px: a few screens of every level

CHECKER_PX = 16  # side of a square of the "not generated yet" checker, in screen-level px
CHECKER_GREYS = (226, 212)  # neutral greys: not white (glass), not tissue


def checker(y: int, x: int, h: int, w: int) -> np.ndarray:
    """The "not generated yet" pattern ``(h, w, 3)`` uint8 over a region of any level: neutral
    grey squares anchored at the level origin, so it reads as unfinished, never as glass."""
    # Built on the GUI thread at every slice: two rows of the pattern, then one row copy per
    # output row (a 1280 x 1536 region: 3 ms instead of 60 ms per-pixel arithmetic).
    even_x = (np.arange(x, x + w) // CHECKER_PX) % 2 == 0
    rows = np.empty((2, w, 3), dtype=np.uint8)
    rows[0] = np.where(even_x, *CHECKER_GREYS)[:, None]
    rows[1] = np.where(even_x, *CHECKER_GREYS[::-1])[:, None]
    return rows[(np.arange(y, y + h) // CHECKER_PX) % 2]


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
        # (level, cy, cx) -> (rgb (h, w, 3) uint8, known (h, w) bool) or None (nothing known)
        self._provisional: dict[ChunkKey, Partial | None] = {}
        # early estimates of chunks being generated (a ChunkPreviews, set by the live view)
        self.previews: Any = None

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
        chunk = self.store.read_chunk(level, cy, cx)
        self._put(key, chunk)
        return chunk

    def prefetch(self, level: int, cy: int, cx: int) -> None:
        """Decode a chunk that was just finished into the cache (call from the writer thread)."""
        if self.max_bytes:
            self._put((level, cy, cx), self.store.read_chunk(level, cy, cx))

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

    # -- provisional coarse chunks -------------------------------------------------------

    def _has_finished_under(self, level: int, cy: int, cx: int) -> bool:
        """Whether any level-0 chunk under chunk ``(level, cy, cx)`` is finished (a coarse chunk
        is built from its children only, so finished coarse chunks imply finished leaves)."""
        n = 1 << level
        grid = self.store.completion(0).grid
        return bool(grid[cy * n : (cy + 1) * n, cx * n : (cx + 1) * n].any())

    def provisional(self, level: int, cy: int, cx: int) -> Partial | None:
        """A not-yet-finished coarse chunk from the finished pixels under it: ``(rgb, known)``
        (``rgb`` ``(h, w, 3)`` uint8, ``known`` ``(h, w)`` bool), or ``None`` when nothing under
        it is finished. Known pixels equal the finished chunk's, bit for bit (the same area
        average, rounded half up)."""
        key = (level, cy, cx)
        with self._lock:
            if key in self._provisional:
                return self._provisional[key]
        part = self._build_provisional(level, cy, cx)
        with self._lock:
            self._provisional[key] = part
        return part

    def _build_provisional(self, level: int, cy: int, cx: int) -> Partial | None:
        from napari_cytosyn.chunk_grid import child_chunks, downsample_known

        store = self.store
        if level == 0 or not self._has_finished_under(level, cy, cx):
            return None
        c = store.chunk_px
        children = child_chunks(store.level_shapes[level - 1], c, cy, cx)
        rows = max(y for y, _ in children) - 2 * cy + 1
        cols = max(x for _, x in children) - 2 * cx + 1
        rgb = np.zeros((rows * c, cols * c, 3), dtype=np.uint8)
        known = np.zeros((rows * c, cols * c), dtype=bool)
        for y, x in children:
            oy, ox = (y - 2 * cy) * c, (x - 2 * cx) * c
            if store.is_done(level - 1, y, x):
                child = self.get(level - 1, y, x)
                h, w = child.shape[:2]
                rgb[oy : oy + h, ox : ox + w] = child
                known[oy : oy + h, ox : ox + w] = 1
            else:
                part = self.provisional(level - 1, y, x)
                if part is None:
                    continue
                h, w = part[1].shape
                rgb[oy : oy + h, ox : ox + w] = part[0]
                known[oy : oy + h, ox : ox + w] = part[1]
        mean, any_known = downsample_known(rgb, known, 2)
        y0, y1, x0, x1 = store.bounds(level, cy, cx)
        return mean[: y1 - y0, : x1 - x0], any_known[: y1 - y0, : x1 - x0]

    def landed(self, level: int, cy: int, cx: int, rebuild_levels: int = 0) -> None:
        """A chunk was finished: forget the provisional chunks above it, and rebuild those of
        the ``rebuild_levels`` coarsest levels right away (call from the writing thread, so the
        GUI thread's next slice finds them ready)."""
        n_levels = self.store.n_levels
        if level == 0 and self.previews is not None:
            self.previews.drop(cy, cx)
        first_rebuilt = max(level + 1, n_levels - rebuild_levels)
        chain = [(k, cy >> (k - level), cx >> (k - level)) for k in range(level, n_levels)]
        with self._lock:
            for key in chain[: first_rebuilt - level]:
                self._provisional.pop(key, None)
        # Those rebuilt replace the old ones only when ready (finer first: each is built from
        # the one below it): meanwhile a slice on the GUI thread finds the old one, a chunk
        # short, instead of building the chain itself.
        for key in chain[first_rebuilt - level :]:
            part = self._build_provisional(*key)
            with self._lock:
                self._provisional[key] = part


_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def chunk_cache(slide: Any) -> ChunkCache:
    """The one :class:`ChunkCache` of a ``SyntheticSlide`` (made on first use)."""
    with _CACHES_LOCK:
        cache = _CACHES.get(slide)
        if cache is None:
            cache = _CACHES[slide] = ChunkCache(slide.store)
        return cache
