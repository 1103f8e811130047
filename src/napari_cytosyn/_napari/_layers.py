"""Bridges from slides to napari layers: store-backed multiscale levels, and live refresh.

napari slices layers on the GUI thread, so the layers made here never run the sampler when they
are drawn. A synthetic slide's layer reads only finished chunks from its store (provisional
coarse chunks and a grey checker where nothing is finished yet); a :class:`LazySlideView`
watches the camera, asks a
:class:`~napari_cytosyn.slide.viewport.ViewportRenderer` (a worker thread) for the chunks in
view, and refreshes the layer as they land. The level arrays are plain array-likes rather than
dask arrays, so napari's dask chunk cache can never serve a stale chunk after a refresh.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from ._chunk_cache import ChunkCache, checker, chunk_cache
from ._qt._lazy_view import LazySlideView

META_KEY = "cytosyn"  # layer.metadata[META_KEY]: what kind of slide a layer shows, JSON-able

ReadFn = Callable[[int, int, int, int], np.ndarray]  # (y, x, h, w) -> (h, w, 3) uint8


class SlideLevel:
    """One pyramid level as an array-like napari can slice: ``(h, w, 3)`` uint8 RGB, or
    ``(h, w)`` uint8 (a mask level, ``channels=None``).

    ``read(y, x, h, w)`` returns the pixels of a region inside the level; it must be cheap (a
    store read), because napari calls it on the GUI thread.
    """

    dtype = np.dtype(np.uint8)

    def __init__(
        self, read: ReadFn, shape_hw: tuple[int, int], chunk_px: int, channels: int | None = 3
    ) -> None:
        self._read = read
        tail = (channels,) if channels else ()
        self.shape = (int(shape_hw[0]), int(shape_hw[1]), *tail)
        self.ndim = len(self.shape)
        # napari expands the requested view to whole chunks when an array reports them.
        self.chunks = (int(chunk_px), int(chunk_px), *tail)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (self.ndim - len(key))
        ys, xs = key[:2]
        squeeze = []
        spans = []
        for axis, k in enumerate((ys, xs)):
            if isinstance(k, int | np.integer):
                k = int(k) + (self.shape[axis] if k < 0 else 0)
                k, one = slice(k, k + 1), True
            else:
                one = False
            start, stop, step = k.indices(self.shape[axis])
            if step < 0:
                raise IndexError("negative steps are not supported by slide levels")
            spans.append((start, stop, step))
            squeeze.append(one)
        (y0, y1, sy), (x0, x1, sx) = spans
        if y1 <= y0 or x1 <= x0:
            out = np.empty((max(0, y1 - y0), max(0, x1 - x0), *self.shape[2:]), dtype=np.uint8)
        else:
            out = self._read(y0, x0, y1 - y0, x1 - x0)[::sy, ::sx]
        if self.ndim == 3:
            out = out[:, :, key[2]]
        if squeeze[1]:
            out = out[:, 0]
        if squeeze[0]:
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
    """Pixels ``(h, w, 3)`` uint8 of a synthetic slide as far as it is generated.

    Finished chunks come from ``cache`` (decoded chunks in memory, see :mod:`._chunk_cache`) or,
    without one, from the store. An unfinished coarse chunk shows its provisional pixels (the
    area average of the finished chunks under it) where it has some; whatever is not generated
    yet shows the grey :func:`checker` where the slide's tissue layout plans tissue (everywhere
    without one) and white glass elsewhere. Over planned tissue, a chunk being generated shows
    its progressive preview (the cache's ``previews``: an early estimate, checker mixed in)
    until it is finished.
    """
    from napari_cytosyn.chunk_grid import pieces

    store = slide.store
    out = checker(y, x, h, w)
    tissue = slide.tissue_in_region(level, y, x, h, w)
    if tissue is not None:  # the planned layout: glass stays white, tissue to come is checked
        out[~tissue] = 255
    previews = getattr(cache, "previews", None)
    grid = store.completion(level).grid
    for p in pieces(store.level_shapes[level], store.chunk_px, y, x, h, w):
        if grid[p.cy, p.cx]:
            if cache is not None:
                chunk = cache.get(level, p.cy, p.cx)
            else:
                chunk = store.read_chunk(level, p.cy, p.cx)
            out[p.out] = chunk[p.chunk]
            continue
        early = previews.read(level, p.cy, p.cx) if previews is not None else None
        if early is not None and tissue is None:  # the preview over the checker: copied whole
            out[p.out] = early[0][p.chunk]  # (a masked copy took 6 ms of GUI CPU a chunk)
        elif early is not None:
            where = early[1][p.chunk] & tissue[p.out]
            np.copyto(out[p.out], early[0][p.chunk], where=where[..., None])
        if cache is not None and level > 0:
            part = cache.provisional(level, p.cy, p.cx)
            if part is not None:
                np.copyto(out[p.out], part[0][p.chunk], where=part[1][p.chunk][..., None])
    return out


def synthetic_levels(slide: Any) -> list[SlideLevel]:
    """Levels of a ``SyntheticSlide`` as far as generated (:func:`read_finished`), read through
    the slide's :func:`~._chunk_cache.chunk_cache`."""
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
    """Levels of a ``CompositeSlide``: the real slide with its edits on top (the next slice
    after :func:`use_read_ahead` reads the pixels given to it)."""
    return [
        SlideLevel(
            lambda y, x, h, w, k=k: _read_composite(composite, k, y, x, h, w), shape, chunk_px
        )
        for k, shape in enumerate(composite.level_shapes)
    ]


#: composite -> {level: (y, x, pixels)}: read ahead for the next slice of its layer
_READ_AHEAD: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def shown_region(layer: Any) -> tuple[int, tuple[int, int, int, int]] | None:
    """``(level, (y0, x0, y1, x1))``: the level of a 2D multiscale ``layer`` napari shows and
    the box of it in view (stops excluded), or ``None`` for other layers (GUI thread)."""
    if not layer.multiscale or layer.ndim != 2:
        return None
    (y0, x0), (y1, x1) = np.asarray(layer.corner_pixels, int)[:, -2:]
    return int(layer.data_level), (int(y0), int(x0), int(y1) + 1, int(x1) + 1)


def read_ahead(
    composite: Any, region: tuple[int, tuple[int, int, int, int]] | None, chunk_px: int = 512
) -> dict[int, tuple[int, int, np.ndarray]]:
    """The pixels ``{level: (y, x, (h, w, 3) uint8)}`` that the first slice of a layer of
    ``composite`` placed like the layer of ``region`` (:func:`shown_region`) reads: its box
    grown to whole chunks (napari asks for whole chunks), and the coarsest level whole (the
    thumbnail). For a job's worker thread: the real slide read and the edits pasted over it
    took 40-55 ms of the GUI thread in the turn that showed an edited layer."""
    if region is None:
        return {}
    shapes = [tuple(s) for s in composite.level_shapes]
    level, (y0, x0, y1, x1) = region
    if not 0 <= level < len(shapes):
        return {}
    (h, w), c = shapes[level], chunk_px
    boxes = {len(shapes) - 1: (0, 0, *shapes[-1])}
    boxes.setdefault(
        level, (y0 // c * c, x0 // c * c, min(h, -(-y1 // c) * c), min(w, -(-x1 // c) * c))
    )
    return {
        k: (y, x, composite.read_region(k, y, x, yy - y, xx - x))
        for k, (y, x, yy, xx) in boxes.items()
    }


def use_read_ahead(composite: Any, pixels: dict[int, tuple[int, int, np.ndarray]] | None) -> None:
    """Until the next call, reads of ``composite``'s layer take ``pixels`` (:func:`read_ahead`,
    read after its last edit) where they cover the region read; ``None``: no more. The caller
    drops them once the layer is sliced: a later edit must never show them."""
    _READ_AHEAD.pop(composite, None)
    if pixels:
        _READ_AHEAD[composite] = pixels


def _read_composite(composite: Any, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
    by, bx, px = _READ_AHEAD.get(composite, {}).get(level, (0, 0, np.empty((0, 0))))
    if by <= y and bx <= x and y + h <= by + px.shape[0] and x + w <= bx + px.shape[1]:
        return px[y - by : y - by + h, x - bx : x - bx + w]
    return composite.read_region(level, y, x, h, w)


def _links(viewer: Any) -> Any:
    """The viewer session's record of what its layers show (``_session.LayerLinks``)."""
    from ._session import session_for

    return session_for(viewer).layers


def slide_of(layer: Any) -> Any | None:
    """The ``SyntheticSlide`` / ``CompositeSlide`` behind a layer made here, else ``None``."""
    from ._session import links_of

    links = links_of(layer)
    return None if links is None else links.sources.get(layer)


def _scale(slide: Any) -> tuple[float, float]:
    mpp = slide.mpp
    return mpp.napari_scale() if mpp else (1.0, 1.0)


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
            "mpp": slide.mpp.to_list(),
        },
    }


def add_synthetic_layer(
    viewer: Any, slide: Any, steps: list | None = None, **view_options: Any
) -> tuple[Any, LazySlideView]:
    """Add a synthetic slide as a lazy layer that renders where the user looks; it is selected
    (with ``steps``, by the last step: see :func:`insert_layer`).

    Returns ``(layer, view)``; ``view`` is the :class:`LazySlideView` driving its rendering.
    """
    from napari.layers import Image

    layer = Image(synthetic_levels(slide), **synthetic_layer_kwargs(slide))
    # not hidden: its view plans the chunks in view while napari builds the rest
    insert_layer(viewer, layer, select=True, steps=steps, hidden=False)
    links = _links(viewer)
    links.sources[layer] = slide
    view = links.views[layer] = LazySlideView(viewer, layer, slide, **view_options)
    return layer, view


def synthetic_layer_data(viewer: Any, slide: Any) -> tuple[list, dict[str, Any], str]:
    """Layer data tuple of a lazy synthetic slide (for sample data and readers).

    When napari adds the layer to ``viewer``, it gets a :class:`LazySlideView`, as with
    :func:`add_synthetic_layer`."""
    kwargs = synthetic_layer_kwargs(slide)
    store = kwargs["metadata"][META_KEY]["store"]

    def on_inserted(event: Any) -> None:
        layer = event.value
        links = _links(viewer)
        if layer.metadata.get(META_KEY, {}).get("store") != store or layer in links.sources:
            return
        viewer.layers.events.inserted.disconnect(on_inserted)
        links.sources[layer] = slide
        links.views[layer] = LazySlideView(viewer, layer, slide)

    viewer.layers.events.inserted.connect(on_inserted)
    return synthetic_levels(slide), kwargs, "image"


class PendingSlide:
    """A synthetic slide that is still being opened (its model loads in a worker thread): its
    layer exists at once and shows the "not generated yet" checker until :meth:`attach`."""

    def __init__(
        self, viewer: Any, store: Any, width: int, height: int, chunk_px: int, mpp: float
    ) -> None:
        from napari_cytosyn.chunk_grid import level_shapes

        self.viewer, self.store, self.slide, self.layer = viewer, str(store), None, None
        self.shapes = level_shapes(height, width, chunk_px)
        self.chunk_px, self.mpp = chunk_px, mpp

    def _read(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        if self.slide is None:
            return checker(y, x, h, w)
        return read_finished(self.slide, level, y, x, h, w, chunk_cache(self.slide))

    def layer_data(self) -> tuple[list, dict[str, Any], str]:
        """Layer data tuple; the layer napari makes from it is remembered for :meth:`attach`."""
        levels = [
            SlideLevel(lambda y, x, h, w, k=k: self._read(k, y, x, h, w), shape, self.chunk_px)
            for k, shape in enumerate(self.shapes)
        ]
        kwargs = {
            "name": Path(self.store).name,
            "rgb": True,
            "multiscale": True,
            "contrast_limits": (0, 255),
            "scale": (self.mpp, self.mpp),
            "units": ("um", "um"),
            "metadata": {META_KEY: {"kind": "synthetic", "store": self.store}},
            "visible": False,  # shown by a step after napari's insert (_inserted_in_steps)
        }

        def found(layer: Any) -> None:
            self.layer = layer

        _inserted_in_steps(
            self.viewer,
            lambda ly: ly.metadata.get(META_KEY, {}).get("store") == self.store,
            found,
        )
        return levels, kwargs, "image"

    def attach(self, slide: Any) -> Any:
        """The slide is open: the layer reads it and renders where the viewer looks."""
        if [tuple(s) for s in slide.level_shapes] != [tuple(s) for s in self.shapes]:
            raise ValueError(f"{slide.path} has levels {slide.level_shapes}, not {self.shapes}")
        self.slide = slide
        layer = self.layer
        if layer is None or layer not in self.viewer.layers:
            return None
        layer.metadata.update(synthetic_layer_kwargs(slide)["metadata"])
        links = _links(self.viewer)
        links.sources[layer] = slide
        links.views[layer] = LazySlideView(self.viewer, layer, slide)
        layer.refresh()
        return layer


class PendingImage:
    """An image layer whose pixels are still being loaded (a worker opens its file): the
    layer exists at once with its final shape and place, shows the grey checker, and reads
    the loaded levels after :meth:`attach`. Until then ``metadata["cytosyn"]["loading"]`` is
    set (``_sample_data.loading``)."""

    def __init__(
        self, viewer: Any, shapes: list[tuple[int, int]], kwargs: dict[str, Any], tile_px: int = 256
    ) -> None:
        self.viewer, self.shapes, self.kwargs = viewer, [tuple(s) for s in shapes], kwargs
        self.tile_px, self.levels, self.layer = tile_px, None, None

    def _read(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        if self.levels is None:
            return checker(y, x, h, w)
        return np.asarray(self.levels[level][y : y + h, x : x + w])

    def layer_data(self) -> tuple[list, dict[str, Any], str]:
        """Layer data tuple; the layer napari makes from it is remembered for :meth:`attach`."""
        levels = [
            SlideLevel(lambda y, x, h, w, k=k: self._read(k, y, x, h, w), shape, self.tile_px)
            for k, shape in enumerate(self.shapes)
        ]
        import uuid

        token = uuid.uuid4().hex  # this layer, even among several of the same image
        kwargs = dict(self.kwargs)
        kwargs["metadata"] = {
            **kwargs.get("metadata", {}),
            META_KEY: {"kind": "pending", "loading": token},
        }
        kwargs["visible"] = False  # shown by a step after napari's insert (_inserted_in_steps)

        def found(layer: Any) -> None:
            self.layer = layer

        _inserted_in_steps(
            self.viewer,
            lambda ly: ly.metadata.get(META_KEY, {}).get("loading") == token,
            found,
        )
        return levels, kwargs, "image"

    def attach(self, data: tuple[list, dict[str, Any], str]) -> Any:
        """The file is open: ``data`` is its layer data tuple (same level shapes); the layer
        takes its metadata and shows its pixels. Returns the layer (``None`` if removed)."""
        levels, kwargs, _ = data
        got = [tuple(lv.shape[:2]) for lv in levels]
        if got != [tuple(s) for s in self.shapes]:
            raise ValueError(f"the loaded image has levels {got}, not the expected {self.shapes}")
        self.levels = levels
        layer = self.layer
        if layer is None or layer not in self.viewer.layers:
            return None
        meta = dict(kwargs.get("metadata", {}))
        meta.pop(META_KEY, None)
        layer.metadata.pop(META_KEY, None)
        layer.metadata.update(meta)
        layer.refresh()
        return layer


def view_of(layer: Any) -> LazySlideView | None:
    """The live view of a synthetic layer made here (``None`` for other layers)."""
    from ._session import links_of

    links = links_of(layer)
    return None if links is None else links.views.get(layer)


def add_composite_layer(
    viewer: Any, composite: Any, real_layer: Any, steps: list | None = None
) -> Any:
    """Add a composite (real slide + edits) layer right above ``real_layer``, same placement,
    named after it (``"<real layer> (edited)"``); the selection stays. ``steps``: see
    :func:`insert_layer`."""
    from napari.layers import Image

    layer = Image(
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
    _links(viewer).sources[layer] = composite
    insert_layer(viewer, layer, viewer.layers.index(real_layer) + 1, steps=steps)
    return layer


def composite_metadata(composite: Any) -> dict[str, Any]:
    """Metadata of a composite layer, read by the plugin's writers (mpp, mask, provenance)."""
    return {
        META_KEY: {
            "kind": "composite",
            "store": str(composite.path),
            "edits": len(composite.edits),
        },
        "mpp": composite.mpp.to_list() if composite.mpp else None,
        "synthetic_mask": composite.mask_levels,
        "source_path": str(composite.real.path),
    }


def is_synthetic(slide: Any) -> bool:
    """Whether ``slide`` is a synthetic slide (its contract ``kind``; ``None`` is not)."""
    return getattr(slide, "kind", None) == "synthetic"


def is_composite(slide: Any) -> bool:
    """Whether ``slide`` is a composite: a real slide with edits (its contract ``kind``)."""
    return getattr(slide, "kind", None) == "composite"


def real_path_of(layer: Any) -> str | None:
    """The resolved path of the real slide file a layer shows (itself or, for an edited layer,
    the slide it edits), or ``None`` for layers not opened from a file."""
    from pathlib import Path

    slide = slide_of(layer)
    if is_composite(slide):
        path = slide.real.path
    else:
        path = layer.metadata.get("path") or layer.source.path
    return str(Path(path).resolve()) if path else None


def edited_layer(viewer: Any, composite: Any) -> Any | None:
    """The layer of ``viewer`` that shows ``composite``, if any."""
    return next((ly for ly in viewer.layers if slide_of(ly) is composite), None)


def mask_levels_of(slide: Any, shapes: list[tuple[int, int]], chunk_px: int = 512) -> list[Any]:
    """Levels uint8 of the synthetic mask of what a layer shows (1 = synthetic).

    A composite's mask, ``(h_k, w_k)``, is read from its edit store at every slice (so edits
    and removals show at the next refresh). A synthetic slide or region (any other ``slide``)
    is synthetic everywhere: ones over ``shapes`` in a frame of zeros one pixel wide, levels
    ``(h_k + 2, w_k + 2)`` placed one pixel up and left (:func:`_mask_kwargs` ``framed``),
    because napari draws no contour at the border of an array."""
    if is_composite(slide):
        return [
            SlideLevel(
                lambda y, x, h, w, k=k: slide.mask_region(k, y, x, h, w).view(np.uint8),
                shape,
                slide.store.chunk_px,
                channels=None,
            )
            for k, shape in enumerate(slide.level_shapes)
        ]
    return [_framed_ones(shape, chunk_px) for shape in shapes]


def _framed_ones(shape_hw: tuple[int, int], chunk_px: int) -> SlideLevel:
    """A level ``(h + 2, w + 2)``: ones inside a frame of zeros one pixel wide."""
    hf, wf = shape_hw[0] + 2, shape_hw[1] + 2

    def read(y: int, x: int, h: int, w: int) -> np.ndarray:
        out = np.zeros((h, w), np.uint8)
        out[
            max(0, 1 - y) : max(0, min(h, hf - 1 - y)), max(0, 1 - x) : max(0, min(w, wf - 1 - x))
        ] = 1
        return out

    return SlideLevel(read, (hf, wf), chunk_px, channels=None)


def _layer_shapes(image: Any) -> list[tuple[int, int]]:
    data = image.data if image.multiscale else [image.data]
    return [tuple(level.shape[:2]) for level in data]


def _mask_kwargs(
    image_name: str,
    scale: Any,
    translate: Any,
    multiscale: bool,
    units: Any = None,
    framed: bool = False,
) -> dict[str, Any]:
    """Labels keyword arguments of the "synthetic" layer of an image layer placed at
    ``scale`` / ``translate``; ``framed``: its levels have a frame of one pixel
    (:func:`mask_levels_of`), so it is placed one pixel up and left of the image."""
    extra = {"units": tuple(units)[-2:]} if units is not None else {}
    shift = np.asarray(scale, float) if framed else 0.0
    return {
        **extra,
        "name": f"{image_name} synthetic",
        "multiscale": multiscale,
        "scale": tuple(scale),
        "translate": tuple(np.asarray(translate, float) - shift),
        "opacity": 0.9,
        # magenta, as the image-label colour of exports' labels/synthetic (given here, not
        # set afterwards: each Labels style setter re-slices the layer)
        "colormap": {0: (0.0, 0.0, 0.0, 0.0), 1: (1.0, 0.0, 1.0, 1.0), None: (0, 0, 0, 0)},
        "metadata": {META_KEY: {"kind": "synthetic-mask", "of": image_name}},
    }


def _link_mask(viewer: Any, image: Any, labels: Any, steps: list | None = None) -> None:
    """Outline style, right above ``image`` (inserted there when not a layer yet, so napari
    draws it once, styled; ``steps``: see :func:`insert_layer`), removed with it."""
    # styled without a slice for each setter (napari's contour of the first, 11 ms): a layer
    # is sliced when inserted or shown, one already in the viewer here
    with labels._block_refresh():  # a private napari method: test_outline_layer.py
        labels.contour = 3  # an outline: the tissue under it stays visible
        labels.editable = False
        _paint_tools_follow_editable(labels)
        _binary_contours(labels)
    if labels in viewer.layers:
        labels.refresh()
    _links(viewer).masks[image] = labels
    if image in viewer.layers and labels not in viewer.layers:
        insert_layer(viewer, labels, viewer.layers.index(image) + 1, steps=steps)
    elif image in viewer.layers:
        viewer.layers.move(viewer.layers.index(labels), viewer.layers.index(image) + 1)

    def on_removed(event: Any) -> None:
        if event.value is image:
            viewer.layers.events.removed.disconnect(on_removed)
            if labels in viewer.layers:
                viewer.layers.remove(labels)

    viewer.layers.events.removed.connect(on_removed)


def insert_layer(
    viewer: Any,
    layer: Any,
    index: int | None = None,
    select: bool = False,
    steps: list | None = None,
    hidden: bool = True,
) -> None:
    """Insert ``layer`` at ``index`` (``None``: on top) of ``viewer``'s layers, selected only
    with ``select`` (:func:`keep_selection`).

    napari builds everything of a new layer on the GUI thread in the one turn of the event loop
    that inserts it: 160-250 ms of GUI CPU for an image on a 2-core machine, whatever its data
    (a numpy pyramid costs the same as a lazy one; ``benchmarks/gui_latency.py``). With
    ``steps`` (a list), the layer is inserted without its two costliest parts, the canvas
    visual (vispy layer, 30-70 ms) and the layer controls (35-70 ms), and ``hidden`` (its slice
    and first draw in a step of their own): the steps that build them, show it and select it
    are appended to ``steps``, for the caller to run one per turn (:func:`later`; see
    :func:`_qt_part_steps`)."""
    layers = viewer.layers
    index = len(layers) if index is None else index
    qt_viewer = getattr(getattr(viewer, "window", None), "_qt_viewer", None)
    if steps is None or qt_viewer is None:
        with nullcontext() if select else keep_selection(layers):
            layers.insert(index, layer)
        return
    shown = layer.visible and hidden
    if shown:
        layer.visible = False  # sliced and drawn by the show step
    with _qt_parts_blocked(qt_viewer, layers), keep_selection(layers):
        layers.insert(index, layer)
    steps += _qt_part_steps(viewer, layer, shown, select)


@contextmanager
def _qt_parts_blocked(qt_viewer: Any, layers: Any) -> Iterator[None]:
    """napari builds no canvas visual and no layer controls for layers inserted meanwhile
    (private napari names, checked by ``tests/_qt/test_insert_layer.py``)."""
    inserted = layers.events.inserted
    with (
        inserted.blocker(qt_viewer._on_add_layer_change),
        inserted.blocker(qt_viewer.controls._add),
    ):
        yield


#: layers selected by their insert steps' ``select_it`` (see :func:`_qt_part_steps`)
_SELECTED_BY_STEPS: weakref.WeakSet = weakref.WeakSet()


def _qt_part_steps(viewer: Any, layer: Any, shown: bool, select: bool) -> list[Callable]:
    """Steps, one per turn, for a layer inserted in :func:`_qt_parts_blocked`: make napari's
    vispy layer (its visuals and shaders: 40-60 ms of GUI CPU), put it in the canvas (15-35 ms,
    the units check included); show it (``shown``, unless its visibility was set meanwhile: a
    user or script that hid it keeps it so); with ``select``, build its layer controls and
    select it (making napari's controls, 40-70 ms, and putting them in its panel, 15-20 ms,
    in a step each).

    A layer not selected gets its controls (35-150 ms of GUI CPU) only when it is first
    selected: napari shows the controls of the selected layer alone, and the plugin's outlines
    and edited layers are often never selected. Until then an empty stand-in takes their place
    in napari's controls panel. Until the visual is built, removing or selecting any layer
    builds it first (napari's handlers of those expect every layer's visual). Private napari
    names, checked by ``tests/_qt/test_insert_layer.py``."""
    import weakref

    from napari.utils.events import Event
    from qtpy.QtWidgets import QFrame

    layers, qt_viewer = viewer.layers, viewer.window._qt_viewer
    controls = qt_viewer.controls
    # the hooks may outlive the window (a layer never selected): no strong reference to it
    window = weakref.ref(qt_viewer)
    event = Event("inserted", value=layer, index=layers.index(layer))
    stand_in = QFrame()
    controls.addWidget(stand_in)
    controls.widgets[layer] = stand_in
    missing = {"visual", "controls"}
    made_visual: list = []  # napari's vispy layer, made by make_visual, not in the canvas yet
    made_controls: list = []  # napari's controls, made by make_controls, not in the panel yet
    touched: list[bool] = []
    selected_before = set(layers.selection)

    def make_visual() -> None:
        qt = window()
        # with napari's experimental QtPoll on, napari's own in one step (build_visual)
        if "visual" in missing and not made_visual and layer in layers and qt is not None:
            from napari._vispy.utils.visual import create_vispy_layer

            if getattr(qt, "_qt_poll", None) is None:
                made_visual.append(create_vispy_layer(layer, font_info=qt.canvas.font_info()))

    def build_visual() -> None:
        qt = window()
        if "visual" in missing and layer in layers and qt is not None:
            missing.discard("visual")
            if made_visual:  # the rest of napari's QtViewer._add_layer
                qt.canvas.add_layer_visual_mapping(layer, made_visual.pop())
            else:
                qt._on_add_layer_change(event)

    def make_controls() -> None:
        if "controls" in missing and not made_controls and layer in layers:
            from napari._qt.layer_controls.qt_layer_controls_container import (
                create_qt_layer_controls,
            )
            from napari.settings import get_settings

            if not get_settings().experimental.dynamic_layer_controls:
                with _colormap_not_reset(layer):
                    made_controls.append(create_qt_layer_controls(layer))

    def build_controls() -> None:
        build_visual()
        if "controls" in missing and layer in layers:
            missing.discard("controls")
            if made_controls:  # the rest of napari's QtLayerControlsContainer._add
                widget = made_controls.pop()
                widget.ndisplay = viewer.dims.ndisplay
                controls.addWidget(widget)
                controls.widgets[layer] = widget
            else:
                controls._add(event)  # napari's, in place of the stand-in
            if controls.currentWidget() is stand_in:
                controls._populate()
            controls.removeWidget(stand_in)
            stand_in.deleteLater()
            forget()

    def forget() -> None:
        layers.events.removing.disconnect(on_removing)
        layers.selection.events.changed.disconnect(on_selection)

    def on_removing(event: Any) -> None:
        build_visual()
        if layers[event.index] is layer:  # napari removes the controls or the stand-in
            for widget in made_controls:
                widget.deleteLater()
            forget()

    def on_selection(event: Any) -> None:  # after napari showed the controls (or stand-in)
        build_visual()
        if layer in layers.selection:
            build_controls()

    def mark(event: Any = None) -> None:
        touched.append(True)

    def show() -> None:
        layer.events.visible.disconnect(mark)
        if not touched and layer in layers:
            layer.visible = True

    def select_it() -> None:
        # as napari's own insert does, unless the user selected or added a layer meanwhile
        # (the steps of a sample run on after it is shown: they must not take the selection
        # from the Shapes layer added just after); a layer these steps selected gives it up,
        # as napari's newest inserted layer does
        now = set(layers.selection)
        if layer in layers and (now == selected_before or now <= set(_SELECTED_BY_STEPS)):
            layers.selection.active = layer
            _SELECTED_BY_STEPS.add(layer)

    layers.events.removing.connect(on_removing, position="first")
    layers.selection.events.changed.connect(on_selection, position="first")
    if shown:
        layer.events.visible.connect(mark)
    steps = [make_visual, build_visual, *([show] if shown else [])]
    return steps + ([make_controls, build_controls, select_it] if select else [])


@contextmanager
def _colormap_not_reset(layer: Any) -> Iterator[None]:
    """Meanwhile a colormap that resolves to ``layer``'s own is not set again: napari's colormap
    control, when made, sets the layer's colormap to the one it has (its combo box catching
    up), and the layer then remakes its thumbnail and its visual redraws the whole canvas
    (16-33 ms of paint + a window compose) for nothing (a private method,
    ``_set_colormap``; ``tests/_qt/test_insert_layer.py`` fails if napari renames it)."""
    from napari.layers.intensity_mixin import IntensityVisualizationMixin
    from napari.utils.colormaps import ensure_colormap

    if not isinstance(layer, IntensityVisualizationMixin):
        yield
        return
    set_colormap = layer._set_colormap

    def set_if_new(colormap: Any) -> None:
        if ensure_colormap(colormap) is not layer.colormap:
            set_colormap(colormap)

    layer._set_colormap = set_if_new
    try:
        yield
    finally:
        del layer._set_colormap


def later(*steps: Callable[[], Any], after_ms: int = 1) -> None:
    """Run ``steps`` on the GUI thread, one per event-loop turn, the first ``after_ms`` from
    now: layers added in one turn froze the viewer for the sum of napari's work on them. A
    step that returns a list of steps (an insert's, :func:`insert_layer`) has them run next.

    Each next step waits, after the window has composed what the step changed, as long as the
    step took (1 ms at least): timers that fall due during the step or the compose (a 10 ms
    one: the benchmark's ticker, an animation, a user's input) run before the next step, not
    after it. Timed from the step's end instead, a 4 ms step's successor (napari's controls,
    27 ms) fell due during the 56 ms compose of the step's first draw and ran before them,
    in the same 95 ms gap (:func:`after_repaints`)."""
    import time

    from qtpy.QtCore import QTimer

    def run() -> None:
        start = time.perf_counter()
        more = steps[0]()
        took_ms = round((time.perf_counter() - start) * 1000)
        rest = (*(more if isinstance(more, list) else ()), *steps[1:])
        if rest:
            after_repaints(lambda: later(*rest, after_ms=max(1, took_ms)))

    if steps:
        QTimer.singleShot(after_ms, run)


_RELAY: list = []  # the QObject of after_repaints, made on first use (GUI thread)


def after_repaints(fn: Callable[[], Any]) -> None:
    """Call ``fn`` on the GUI thread once the events posted so far are handled, the windows'
    repaint requests included: Qt posts those at low priority, so they run after the normal
    posted events and before this one, posted at low priority after them."""
    from qtpy.QtCore import QCoreApplication, QEvent, QObject, Qt

    if not _RELAY:

        class Relay(QObject):
            kind = QEvent.Type(QEvent.registerEventType())

            def event(self, event: Any) -> bool:
                if event.type() == self.kind:
                    event.fn()
                    return True
                return super().event(event)

        _RELAY.append(Relay())  # no parent: it lives as long as the process
    relay = _RELAY[0]
    event = QEvent(relay.kind)
    event.fn = fn
    QCoreApplication.postEvent(relay, event, Qt.EventPriority.LowEventPriority.value)


def _inserted_in_steps(
    viewer: Any, match: Callable[[Any], bool], found: Callable, count: int = 1
) -> None:
    """The layers of layer data tuples (samples, readers), which napari inserts after the
    function that made them returns: when each of the ``count`` layers for which
    ``match(layer)`` is inserted (from the same call, on the GUI thread), its Qt parts, showing
    it (when its tuple says ``visible=False``) and selecting it run as :func:`later` steps
    (:func:`_qt_part_steps`); then ``found(layer)``. Other layers inserted meanwhile are built
    as napari builds them."""
    from qtpy.QtCore import QTimer

    layers = viewer.layers
    qt_viewer = getattr(getattr(viewer, "window", None), "_qt_viewer", None)
    if qt_viewer is None:
        _after_insert(viewer, match, found)
        return
    blocked = _qt_parts_blocked(qt_viewer, layers)
    selecting, released, matched = layers._activate_on_insert, [], []

    def release() -> None:
        if not released:
            released.append(True)
            blocked.__exit__(None, None, None)
            layers.events.inserted.disconnect(on_inserted)

    def release_all() -> None:  # after napari's insert (which selects when it returns)
        release()
        layers._activate_on_insert = selecting

    def on_inserted(event: Any) -> None:
        if not match(event.value):
            qt_viewer._on_add_layer_change(event)
            qt_viewer.controls._add(event)
            return
        matched.append(event.value)
        if len(matched) == count:
            release()
        later(*_qt_part_steps(viewer, event.value, not event.value.visible, selecting))
        found(event.value)

    blocked.__enter__()
    layers._activate_on_insert = False
    layers.events.inserted.connect(on_inserted)
    QTimer.singleShot(0, release_all)  # never left blocked, whatever napari did with the tuple


@contextmanager
def keep_selection(layers: Any) -> Iterator[None]:
    """Layers inserted meanwhile are not selected: napari selects a layer it inserts and
    switches the layer controls to it (20-40 ms of GUI CPU), but the plugin's results (an
    edited layer, a region, an outline) are not what the user was working on: the selection
    stays where it was, on the mask layer they draw on (a private attribute,
    ``_activate_on_insert``; ``tests/_qt/test_outline_layer.py`` fails if napari renames it)."""
    before = layers._activate_on_insert
    layers._activate_on_insert = False
    try:
        yield
    finally:
        layers._activate_on_insert = before


#: napari's Labels painting tool overlays: it builds their vispy visuals when a Labels layer
#: whose overlays are visible is inserted (30-45 ms of the 110-200 ms of GUI CPU of an outline)
PAINT_OVERLAYS = ("polygon", "brush_stroke")


def _paint_tools_follow_editable(labels: Any) -> None:
    """Show ``labels``' painting tool overlays only while it is editable: napari then builds
    their visuals only for a layer that can be painted, never for an outline (a private
    attribute, ``Labels._overlays``; ``tests/_qt/test_outline_layer.py`` fails if napari
    renames it)."""

    def follow(event: Any = None) -> None:
        for name in PAINT_OVERLAYS:
            labels._overlays[name].visible = labels.editable

    follow()
    labels.events.editable.connect(follow)


def _binary_contours(labels: Any) -> None:
    """``labels`` draws the contour of a 0/1 mask with a few boolean shifts instead of napari's
    grey dilation and erosion (``get_contours``; 50-110 ms of the GUI thread per slice of an
    outline at the screen's size, for the same pixels: ``tests/_qt/test_outline_layer.py``
    compares them). Other label values, or a background other than 0, use napari's. Replaces
    a private method of this layer only (``Labels._calculate_contour``)."""
    from napari.layers.labels._labels_utils import expand_slice

    napari_contour = labels._calculate_contour

    def calculate(data: np.ndarray, data_slice: tuple[slice, ...]) -> np.ndarray | None:
        thickness = int(labels.contour)
        if thickness < 1 or data.ndim != 2 or labels.colormap.background_value != 0:
            return napari_contour(data, data_slice)
        expanded = expand_slice(data_slice, data.shape, thickness)
        mask = np.asarray(data[expanded])
        if mask.size and mask.max() > 1:
            return napari_contour(data, data_slice)
        # inside: every pixel within L1 distance ``thickness`` is 1 (an erosion by napari's
        # diamond, as ``thickness`` erosions by a cross; outside the array does not count)
        inside = mask.astype(bool)
        for _ in range(thickness):
            eroded = inside.copy()
            eroded[1:] &= inside[:-1]
            eroded[:-1] &= inside[1:]
            eroded[:, 1:] &= inside[:, :-1]
            eroded[:, :-1] &= inside[:, 1:]
            inside = eroded
        contour = np.where(inside, 0, mask).astype(mask.dtype, copy=False)
        back = tuple(
            slice(s.start - e.start, s.stop - e.start)
            for s, e in zip(data_slice, expanded, strict=True)
        )
        return contour[back]

    labels._calculate_contour = calculate


def _after_insert(viewer: Any, match: Callable[[Any], bool], callback: Callable) -> None:
    """Call ``callback(layer)`` once, when a layer for which ``match(layer)`` is inserted (layer
    data tuples from readers and samples become layers only after they return)."""

    def on_inserted(event: Any) -> None:
        if match(event.value):
            viewer.layers.events.inserted.disconnect(on_inserted)
            callback(event.value)

    viewer.layers.events.inserted.connect(on_inserted)


def mask_layer_data(viewer: Any, image_data: tuple, slide: Any) -> tuple[Any, dict, str]:
    """The "synthetic" labels layer data tuple of an image layer data tuple (readers); once
    both are layers of ``viewer`` they are linked as by :func:`show_synthetic_mask`."""
    levels, kwargs, _ = image_data
    shapes = [tuple(lv.shape[:2]) for lv in levels]
    chunk = slide.store.chunk_px if slide is not None else 512
    masks = mask_levels_of(slide, shapes, chunk)
    name = kwargs["name"]
    mkw = _mask_kwargs(
        name,
        kwargs.get("scale", (1, 1)),
        kwargs.get("translate", (0, 0)),
        len(masks) > 1,
        kwargs.get("units"),
        framed=not is_composite(slide),
    )

    def link(labels: Any) -> None:
        if name in viewer.layers:
            _link_mask(viewer, viewer.layers[name], labels)

    _after_insert(viewer, lambda ly: ly.name == mkw["name"], link)
    return (masks if len(masks) > 1 else masks[0], mkw, "labels")


def composite_layer_data(viewer: Any, composite: Any, real_data: tuple) -> tuple[Any, dict, str]:
    """Layer data tuple of an edited (composite) layer placed like ``real_data``'s layer."""
    _, real_kwargs, _ = real_data
    kwargs = {
        "name": f"{real_kwargs['name']} (edited)",
        "rgb": True,
        "multiscale": True,
        "contrast_limits": (0, 255),
        "scale": real_kwargs.get("scale", (1.0, 1.0)),
        "metadata": composite_metadata(composite),
    }
    if "units" in real_kwargs:
        kwargs["units"] = real_kwargs["units"]
    store = str(composite.path)

    def register(layer: Any) -> None:
        _links(viewer).sources[layer] = composite

    _after_insert(viewer, lambda ly: ly.metadata.get(META_KEY, {}).get("store") == store, register)
    return composite_levels(composite), kwargs, "image"


def show_synthetic_mask(viewer: Any, image: Any, slide: Any, steps: list | None = None) -> Any:
    """Add (or refresh) the "synthetic" labels layer of an image layer: label 1 marks its
    synthetic pixels, drawn as an outline right above the image, at the same place; it is
    removed with the image; ``steps``: see :func:`insert_layer`. Returns the labels layer
    (``None`` if ``image`` was removed)."""
    if image not in viewer.layers:
        return None
    labels = _links(viewer).masks.get(image)
    if labels is not None and labels in viewer.layers:
        labels.refresh()
        return labels
    chunk = slide.chunk_px if is_synthetic(slide) else 512
    levels = mask_levels_of(slide, _layer_shapes(image), chunk)
    kwargs = _mask_kwargs(
        image.name,
        image.scale[-2:],
        image.translate[-2:],
        len(levels) > 1,
        image.units,
        framed=not is_composite(slide),
    )
    from napari.layers import Labels

    data = levels if len(levels) > 1 else np.asarray(levels[0])
    labels = Labels(data, **kwargs)
    _link_mask(viewer, image, labels, steps)
    return labels


def mask_layer_of(image: Any) -> Any | None:
    """The "synthetic" labels layer of an image layer, if it has one."""
    from ._session import links_of

    links = links_of(image)
    return None if links is None else links.masks.get(image)
