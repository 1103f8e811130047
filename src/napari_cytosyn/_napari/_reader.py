"""napari reader contribution: a whole-slide image becomes one multiscale RGB image layer at its
physical scale (um), read lazily through `napari_cytosyn.slide.open_slide`."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from napari_cytosyn.slide.real import SLIDE_SUFFIXES, ZARR_SUFFIXES

PathLike = str | os.PathLike
LayerData = tuple[Any, dict[str, Any], str]


def claims(path: PathLike) -> bool:
    """Whether the reader takes ``path``: a slide file ending or an existing ``.zarr`` directory."""
    p = Path(path)
    name = p.name.lower().rstrip("/")
    if name.endswith(ZARR_SUFFIXES):
        return p.is_dir()
    return name.endswith(SLIDE_SUFFIXES) and not p.is_dir()


def napari_get_reader(path: PathLike | Sequence[PathLike]) -> Callable | None:
    """npe2 ``get_reader``: `read_slides` for paths this plugin claims, None otherwise."""
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    if not paths or not all(claims(p) for p in paths):
        return None
    return read_slides


def read_slides(path: PathLike | Sequence[PathLike]) -> list[LayerData]:
    """Open each slide as a layer data tuple ``(levels, kwargs, "image")``.

    ``levels`` are the slide's lazy (y, x, 3) uint8 dask levels; ``kwargs`` set ``rgb``,
    ``multiscale``, ``scale`` (y, x) um/px from the slide's mpp with ``units`` um, contrast limits
    (0, 255), the file's name and ``metadata`` (`Slide.metadata()`). A slide without mpp gets
    scale 1, ``metadata["mpp_known"] = False`` and a warning notification.
    """
    from napari_cytosyn.slide import open_slide

    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    layers = []
    for p in paths:
        slide = open_slide(p)
        layers.append(slide_layer_data(slide))
    return layers


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
        mpp_x, mpp_y = slide.mpp
        kwargs["scale"] = (mpp_y, mpp_x)
        kwargs["units"] = ("um", "um")
    else:
        from napari.utils.notifications import show_warning

        kwargs["scale"] = (1.0, 1.0)
        show_warning(
            f"{slide.path.name}: the file does not state its pixel size (mpp); shown at 1 unit "
            "per pixel. Distances and areas in this layer are in pixels, not micrometres."
        )
    return (list(slide.levels), kwargs, "image")
