"""The viewport renderer: generates what the viewer is looking at, in a worker thread.

napari slices layers on the GUI thread, so the sampler must never run inside a draw call. The
viewer tells a :class:`ViewportRenderer` which region of which level is visible; a worker thread
plans the missing chunks (visible before off-screen, finest level first, nearest the centre of
the view first), generates them one by one, writes each to the store and reports it through
``on_chunk(level, cy, cx)`` (called from the worker thread: marshal it to the GUI thread, e.g.
with a Qt signal, before touching a layer). A new request replaces the plan of the previous
one, so work the user has scrolled away from is dropped; only the chunk in flight finishes
(it is stored, so it is not wasted).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from napari_cytosyn.chunk_grid import child_chunks, chunk_range
from napari_cytosyn.sampling.settings import Cancelled

from .render_ahead import VIEW_BATCH_CHUNKS, nearest_first, split_ahead
from .synthetic import cancel_scope

ChunkKey = tuple[int, int, int]


@dataclass
class RendererStats:
    """Counters of a renderer's work (read them for progress displays and benchmarks)."""

    requests: int = 0
    planned: int = 0
    written: int = 0
    dropped: int = 0
    errors: int = 0
    first_chunk_s: float | None = None


class ViewportRenderer:
    """Fills the visible part of a :class:`~.synthetic.SyntheticSlide` in a worker thread.

    Parameters
    ----------
    slide: the synthetic slide (anything with ``level_shapes``, ``chunk_px``, ``is_done``,
        ``generate_chunk``).
    on_chunk: ``callback(level, cy, cx)`` after each written chunk (pyramid parents included).
    on_error: ``callback(exception)`` when generating a chunk fails; the renderer keeps going
        with the next chunk.
    on_preview: ``callback(model, rects, x0)`` after every model call of the chunks it renders
        (:func:`~napari_cytosyn.sampling.lazy.preview_scope`; worker thread): early x0
        estimates to show before the chunks are finished.
    max_base_chunks: at most this many level-0 chunks are planned per request (nearest the
        centre first), so zooming out over a huge slide does not queue millions of chunks.
    margin_chunks: also plan this many rings of chunks around the view (after the visible
        ones), so panning finds them ready.
    lookahead_chunks: after the first chunk of a request, the next level-0 chunks of the plan
        are prepared this many at a time (``slide.prepare_chunks``, when the slide has it): their
        model windows share full batches, which costs fewer padded slots than one chunk at a
        time. ``1`` = one chunk at a time. The first chunk is always prepared alone, so it shows
        as soon as possible. Batch slots that would be padding compute windows of the next
        ``lookahead_chunks`` chunks instead (pixels do not depend on it). The first model
        batch of a request runs on its own, holding the windows nearest the first chunk's
        centre (:func:`~napari_cytosyn.sampling.lazy.soon_scope`): its preview comes after one
        model call that has a core to itself while the viewer draws.
    """

    def __init__(
        self,
        slide: Any,
        on_chunk: Callable[[int, int, int], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
        max_base_chunks: int = 256,
        margin_chunks: int = 0,
        lookahead_chunks: int = VIEW_BATCH_CHUNKS,
        on_preview: Callable[[Any, list, Any], None] | None = None,
    ) -> None:
        self.slide = slide
        self.on_chunk = on_chunk
        self.on_error = on_error
        self.on_preview = on_preview
        self.max_base_chunks = int(max_base_chunks)
        self.margin_chunks = int(margin_chunks)
        if int(lookahead_chunks) < 1:
            raise ValueError(f"lookahead_chunks must be >= 1, got {lookahead_chunks!r}")
        self.lookahead_chunks = int(lookahead_chunks)
        self._prepared: set[ChunkKey] = set()
        self._first_of_request = True
        self._margin_only: set[ChunkKey] = set()
        self.stats = RendererStats()
        self._cond = threading.Condition()
        self._plan: list[ChunkKey] = []
        self._busy = False
        self._closed = False
        self._stop = threading.Event()  # cancels the chunk in flight (close(cancel=True))
        self._t_request = 0.0
        self._thread = threading.Thread(target=self._run, name="cytosyn-viewport", daemon=True)
        self._thread.start()

    # -- planning -------------------------------------------------------------------------

    def plan(self, level: int, region: tuple[int, int, int, int]) -> list[ChunkKey]:
        """Missing chunks for a view of ``level`` over ``region`` ``(y0, x0, y1, x1)`` in that
        level's px, in the order they will be generated.

        Level-0 chunks come first (visible ones by distance from the view centre, then the
        margin), then the coarser chunks up to ``level`` that they complete. A coarser chunk
        is built from its children by the slide as soon as they are all finished.
        """
        return self._plan_view(level, region)[0]

    def _plan_view(
        self, level: int, region: tuple[int, int, int, int]
    ) -> tuple[list[ChunkKey], set[ChunkKey]]:
        """:meth:`plan`, and the planned level-0 chunks that are only in the margin."""
        n_levels = len(self.slide.level_shapes)
        if not 0 <= level < n_levels:
            raise ValueError(f"level {level} does not exist; the slide has {n_levels} levels")
        H, W = self.slide.level_shapes[level]
        y0, x0, y1, x1 = (int(v) for v in region)
        y0, x0, y1, x1 = max(0, y0), max(0, x0), min(H, y1), min(W, x1)
        if y1 <= y0 or x1 <= x0:
            return [], set()
        c, shape = self.slide.chunk_px, self.slide.level_shapes[level]
        rows, cols = chunk_range(shape, c, y0, x0, y1, x1)
        visible = {(cy, cx) for cy in rows for cx in cols}
        rows, cols = chunk_range(shape, c, y0, x0, y1, x1, margin=self.margin_chunks)
        ring = {(cy, cx) for cy in rows for cx in cols} - visible
        centre = ((y0 + y1) / 2 / c, (x0 + x1) / 2 / c)
        order: list[ChunkKey] = []
        n_visible = 0
        for group in (visible, ring):
            order += [(level, cy, cx) for cy, cx in nearest_first(group, centre)]
            n_visible = n_visible or len(order)
        if self._leaf_count(level, (y0, x0, y1, x1)) > self.max_base_chunks:
            # Zoomed far out: the level-0 chunks nearest the centre of the view, found without
            # listing the (possibly millions of) chunks under the view.
            base = self._centre_leaves(level, (y0, x0, y1, x1))
            coarse = [k for k in order[:n_visible] if k[0] > 0 and not self.slide.is_done(*k)]
            return base + coarse, set()
        # Expand to the finest level: each chunk's level-0 descendants, in the same order.
        base: list[ChunkKey] = []
        seen: set[ChunkKey] = set()
        margin_only: set[ChunkKey] = set()
        for i, key in enumerate(order):
            for leaf in self._descendants(key):
                if leaf not in seen:
                    seen.add(leaf)
                    if not self.slide.is_done(*leaf):
                        base.append(leaf)
                        if i >= n_visible:
                            margin_only.add(leaf)
        base = base[: self.max_base_chunks]
        coarse = [k for k in order if k[0] > 0 and not self.slide.is_done(*k)]
        return base + coarse, margin_only

    def _footprint(
        self, level: int, region: tuple[int, int, int, int]
    ) -> tuple[int, int, int, int]:
        """Level-0 chunk range ``(cy0, cx0, cy1, cx1)`` under a region of ``level``."""
        c, d = self.slide.chunk_px, 2**level
        H0, W0 = self.slide.level_shapes[0]
        y0, x0, y1, x1 = region
        return y0 * d // c, x0 * d // c, -(-min(y1 * d, H0) // c), -(-min(x1 * d, W0) // c)

    def _leaf_count(self, level: int, region: tuple[int, int, int, int]) -> int:
        cy0, cx0, cy1, cx1 = self._footprint(level, region)
        return (cy1 - cy0) * (cx1 - cx0)

    def _centre_leaves(self, level: int, region: tuple[int, int, int, int]) -> list[ChunkKey]:
        """Up to ``max_base_chunks`` unfinished level-0 chunks nearest the view's centre."""
        cy0, cx0, cy1, cx1 = self._footprint(level, region)
        centre = ((cy0 + cy1) / 2, (cx0 + cx1) / 2)
        side = 2 * math.isqrt(self.max_base_chunks) + 2  # room for finished chunks
        ys = range(max(cy0, int(centre[0]) - side // 2), min(cy1, int(centre[0]) + side // 2))
        xs = range(max(cx0, int(centre[1]) - side // 2), min(cx1, int(centre[1]) + side // 2))
        todo = [(y, x) for y in ys for x in xs if not self.slide.is_done(0, y, x)]
        return [(0, y, x) for y, x in nearest_first(todo, centre)[: self.max_base_chunks]]

    def _descendants(self, key: ChunkKey) -> list[ChunkKey]:
        level, cy, cx = key
        if self.slide.is_done(level, cy, cx) or level == 0:
            return [key] if level == 0 else []
        out: list[ChunkKey] = []
        for y, x in child_chunks(self.slide.level_shapes[level - 1], self.slide.chunk_px, cy, cx):
            out += self._descendants((level - 1, y, x))
        return out

    # -- requests -------------------------------------------------------------------------

    def request(self, level: int, region: tuple[int, int, int, int]) -> int:
        """Show ``region`` ``(y0, x0, y1, x1)`` (level px) of ``level``; replaces the previous
        request's remaining plan. Returns the number of chunks planned."""
        plan, margin_only = self._plan_view(level, region)
        with self._cond:
            if self._closed:
                raise RuntimeError("this ViewportRenderer is closed")
            self.stats.dropped += len(self._plan)
            self.stats.requests += 1
            self.stats.planned += len(plan)
            self._plan = plan
            self._first_of_request = True
            self._margin_only = margin_only
            self._t_request = time.perf_counter()
            self._cond.notify_all()
        return len(plan)

    def pending(self) -> int:
        """Chunks planned and not yet started."""
        with self._cond:
            return len(self._plan)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the current plan is finished; False on timeout."""
        end = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._plan or self._busy:
                left = None if end is None else end - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float | None = 30.0, cancel: bool = False) -> None:
        """Drop the plan and stop the worker: after the chunk in flight, or with ``cancel``
        within one model call of it (the cancelled chunk is not stored)."""
        if cancel:
            self._stop.set()
        with self._cond:
            self._closed = True
            self.stats.dropped += len(self._plan)
            self._plan = []
            self._cond.notify_all()
        self._thread.join(timeout)

    def __enter__(self) -> ViewportRenderer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- worker ---------------------------------------------------------------------------

    def _run(self) -> None:
        # torch: not at import time
        from napari_cytosyn.sampling.lazy import preview_scope, soon_scope

        while True:
            with self._cond:
                while not self._plan and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                key = self._plan.pop(0)
                self._busy = True
                t0 = self._t_request
                first = self._first_of_request
                ahead, upcoming = self._lookahead(key)
            try:
                soon = soon_scope() if first else contextlib.nullcontext()
                with cancel_scope(self._stop), preview_scope(self.on_preview), soon:
                    self._generate(key, ahead, upcoming, t0)
            except Cancelled:
                return  # closed with cancel=True
            except Exception as exc:  # reported, and the next chunk is tried
                self.stats.errors += 1
                if self.on_error is not None:
                    self.on_error(exc)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _generate(
        self, key: ChunkKey, ahead: list[ChunkKey], upcoming: list[ChunkKey], t0: float
    ) -> None:
        if ahead:
            self.slide.prepare_chunks(
                [(cy, cx) for _, cy, cx in ahead], [(cy, cx) for _, cy, cx in upcoming]
            )
        if not self.slide.is_done(*key):
            for written in self.slide.generate_chunk(*key):
                self.stats.written += 1
                if self.stats.first_chunk_s is None:
                    self.stats.first_chunk_s = time.perf_counter() - t0
                if self.on_chunk is not None:
                    self.on_chunk(*written)

    def _lookahead(self, key: ChunkKey) -> tuple[list[ChunkKey], list[ChunkKey]]:
        """Level-0 chunks to prepare together before generating ``key``, and the ones after
        them whose work may fill their padded model batches (called locked)."""
        first, self._first_of_request = self._first_of_request, False
        if (
            key[0] != 0
            or key in self._prepared
            or self.lookahead_chunks < 2
            or not hasattr(self.slide, "prepare_chunks")
        ):
            return [], []
        # Visible chunks are not held back to share batches with chunks of the margin.
        margin = key in self._margin_only
        same = [k for k in self._plan if k[0] == 0 and (k in self._margin_only) == margin]
        others = [k for k in self._plan if k[0] == 0 and (k in self._margin_only) != margin]
        # The first chunk of a request is prepared alone, so it shows as soon as possible; the
        # slots its batches would pad compute windows of the next chunks instead (free).
        ahead, upcoming = split_ahead(key, same, others, self.lookahead_chunks, alone=first)
        if len(self._prepared) > 4096:  # only a hint to skip replanning: keep it small
            self._prepared.clear()
        self._prepared.update(ahead)
        return ahead, upcoming
