"""The live view of a synthetic slide's layer: renders where the camera looks and refreshes the
layer as chunks land (see :class:`LazySlideView`)."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
from qtpy.QtCore import QCoreApplication, QEvent, QObject, Qt, QTimer, Signal

from .._chunk_cache import chunk_cache
from ._jobs import lower_thread_priority


def _sync_slicing() -> bool:
    """Whether napari slices layers on the GUI thread (its default; async slicing is an
    experimental setting), i.e. whether a slice seen on the GUI thread is the newest one."""
    from napari.settings import get_settings

    return not get_settings().experimental.async_


THUMBNAIL_S = 2.0  # the layer list's thumbnail is redrawn at most this often while rendering


def _camera(viewer: Any) -> Any:
    """The viewer's camera: ``viewer.scene.camera`` since napari 0.9 (``viewer.camera`` before)."""
    return getattr(viewer, "scene", viewer).camera


_PREVIEW_EVENT = QEvent.Type(QEvent.registerEventType())


class _ChunkRelay(QObject):
    """Carries chunk notifications from worker threads to the GUI thread (queued signals;
    previews ahead of the queue, :meth:`post_preview`)."""

    chunk = Signal(int, int, int)
    preview = Signal(object)  # level-0 chunks (cy, cx) whose preview changed
    error = Signal(str)
    note = Signal()

    def __init__(self) -> None:
        super().__init__()
        self._previews: list[list] = []  # posted, not yet emitted
        self._lock = threading.Lock()

    def post_preview(self, chunks: list) -> None:
        """Emit :attr:`preview` on the GUI thread before the events already queued there (a
        new layer's layout, polish and paint: 100-300 ms on software OpenGL), as a
        high-priority posted event: a view's first preview is shown a turn sooner."""
        with self._lock:
            self._previews.append(chunks)
        high = Qt.EventPriority.HighEventPriority
        QCoreApplication.postEvent(self, QEvent(_PREVIEW_EVENT), getattr(high, "value", high))

    def event(self, e: QEvent) -> bool:
        if e.type() != _PREVIEW_EVENT:
            return super().event(e)
        with self._lock:
            posted, self._previews = self._previews, []
        for chunks in posted:
            self.preview.emit(chunks)
        return True


_OPEN_VIEWS: weakref.WeakSet = weakref.WeakSet()


def close_all_views(timeout: float = 5.0) -> None:
    """Stop every live view's rendering, cancelling the chunks in flight (at exit: a worker
    thread left inside torch when Python finalises aborts the process)."""
    for view in list(_OPEN_VIEWS):
        view.close(timeout=timeout)


def _close_at_exit() -> None:
    from qtpy.QtWidgets import QApplication

    from ._gc import collect_on_gui_thread

    collect_on_gui_thread()  # the renderer's threads must not free Qt objects
    app = QApplication.instance()
    if app is not None and not getattr(app, "_cytosyn_close_hooked", False):
        app.aboutToQuit.connect(close_all_views)
        app._cytosyn_close_hooked = True


class LazySlideView:
    """Keeps a synthetic slide's layer filled where the camera looks.

    Camera and canvas changes are debounced (``debounce_ms``); the view then asks the renderer
    for the chunks of the level napari shows (``layer.data_level``) over the visible region
    (``layer.corner_pixels``). Chunks written by any thread of this process (the renderer, a
    "render all" job) trigger a layer refresh, coalesced to at most one per ``refresh_ms`` and
    skipped when napari has re-sliced the layer since (a camera move shows them already). The
    writing thread decodes each chunk on screen or a screen away into the slide's chunk cache,
    so the GUI thread's re-slices (refreshes, pans) copy pixels from memory instead of reading
    and decoding files.

    With ``preview`` (default), every model call of the chunks being rendered paints an early
    estimate of them (:mod:`.._preview`: x0 through a linear latent -> RGB map, marked by the
    checker mixed in), shown until the chunk is finished: something appears within a model
    call of opening a view instead of after a whole chunk.
    """

    def __init__(
        self,
        viewer: Any,
        layer: Any,
        slide: Any,
        debounce_ms: int = 120,
        refresh_ms: int = 150,
        margin_chunks: int = 1,
        max_base_chunks: int = 64,
        on_error: Callable[[str], None] | None = None,
        preview: bool = True,
    ) -> None:
        from napari_cytosyn.slide.viewport import ViewportRenderer

        self.viewer, self.layer, self.slide = viewer, layer, slide
        self.chunks_landed = 0
        self.previews_landed = 0  # preview updates received (one per model call)
        self.preview = bool(preview)
        self.preview_error: str | None = None  # why previews stopped, if they did
        # time.perf_counter() of the first refresh showing a preview / a finished chunk
        self.first_preview_shown: float | None = None
        self.first_chunk_shown: float | None = None
        self.first_preview_painted: float | None = None  # ... and painted (renderer thread)
        self.preview_fit_s: float | None = None  # fitting the latent -> RGB map took
        self.refreshes = 0
        self.refreshes_skipped = 0
        self.cache = chunk_cache(slide)
        # Visible chunks landed, and how many of them napari's latest slice of the layer saw.
        self._landed_seq = 0
        self._sliced_seq = 0
        self._thumbnail_stale = False
        self._thumbnail_t = 0.0  # time.monotonic() of the last thumbnail update
        self.live = True  # refresh the layer as chunks land (False: only on camera changes)
        self._relay = _ChunkRelay()
        self._relay.chunk.connect(self._on_chunk)
        self._relay.preview.connect(self._on_preview)
        self._previews_seen = self._chunks_seen = False  # visible ones, not yet refreshed
        self._early_previews: set = set()  # chunks previewed before napari drew the layer
        self.note_changed = self._relay.note  # the zoom note (:meth:`zoom_note`) changed
        self._shown_level = len(slide.level_shapes) - 1  # the level napari shows (GUI thread)
        self._request: tuple[int, tuple[int, int, int, int]] | None = None
        if on_error is not None:
            self._relay.error.connect(on_error)
        self._debounce = QTimer()
        self._debounce.setSingleShot(True)
        self._debounce.setInterval(int(debounce_ms))
        self._debounce.timeout.connect(self.request_view)
        self._refresh = QTimer()
        self._refresh.setSingleShot(True)
        self._refresh.setInterval(int(refresh_ms))
        self._refresh.timeout.connect(self._do_refresh)
        self.renderer = ViewportRenderer(
            slide,
            on_chunk=None,
            on_error=lambda exc: self._relay.error.emit(f"{type(exc).__name__}: {exc}"),
            max_base_chunks=max_base_chunks,
            margin_chunks=margin_chunks,
            on_preview=self._preview_from_thread if self.preview else None,
        )
        # The slide tells about every chunk it writes, whoever asked for it.
        slide.add_listener(self._from_thread)
        if self.preview:  # fit the latent -> RGB map while the renderer plans its first calls
            threading.Thread(target=self._fit_preview, name="cytosyn-preview-fit").start()
        self._connect()
        self._closed = False
        self._estimated = False  # the latest request came from the camera, not from a draw
        _OPEN_VIEWS.add(self)
        _close_at_exit()
        # The first view is planned in the next turn (after the caller's camera changes of this
        # one) from the camera, before napari has drawn the layer: the first model call
        # overlaps napari's work of adding the layer.
        QTimer.singleShot(1, self._first_request)

    def _first_request(self) -> None:
        if self._request is None:
            self.request_view(self._camera_request())

    def _connect(self) -> None:
        cam = _camera(self.viewer).events
        for ev in (cam.center, cam.zoom):
            ev.connect(self.schedule)
        self.viewer.dims.events.ndisplay.connect(self.schedule)
        self.layer.events.visible.connect(self.schedule)
        self.layer.events.set_data.connect(self._on_sliced)
        self.viewer.layers.events.removed.connect(self._on_removed)

    def _from_thread(self, level: int, cy: int, cx: int) -> None:
        # Runs in the thread that wrote the chunk: decode it here, not on the GUI thread. Only
        # chunks on screen or a screen away (where a pan goes next), so that a "render all"
        # across a big slide does not push them out of the cache.
        if not self._closed and self.is_visible(level, cy, cx, margin_screens=1.0):
            self.cache.prefetch(level, cy, cx)
        # The provisional coarse chunks above it change: rebuild those of the levels shown.
        if not self._closed:
            n_levels = len(self.slide.level_shapes)
            self.cache.landed(level, cy, cx, rebuild_levels=n_levels - self._shown_level)
        lower_thread_priority()  # also without previews: from the second chunk on
        self._relay.chunk.emit(level, cy, cx)

    def _fit_preview(self) -> None:
        from .._preview import latent_rgb_of

        try:
            model = getattr(self.slide.renderer(), "model", None)
            if model is not None:
                latent_rgb_of(model)
        except Exception as exc:  # a preview is a nicety: rendering goes on without it
            self.preview_error = f"{type(exc).__name__}: {exc}"

    def _preview_from_thread(self, model: Any, rects: list, x0: Any) -> None:
        # Runs in the renderer's thread after every model call (see preview_scope). From the
        # second model call on, the renderer and its model calls (sampling.threads) yield the
        # CPU to the GUI thread; the first runs at full priority (the first pixels).
        lower_thread_priority()
        if self._closed or self.preview_error is not None:
            return
        try:
            previews = self.cache.previews
            if previews is None:
                from .._preview import ChunkPreviews, latent_rgb_of

                store = self.slide.store
                t = time.perf_counter()
                to_rgb = latent_rgb_of(model)
                self.preview_fit_s = time.perf_counter() - t
                previews = self.cache.previews = ChunkPreviews(
                    self.slide.level_shapes,
                    self.slide.chunk_px,
                    int(model.latent_factor),
                    to_rgb,
                    finished=lambda cy, cx: store.is_done(0, cy, cx),
                )
            touched = previews.paint(rects, x0)
            # Build the pictures of the level shown here, not on the GUI thread at its slice.
            k = self._shown_level
            for cy, cx in {(cy >> k, cx >> k) for cy, cx in touched}:
                previews.read(k, cy, cx)
            if self.first_preview_painted is None:
                self.first_preview_painted = time.perf_counter()
        except Exception as exc:  # a preview is a nicety: rendering goes on without it
            self.preview_error = f"{type(exc).__name__}: {exc}"
            return
        if touched:
            self._relay.post_preview(sorted(touched))

    def _on_preview(self, chunks: list) -> None:
        self.previews_landed += 1
        shown = int(self.layer.data_level)
        if not self.live:
            return
        if not self._drawn():  # on screen with the layer's first slice (see _on_sliced)
            self._early_previews.update(chunks)
            return
        if any(self.is_visible(shown, cy >> shown, cx >> shown) for cy, cx in chunks):
            self._landed_seq += 1
            first = self.first_preview_shown is None and self.first_chunk_shown is None
            self._previews_seen = True
            if first:  # the first pixels of a view are shown at once, not coalesced
                self._refresh.stop()
                self._do_refresh()
            elif not self._refresh.isActive():
                self._refresh.start()

    def _on_sliced(self, event: Any = None) -> None:
        self._sliced_seq = self._landed_seq
        if (self._request is None or self._estimated) and self._drawn():
            # napari has placed the layer on screen: the view it shows replaces the camera's
            # estimate at once, not after the camera's debounce
            self._debounce.stop()
            self.request_view()
        if self._early_previews and self._drawn():  # this slice shows them
            k = int(self.layer.data_level)
            if any(self.is_visible(k, cy >> k, cx >> k) for cy, cx in self._early_previews):
                self._previews_seen = True
                self._note_shown()
            self._early_previews.clear()

    def _on_chunk(self, level: int, cy: int, cx: int) -> None:
        self.chunks_landed += 1
        # A refresh re-slices and re-uploads the whole view (the costly part of the GUI's work):
        # only chunks that change what is on screen ask for one.
        n_levels = len(self.slide.level_shapes)
        # Every chunk changes the overview (finished or provisional), hence the layer list's
        # thumbnail; it is redrawn at most every THUMBNAIL_S.
        self._thumbnail_stale = True
        shown = int(self.layer.data_level)
        if level < shown:  # a finer chunk changes the provisional chunk above it
            level, cy, cx = shown, cy >> (shown - level), cx >> (shown - level)
        visible = level < n_levels and self.live and self.is_visible(level, cy, cx)
        if visible:
            self._landed_seq += 1
            self._chunks_seen = True
        if (visible or self._thumbnail_due()) and not self._refresh.isActive():
            self._refresh.start()

    def _thumbnail_due(self) -> bool:
        return self._thumbnail_stale and time.monotonic() - self._thumbnail_t >= THUMBNAIL_S

    def is_visible(self, level: int, cy: int, cx: int, margin_screens: float = 0.0) -> bool:
        """Whether chunk ``(level, cy, cx)`` lies in the region napari currently shows,
        widened by ``margin_screens`` times its size on every side."""
        if not self.layer.visible or level != int(self.layer.data_level):
            return False
        c = self.slide.chunk_px
        corners = np.asarray(self.layer.corner_pixels)[:, -2:]
        (y0, x0), (y1, x1) = corners[0], corners[1]
        my, mx = margin_screens * (y1 - y0), margin_screens * (x1 - x0)
        y0, y1, x0, x1 = y0 - my, y1 + my, x0 - mx, x1 + mx
        return cy * c <= y1 and (cy + 1) * c > y0 and cx * c <= x1 and (cx + 1) * c > x0

    def _do_refresh(self) -> None:
        if self._closed:
            return
        thumbnail = self._thumbnail_due()
        if self._sliced_seq >= self._landed_seq and not thumbnail and _sync_slicing():
            self.refreshes_skipped += 1  # napari re-sliced after they landed: on screen already
            self._note_shown()
            return
        self.refreshes += 1
        if thumbnail:
            self.layer.refresh(extent=False, thumbnail=True)
        else:
            # The layer list shows nothing a data refresh changes (name, visibility, thumbnail
            # and loading state have events of their own), but napari's list model turns every
            # layer event into a whole-row dataChanged that its sort proxy answers with a
            # relayout: the whole list repainted a turn later, a window compose of its own
            # (20-40 ms of the GUI thread on software OpenGL) after every canvas refresh.
            with self.viewer.layers.events.blocker():
                self.layer.refresh(extent=False, thumbnail=False)
        self._note_shown()
        if thumbnail:
            self._thumbnail_stale, self._thumbnail_t = False, time.monotonic()

    def _note_shown(self) -> None:
        """Remember when a preview / a finished chunk was first on screen (benchmarks)."""
        now = time.perf_counter()
        if self._previews_seen and self.first_preview_shown is None:
            self.first_preview_shown = now
        if self._chunks_seen and self.first_chunk_shown is None:
            self.first_chunk_shown = now

    def schedule(self, event: Any = None) -> None:
        """Ask for the view after the camera has settled (restarts the debounce timer)."""
        if not self._closed:
            self._debounce.start()

    def visible_request(self) -> tuple[int, tuple[int, int, int, int]]:
        """``(level, (y0, x0, y1, x1))`` that napari currently shows, in that level's px."""
        if not self._drawn():
            return self._camera_request()
        level = int(self.layer.data_level)
        corners = np.asarray(self.layer.corner_pixels)[:, -2:]
        y0, x0 = (int(v) for v in corners[0])
        y1, x1 = (int(v) + 1 for v in corners[1])
        return level, (y0, x0, y1, x1)

    def _camera_request(self) -> tuple[int, tuple[int, int, int, int]]:
        """``(level, (y0, x0, y1, x1))`` the camera shows before napari has drawn the layer, by
        napari's rule: the coarsest level that still has a data px per screen px."""
        canvas = np.asarray(self.viewer.canvas.size, float)  # (h, w) screen px
        camera = _camera(self.viewer)
        half = canvas / 2 / camera.zoom
        scale, shift = np.asarray(self.layer.scale[-2:]), np.asarray(self.layer.translate[-2:])
        lo = (np.asarray(camera.center[-2:]) - half - shift) / scale  # level-0 px
        hi = (np.asarray(camera.center[-2:]) + half - shift) / scale
        shapes = np.asarray(self.slide.level_shapes, float)
        factors = shapes[0] / shapes
        finer = [k for k in range(len(shapes)) if np.all((hi - lo) / factors[k] > canvas)]
        level = finer[-1] if finer else 0
        y0, x0 = np.clip(np.floor(lo / factors[level]), 0, shapes[level]).astype(int)
        y1, x1 = np.clip(np.ceil(hi / factors[level]), 0, shapes[level]).astype(int)
        return level, (int(y0), int(x0), int(y1), int(x1))

    def _drawn(self) -> bool:
        """Whether napari has a canvas visual for the layer (then its level and corners are
        those of the screen; before, its slice is the whole coarsest level). Built in a later
        turn when the layer is inserted in steps (``_layers.insert_layer``)."""
        qt_viewer = getattr(getattr(self.viewer, "window", None), "_qt_viewer", None)
        return qt_viewer is None or self.layer in qt_viewer.canvas.layer_to_visual

    def request_view(self, estimate: tuple | None = None) -> int:
        """Plan the chunks in view now (or, before napari has drawn the layer, in the camera's
        ``estimate`` of it, replaced at its first draw); returns how many were planned."""
        if self._closed or not self.layer.visible:
            return 0
        level, region = estimate or self.visible_request()
        self._estimated = estimate is not None or not self._drawn()
        self._shown_level = level
        self._request = (level, region)
        self._relay.note.emit()
        return self.renderer.request(level, region)

    def zoom_note(self) -> str:
        """What is generated at the current view, for people: everything in view, or (zoomed
        far out) only the chunks nearest the centre, and how much closer to zoom for all."""
        if self._request is None:
            return ""
        level, (y0, x0, y1, x1) = self._request
        H, W = self.slide.level_shapes[level]
        area0 = max(0, min(y1, H) - max(y0, 0)) * max(0, min(x1, W) - max(x0, 0)) * 4**level
        c = self.slide.chunk_px
        n_base = area0 / (c * c)
        limit = self.renderer.max_base_chunks
        if n_base <= limit:
            return (
                "Generating everything in view (grey checks: not generated yet; checked "
                "colour: an early preview, replaced as chunks finish)."
            )
        factor = (n_base / limit) ** 0.5
        return (
            f"Zoomed out: about {n_base:,.0f} chunks are in view; only the {limit} nearest the "
            f"centre are generated (grey checks: not generated yet). Zoom in about "
            f"{factor:.1f}x to generate everything in view, or use Render all."
        )

    def close(self, timeout: float | None = 0.0) -> None:
        """Stop rendering and unhook events. The chunk in flight is cancelled between two model
        calls (nothing of it is stored); ``timeout`` is how long to wait for the worker thread
        to end (``0``: do not block the GUI)."""
        if self._closed:
            return
        self._closed = True
        self._debounce.stop()
        self._refresh.stop()
        cam = _camera(self.viewer).events
        for ev in (cam.center, cam.zoom):
            ev.disconnect(self.schedule)
        self.viewer.dims.events.ndisplay.disconnect(self.schedule)
        self.layer.events.set_data.disconnect(self._on_sliced)
        self.viewer.layers.events.removed.disconnect(self._on_removed)
        self.slide.remove_listener(self._from_thread)
        _OPEN_VIEWS.discard(self)
        self.renderer.close(timeout=timeout, cancel=True)

    def _on_removed(self, event: Any) -> None:
        if event.value is self.layer:
            self.close()
