"""napari writer contributions: save an image layer (single or multiscale) as OME-Zarr, OME-TIFF
or an SVS-layout TIFF (``*.svs``: every level readable by OpenSlide).

npe2 single-layer writer signature: ``writer(path, data, meta) -> list[str]``. ``data`` is the
layer data (a list of arrays for multiscale layers), ``meta`` the layer attributes.

Physical size comes, in this order, from ``meta["metadata"]["mpp"]`` (set by our readers and
widgets), else from the layer ``scale`` when its ``units`` are micrometres; otherwise the file
is written in pixel units. ``meta["metadata"]["synthetic_mask"]`` (a ``(y, x)`` array or
pyramid) becomes the synthetic-mask label image (OME-Zarr) or the mask TIFF and GeoJSON beside
a TIFF. Provenance is ``meta["metadata"]["provenance"]``
when given, else the ``provenance()`` of what the layer shows: the synthetic-slide or edit store
named in ``metadata["cytosyn"]`` (model, seed, sampler, edits), or the real slide file at
``metadata["path"]`` (name and SHA-256). The layer is written by the one
:func:`~napari_cytosyn.export.export_slide`, as an ``ArraySlide``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_cytosyn.pixel_size import PixelSize

_UM = {"micrometer", "micron", "um", "µm"}


def _levels_rgb(data: Any) -> list[Any]:
    # TypeError, not ValueError: napari turns a writer's ValueError into "not a valid writer"
    # and the user would never see why.
    levels = list(data) if isinstance(data, list | tuple) or _is_multiscale(data) else [data]
    out = []
    for i, lv in enumerate(levels):
        if np.dtype(lv.dtype) != np.uint8:
            raise TypeError(
                f"only 8-bit images can be exported as RGB slides; level {i} is {lv.dtype}. "
                "Convert the layer to uint8 first"
            )
        if lv.ndim == 3 and lv.shape[-1] in (3, 4):
            out.append(lv[..., :3])
        elif lv.ndim == 2:
            out.append(_GreyAsRGB(lv))
        else:
            raise TypeError(
                f"only 2-D RGB(A) or greyscale image layers can be exported, got shape "
                f"{tuple(lv.shape)} at level {i}"
            )
    return out


def _is_multiscale(data: Any) -> bool:
    return type(data).__name__ == "MultiScaleData"


class _GreyAsRGB:
    """A (y, x) uint8 array seen as (y, x, 3) without copying it whole."""

    dtype = np.dtype(np.uint8)
    ndim = 3

    def __init__(self, grey: Any):
        self.grey = grey
        self.shape = (*grey.shape, 3)

    def __getitem__(self, key: Any) -> np.ndarray:
        ys, xs = key[:2]
        block = self.grey[ys, xs]
        block = np.asarray(block.compute() if hasattr(block, "compute") else block)
        return np.repeat(block[..., None], 3, axis=-1)


def _mpp(meta: dict[str, Any]) -> PixelSize | None:
    layer_meta = meta.get("metadata") or {}
    mpp = layer_meta.get("mpp")
    if mpp is not None:
        return PixelSize.from_any(mpp)
    units = meta.get("units")
    scale = meta.get("scale")
    if (
        units is not None
        and scale is not None
        and len(scale) >= 2
        and all(str(u).lower() in _UM for u in list(units)[-2:])
    ):
        return PixelSize(float(scale[-1]), float(scale[-2]))
    return None


def _mask_levels(meta: dict[str, Any]) -> list[Any] | None:
    mask = (meta.get("metadata") or {}).get("synthetic_mask")
    if mask is None:
        return None
    return list(mask) if isinstance(mask, list | tuple) else [mask]


def _provenance(meta: dict[str, Any]) -> dict[str, Any] | None:
    from pathlib import Path

    from napari_cytosyn.slide.kinds import open_any

    layer_meta = meta.get("metadata") or {}
    if layer_meta.get("provenance") is not None:
        return layer_meta["provenance"]
    ours = layer_meta.get("cytosyn") or {}
    store = ours.get("store")
    if ours.get("kind") in ("synthetic", "composite") and store and Path(store).exists():
        try:
            return open_any(store).provenance()
        except FileNotFoundError:  # the real slide of an edit store has gone: nothing to name
            return None
    path = layer_meta.get("path")
    if path and Path(path).is_file():
        return open_any(path).provenance()
    return None


def _layer_slide(data: Any, meta: dict[str, Any]) -> Any:
    """One image layer as an ``ArraySlide``: its pyramid, mpp, synthetic mask and provenance;
    a ``"composite"`` when it has a mask, ``"synthetic"`` when it shows a synthetic slide or a
    region-mode image."""
    from napari_cytosyn.slide.array import ArraySlide

    masks = _mask_levels(meta)
    ours = (meta.get("metadata") or {}).get("cytosyn") or {}
    generated = ours.get("kind") in ("synthetic", "region")  # a slide or region-mode image
    kind = "composite" if masks else "synthetic" if generated else "real"
    return ArraySlide(
        _levels_rgb(data),
        mpp=_mpp(meta),
        kind=kind,
        provenance=_provenance(meta),
        mask_levels=masks,
        name=meta.get("name") or "image",
    )


def _write_layer(fmt: str, path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """One image layer written by ``export_slide`` in format ``fmt``."""
    from napari_cytosyn.export import export_slide

    # napari's save dialog has already asked before replacing
    out = export_slide(_layer_slide(data, meta), path, format=fmt, overwrite=True)
    return [str(out)]


def write_ome_zarr_layer(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one image layer as OME-Zarr (NGFF 0.4); returns ``[path]``."""
    return _write_layer("ome-zarr", path, data, meta)


def write_ome_tiff_layer(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one image layer as a pyramidal, JPEG-compressed OME-TIFF; returns ``[path]``."""
    return _write_layer("ome-tiff", path, data, meta)


def write_tiff_layer(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one image layer as a JPEG pyramidal TIFF in the SVS layout; returns ``[path]``."""
    return _write_layer("tiff", path, data, meta)
