"""napari reader contribution: a whole-slide image becomes one multiscale RGB image layer at its
physical scale (um), read lazily; every path is opened by `napari_cytosyn.slide.kinds.open_any`.

What this plugin writes opens with what is synthetic in it: an export comes back as the image
plus a "synthetic" labels layer (from ``labels/synthetic`` of an OME-Zarr, or the mask TIFF
beside a TIFF export); a synthetic slide's store (``.cytosyn``) as its lazy layer, rendered
where you look; an edit store as the real slide with its edited layer and labels on top.
Dropping any of them on napari does the same.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from napari_cytosyn.slide.real import SLIDE_SUFFIXES, ZARR_SUFFIXES

PathLike = str | os.PathLike
LayerData = tuple[Any, dict[str, Any], str]


STORE_SUFFIX = ".cytosyn"


def claims(path: PathLike) -> bool:
    """Whether the reader takes ``path``: a slide file ending, an existing ``.zarr`` directory or
    a store of this plugin (``.cytosyn``, or any directory holding one)."""
    p = Path(path)
    name = p.name.lower().rstrip("/")
    if name.endswith((*ZARR_SUFFIXES, STORE_SUFFIX)):
        return p.is_dir()
    if p.is_dir():
        from napari_cytosyn.slide.store import read_store_attrs

        return read_store_attrs(p) is not None
    return name.endswith(SLIDE_SUFFIXES) and not p.is_dir()


def napari_get_reader(path: PathLike | Sequence[PathLike]) -> Callable | None:
    """npe2 ``get_reader``: `read_slides` for paths this plugin claims, None otherwise."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or not all(claims(p) for p in paths):
        return None
    return read_slides


def read_slides(path: PathLike | Sequence[PathLike]) -> list[LayerData]:
    """Open each path with :func:`~napari_cytosyn.slide.kinds.open_any` as layer data tuples.

    A slide file or export gives ``(levels, kwargs, "image")``: ``levels`` are the slide's lazy
    (y, x, 3) uint8 dask levels; ``kwargs`` set ``rgb``, ``multiscale``, ``scale`` (y, x) um/px
    from the slide's mpp with ``units`` um, contrast limits (0, 255), the file's name and
    ``metadata`` (`Slide.metadata()`), plus the export's "synthetic" labels when it has a mask.
    A slide without mpp gets scale 1, ``metadata["mpp_known"] = False`` and a warning
    notification. A store gives the layers of :func:`read_store`.
    """
    from napari_cytosyn.slide.kinds import open_any, store_kind

    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    layers = []
    for p in paths:
        if store_kind(p) is not None:
            layers += read_store(p)
            continue
        slide = open_any(p)
        layers.append(slide_layer_data(slide))
        mask = synthetic_mask_data(slide, layers[-1][1])
        if mask is not None:
            layers.append(mask)
    return _in_steps(layers)


def _in_steps(layers: list[LayerData]) -> list[LayerData]:
    """napari inserts the layers of a reader's tuples all in one turn of the GUI thread
    (150-250 ms of GUI CPU each): read there with a viewer open, their Qt parts, first draws
    (the tuples say ``visible=False``; not a synthetic slide's, whose view plans from the
    camera) and selection run in the turns after (:func:`._layers._inserted_in_steps`). Read
    in a worker thread (the H&E sample), the tuples are returned as they are."""
    import threading
    import uuid

    import napari

    from . import _layers

    viewer = napari.current_viewer()
    if viewer is None or not layers or threading.current_thread() is not threading.main_thread():
        return layers
    token, out = uuid.uuid4().hex, []
    for data, kwargs, kind in layers:
        metadata = {**kwargs.get("metadata", {}), _INSERT_KEY: token}
        lazy = metadata.get(_layers.META_KEY, {}).get("kind") == "synthetic"
        out.append((data, {**kwargs, "metadata": metadata, "visible": lazy}, kind))
    _layers._inserted_in_steps(
        viewer,
        lambda ly: ly.metadata.get(_INSERT_KEY) == token,
        lambda ly: ly.metadata.pop(_INSERT_KEY, None),
        count=len(out),
    )
    return out


_INSERT_KEY = "cytosyn-insert"  # metadata of a reader's layer until napari has inserted it


def read_store(path: PathLike) -> list[LayerData]:
    """Layers of a store of this plugin: a synthetic slide (its lazy layer) or an edit store
    (real slide, edited layer, "synthetic" labels)."""
    import napari

    from napari_cytosyn.slide.kinds import open_any

    from . import _layers

    viewer = napari.current_viewer()
    if viewer is None:
        raise RuntimeError(f"opening {path} needs an open napari viewer (it renders lazily)")
    slide = open_any(path, mode="r+")
    if slide.kind == "synthetic":
        # Every pixel of it is synthetic: no labels layer to say so (the layer is the slide).
        return [_layers.synthetic_layer_data(viewer, slide)]
    real = slide_layer_data(slide.real)
    edited = _layers.composite_layer_data(viewer, slide, real)
    return [real, edited, _layers.mask_layer_data(viewer, edited, slide)]


def synthetic_mask_data(slide: Any, image_kwargs: dict[str, Any]) -> LayerData | None:
    """The "synthetic" labels layer of an export, when it has a mask
    (`Slide.stored_mask_levels`: ``labels/synthetic`` of an OME-Zarr or the mask TIFF beside a
    TIFF export); else ``None``."""
    levels = slide.stored_mask_levels
    if not levels:
        return None
    kwargs = {
        "name": f"{image_kwargs['name']} synthetic",
        "multiscale": len(levels) > 1,
        "scale": image_kwargs.get("scale", (1.0, 1.0)),
        # filled, so faint: the tissue under it stays visible (magenta, as written)
        "opacity": 0.35,
        "colormap": {0: (0.0, 0.0, 0.0, 0.0), 1: (1.0, 0.0, 1.0, 1.0), None: (0, 0, 0, 0)},
        "metadata": {"cytosyn": {"kind": "synthetic-mask", "of": image_kwargs["name"]}},
    }
    if "units" in image_kwargs:
        kwargs["units"] = image_kwargs["units"]
    return (levels if len(levels) > 1 else levels[0], kwargs, "labels")


def slide_layer_data(slide: Any) -> LayerData:
    """Layer data tuple for an open `napari_cytosyn.slide.Slide` (see `read_slides`)."""
    metadata = slide.metadata()
    kwargs: dict[str, Any] = {
        "name": slide.name,
        "rgb": True,
        "multiscale": True,
        "contrast_limits": (0, 255),
        "metadata": metadata,
    }
    if slide.mpp is not None:
        kwargs["scale"] = slide.mpp.napari_scale()
        kwargs["units"] = ("um", "um")
    else:
        from napari.utils.notifications import show_warning

        kwargs["scale"] = (1.0, 1.0)
        show_warning(
            f"{slide.path.name}: the file does not state its pixel size (mpp); shown at 1 unit "
            "per pixel. Distances and areas in this layer are in pixels, not micrometres."
        )
    return (list(slide.levels), kwargs, "image")
