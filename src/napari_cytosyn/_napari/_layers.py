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

from ._chunk_cache import ChunkCache, chunk_cache
from ._lazy_view import LazySlideView

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
