"""Bridges from slides to napari layers: store-backed multiscale levels, and live refresh.

napari slices layers on the GUI thread, so the layers made here never run the sampler when they
are drawn. A synthetic slide's layer reads only finished chunks from its store (white where
nothing is finished yet); a :class:`LazySlideView` watches the camera, asks a
:class:`~napari_cytosyn.slide.viewport.ViewportRenderer` (a worker thread) for the chunks in
view, and refreshes the layer as they land. The level arrays are plain array-likes rather than
dask arrays, so napari's dask chunk cache can never serve a stale (white) chunk after a refresh.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
from qtpy.QtCore import QObject, QTimer, Signal

from ._chunk_cache import ChunkCache, chunk_cache
from ._qt._jobs import lower_thread_priority

META_KEY = "cytosyn"  # layer.metadata[META_KEY]: what kind of slide a layer shows, JSON-able

ReadFn = Callable[[int, int, int, int], np.ndarray]  # (y, x, h, w) -> (h, w, 3) uint8


class SlideLevel:
    """One pyramid level as an array-like ``(h, w, 3)`` uint8 that napari can slice.

    ``read(y, x, h, w)`` returns the pixels of a region inside the level; it must be cheap (a
    store read), because napari calls it on the GUI thread.
    """

    dtype = np.dtype(np.uint8)
    ndim = 3

    def __init__(self, read: ReadFn, shape_hw: tuple[int, int], chunk_px: int) -> None:
        self._read = read
        self.shape = (int(shape_hw[0]), int(shape_hw[1]), 3)
        # napari expands the requested view to whole chunks when an array reports them.
        self.chunks = (int(chunk_px), int(chunk_px), 3)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (3 - len(key))
        ys, xs, cs = key[:3]
        if isinstance(ys, int | np.integer):
            ys = slice(int(ys), int(ys) + 1) if ys >= 0 else slice(ys, ys + 1 or None)
            squeeze_y = True
        else:
            squeeze_y = False
        if isinstance(xs, int | np.integer):
            xs = slice(int(xs), int(xs) + 1) if xs >= 0 else slice(xs, xs + 1 or None)
            squeeze_x = True
        else:
            squeeze_x = False
        y0, y1, sy = ys.indices(self.shape[0])
        x0, x1, sx = xs.indices(self.shape[1])
        if sy < 0 or sx < 0:
            raise IndexError("negative steps are not supported by slide levels")
        if y1 <= y0 or x1 <= x0:
            out = np.empty((max(0, y1 - y0), max(0, x1 - x0), 3), dtype=np.uint8)
        else:
            out = self._read(y0, x0, y1 - y0, x1 - x0)[::sy, ::sx]
        out = out[:, :, cs]
        if squeeze_x:
            out = out[:, 0]
        if squeeze_y:
            out = out[0]
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:, :]
        return out if dtype is None else out.astype(dtype)

    def __len__(self) -> int:
        return self.shape[0]


def read_finished(
    slide: Any, level: int, y: int, x: int, h: int, w: int, cache: ChunkCache | None = None
) -> np.ndarray:
    """Pixels ``(h, w, 3)`` uint8 of a synthetic slide's finished chunks, white elsewhere.

    Finished chunks come from ``cache`` (decoded chunks in memory, see
    :mod:`._chunk_cache`) or, without one, from the store's direct path (one file read and one
    decode per chunk, avoiding zarr's asynchronous machinery, whose many thread hand-offs each
    wait for the GIL while the renderer is busy).
    """
    store = slide.store
    c = store.chunk_px
    out = np.full((h, w, 3), 255, dtype=np.uint8)
    grid = store.completion(level).grid
    for cy in range(y // c, -(-(y + h) // c)):
        for cx in range(x // c, -(-(x + w) // c)):
            if not grid[cy, cx]:
                continue
            y0, y1, x0, x1 = store.bounds(level, cy, cx)
            if cache is not None:
                chunk = cache.get(level, cy, cx)
            else:
                chunk = store.read_chunk(level, cy, cx, copy=False)
            ty0, ty1, tx0, tx1 = max(y0, y), min(y1, y + h), max(x0, x), min(x1, x + w)
            out[ty0 - y : ty1 - y, tx0 - x : tx1 - x] = chunk[
                ty0 - y0 : ty1 - y0, tx0 - x0 : tx1 - x0
            ]
    return out


def synthetic_levels(slide: Any) -> list[SlideLevel]:
    """Levels of a ``SyntheticSlide`` that show finished chunks only (white elsewhere), read
    through the slide's :func:`~._chunk_cache.chunk_cache`."""
    cache = chunk_cache(slide)
    return [
        SlideLevel(
            lambda y, x, h, w, k=k: read_finished(slide, k, y, x, h, w, cache),
            shape,
            slide.chunk_px,
        )
        for k, shape in enumerate(slide.level_shapes)
    ]


def composite_levels(composite: Any, chunk_px: int = 512) -> list[SlideLevel]:
    """Levels of a ``CompositeSlide``: the real slide with its edits on top."""
    return [
        SlideLevel(lambda y, x, h, w, k=k: composite.read_region(k, y, x, h, w), shape, chunk_px)
        for k, shape in enumerate(composite.level_shapes)
    ]


# Which slide object a layer shows, for layers made here (the widget needs the object back).
_SOURCES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_VIEWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def slide_of(layer: Any) -> Any | None:
    """The ``SyntheticSlide`` / ``CompositeSlide`` behind a layer made here, else ``None``."""
    return _SOURCES.get(layer)


def _scale(slide: Any) -> tuple[float, float]:
    mpp = slide.mpp
    return (float(mpp[1]), float(mpp[0])) if mpp else (1.0, 1.0)


def synthetic_layer_kwargs(slide: Any) -> dict[str, Any]:
    """``add_image`` keyword arguments for a synthetic slide (physical scale, metadata)."""
    return {
        "name": slide.name,
        "rgb": True,
        "multiscale": True,
        "contrast_limits": (0, 255),
        "scale": _scale(slide),
        "units": ("um", "um"),
        "metadata": {
            META_KEY: {"kind": "synthetic", "store": str(slide.path), "seed": slide.seed},
            "mpp": list(slide.mpp),
        },
    }


def add_synthetic_layer(viewer: Any, slide: Any, **view_options: Any) -> tuple[Any, LazySlideView]:
    """Add a synthetic slide as a lazy layer that renders where the user looks.

    Returns ``(layer, view)``; ``view`` is the :class:`LazySlideView` driving its rendering.
    """
    layer = viewer.add_image(synthetic_levels(slide), **synthetic_layer_kwargs(slide))
    _SOURCES[layer] = slide
    view = LazySlideView(viewer, layer, slide, **view_options)
    return layer, view


def synthetic_layer_data(viewer: Any, slide: Any) -> tuple[list, dict[str, Any], str]:
    """Layer data tuple of a lazy synthetic slide (for sample data and readers).

    When napari adds the layer to ``viewer``, it gets a :class:`LazySlideView`, as with
    :func:`add_synthetic_layer`."""
    kwargs = synthetic_layer_kwargs(slide)
    store = kwargs["metadata"][META_KEY]["store"]

    def on_inserted(event: Any) -> None:
        layer = event.value
        if layer.metadata.get(META_KEY, {}).get("store") != store or layer in _SOURCES:
            return
        viewer.layers.events.inserted.disconnect(on_inserted)
        _SOURCES[layer] = slide
        _VIEWS[layer] = LazySlideView(viewer, layer, slide)

    viewer.layers.events.inserted.connect(on_inserted)
    return synthetic_levels(slide), kwargs, "image"


def view_of(layer: Any) -> LazySlideView | None:
    """The live view of a synthetic layer added through :func:`synthetic_layer_data`."""
    return _VIEWS.get(layer)


def add_composite_layer(viewer: Any, composite: Any, real_layer: Any) -> Any:
    """Add a composite (real slide + edits) layer right above ``real_layer``, same placement,
    named after it (``"<real layer> (edited)"``)."""
    layer = viewer.add_image(
        composite_levels(composite),
        name=f"{real_layer.name} (edited)",
        rgb=True,
        multiscale=True,
        contrast_limits=(0, 255),
        scale=tuple(real_layer.scale[-2:]),
        translate=tuple(real_layer.translate[-2:]),
        units=("um", "um") if composite.mpp else None,
        metadata=composite_metadata(composite),
    )
    _SOURCES[layer] = composite
    index = viewer.layers.index(real_layer)
    viewer.layers.move(viewer.layers.index(layer), index + 1)
    return layer


def composite_metadata(composite: Any) -> dict[str, Any]:
    """Metadata of a composite layer, read by the plugin's writers (mpp, mask, provenance)."""
    return {
        META_KEY: {
            "kind": "composite",
            "store": str(composite.path),
            "edits": len(composite.edits),
        },
        "mpp": list(composite.mpp) if composite.mpp else None,
        "synthetic_mask": composite.mask_levels,
        "source_path": str(composite.real.path),
    }


def _sync_slicing() -> bool:
    """Whether napari slices layers on the GUI thread (its default; async slicing is an
    experimental setting), i.e. whether a slice seen on the GUI thread is the newest one."""
    from napari.settings import get_settings

    return not get_settings().experimental.async_


class _ChunkRelay(QObject):
    """Carries chunk notifications from worker threads to the GUI thread (queued signal)."""

    chunk = Signal(int, int, int)
    error = Signal(str)


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
    ) -> None:
        from napari_cytosyn.slide.viewport import ViewportRenderer

        self.viewer, self.layer, self.slide = viewer, layer, slide
        self.chunks_landed = 0
        self.refreshes = 0
        self.refreshes_skipped = 0
        self.cache = chunk_cache(slide)
        # Visible chunks landed, and how many of them napari's latest slice of the layer saw.
        self._landed_seq = 0
        self._sliced_seq = 0
        self._thumbnail_stale = False
        self.live = True  # refresh the layer as chunks land (False: only on camera changes)
        self._relay = _ChunkRelay()
        self._relay.chunk.connect(self._on_chunk)
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
        )
        # The slide tells about every chunk it writes, whoever asked for it.
        slide.add_listener(self._from_thread)
        self._connect()
        self._closed = False
        self.schedule()

    def _connect(self) -> None:
        cam = self.viewer.camera.events
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
        # The renderer's thread yields the CPU to the GUI thread from its second chunk on.
        lower_thread_priority()
        self._relay.chunk.emit(level, cy, cx)

    def _on_sliced(self, event: Any = None) -> None:
        self._sliced_seq = self._landed_seq

    def _on_chunk(self, level: int, cy: int, cx: int) -> None:
        self.chunks_landed += 1
        # A refresh re-slices and re-uploads the whole view (the costly part of the GUI's work):
        # only chunks that change what is on screen ask for one.
        if level == len(self.slide.level_shapes) - 1:
            self._thumbnail_stale = True  # the overview changed: the layer list icon too
        if self.live and self.is_visible(level, cy, cx):
            self._landed_seq += 1
            if not self._refresh.isActive():
                self._refresh.start()

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
        if self._sliced_seq >= self._landed_seq and not self._thumbnail_stale and _sync_slicing():
            self.refreshes_skipped += 1  # napari re-sliced after they landed: on screen already
            return
        self.refreshes += 1
        self.layer.refresh(extent=False, thumbnail=self._thumbnail_stale)
        self._thumbnail_stale = False

    def schedule(self, event: Any = None) -> None:
        """Ask for the view after the camera has settled (restarts the debounce timer)."""
        if not self._closed:
            self._debounce.start()

    def visible_request(self) -> tuple[int, tuple[int, int, int, int]]:
        """``(level, (y0, x0, y1, x1))`` that napari currently shows, in that level's px."""
        level = int(self.layer.data_level)
        corners = np.asarray(self.layer.corner_pixels)[:, -2:]
        y0, x0 = (int(v) for v in corners[0])
        y1, x1 = (int(v) + 1 for v in corners[1])
        if y1 - y0 <= 1 and x1 - x0 <= 1:  # not drawn yet: the whole coarsest level
            level = len(self.slide.level_shapes) - 1
            y0, x0 = 0, 0
            y1, x1 = self.slide.level_shapes[level]
        return level, (y0, x0, y1, x1)

    def request_view(self) -> int:
        """Plan the chunks in view now; returns how many were planned."""
        if self._closed or not self.layer.visible:
            return 0
        level, region = self.visible_request()
        return self.renderer.request(level, region)

    def close(self, timeout: float | None = 0.0) -> None:
        """Stop rendering and unhook events. The chunk in flight still finishes and is stored;
        ``timeout`` is how long to wait for it (``0``: do not block the GUI)."""
        if self._closed:
            return
        self._closed = True
        self._debounce.stop()
        self._refresh.stop()
        cam = self.viewer.camera.events
        for ev in (cam.center, cam.zoom):
            ev.disconnect(self.schedule)
        self.viewer.dims.events.ndisplay.disconnect(self.schedule)
        self.layer.events.set_data.disconnect(self._on_sliced)
        self.viewer.layers.events.removed.disconnect(self._on_removed)
        self.slide.remove_listener(self._from_thread)
        self.renderer.close(timeout=timeout)

    def _on_removed(self, event: Any) -> None:
        if event.value is self.layer:
            self.close()
