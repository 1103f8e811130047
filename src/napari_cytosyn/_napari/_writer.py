"""napari writer contributions: save an image layer (single or multiscale) as OME-Zarr, OME-TIFF
or an SVS-layout TIFF (``*.svs``: every level readable by OpenSlide).

npe2 single-layer writer signature: ``writer(path, data, meta) -> list[str]``. ``data`` is the
layer data (a list of arrays for multiscale layers), ``meta`` the layer attributes.

Physical size comes, in this order, from ``meta["metadata"]["mpp"]`` (set by our readers and
widgets), else from the layer ``scale`` when its ``units`` are micrometres; otherwise the file
is written in pixel units. ``meta["metadata"]["synthetic_mask"]`` (a ``(y, x)`` array or
pyramid) becomes the synthetic-mask label image (OME-Zarr) or the mask TIFF and GeoJSON beside
a TIFF. Provenance is ``meta["metadata"]["provenance"]``
when given, else rebuilt from what the layer shows: the synthetic-slide or edit store named in
``metadata["cytosyn"]`` (model, seed, sampler, edits), or the real slide file at
``metadata["path"]`` (name and SHA-256).
"""

from __future__ import annotations

from typing import Any

import numpy as np

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


def _mpp(meta: dict[str, Any]) -> tuple[float, float] | None:
    layer_meta = meta.get("metadata") or {}
    mpp = layer_meta.get("mpp")
    if mpp is not None:
        return (float(mpp), float(mpp)) if np.isscalar(mpp) else (float(mpp[0]), float(mpp[1]))
    units = meta.get("units")
    scale = meta.get("scale")
    if (
        units is not None
        and scale is not None
        and len(scale) >= 2
        and all(str(u).lower() in _UM for u in list(units)[-2:])
    ):
        return float(scale[-1]), float(scale[-2])
    return None


def _mask_levels(meta: dict[str, Any]) -> list[Any] | None:
    mask = (meta.get("metadata") or {}).get("synthetic_mask")
    if mask is None:
        return None
    return list(mask) if isinstance(mask, list | tuple) else [mask]


def _provenance(meta: dict[str, Any]) -> dict[str, Any] | None:
    from pathlib import Path

    from napari_cytosyn.export import build_provenance, slide_provenance

    layer_meta = meta.get("metadata") or {}
    if layer_meta.get("provenance") is not None:
        return layer_meta["provenance"]
    ours = layer_meta.get("cytosyn") or {}
    store = ours.get("store")
    if ours.get("kind") == "synthetic" and store and Path(store).exists():
        from napari_cytosyn.slide.synthetic import SyntheticSlide

        return slide_provenance(SyntheticSlide.open(store, mode="r"))
    source = layer_meta.get("source_path")
    if ours.get("kind") == "composite" and store and source and Path(source).exists():
        from napari_cytosyn.slide.composite import CompositeSlide

        return slide_provenance(CompositeSlide(source, store))
    path = layer_meta.get("path")
    if path and Path(path).is_file():
        return build_provenance(source_path=path, extra={"synthetic": None})
    return None


def _write_layer(writer: Any, path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """``writer`` (an export function) on one image layer's pyramid, mask, mpp and provenance."""
    out = writer(
        path,
        _levels_rgb(data),
        mpp=_mpp(meta),
        mask_levels=_mask_levels(meta),
        provenance=_provenance(meta),
        name=meta.get("name"),
        overwrite=True,  # napari's save dialog has already asked before replacing
    )
    return [str(out)]


def write_ome_zarr_layer(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one image layer as OME-Zarr (NGFF 0.4); returns ``[path]``."""
    from napari_cytosyn.export import write_ome_zarr

    return _write_layer(write_ome_zarr, path, data, meta)


def write_ome_tiff_layer(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one image layer as a pyramidal, JPEG-compressed OME-TIFF; returns ``[path]``."""
    from napari_cytosyn.export import write_ome_tiff

    return _write_layer(write_ome_tiff, path, data, meta)


def write_tiff_layer(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Write one image layer as a JPEG pyramidal TIFF in the SVS layout; returns ``[path]``."""
    from napari_cytosyn.export import write_tiff

    return _write_layer(write_tiff, path, data, meta)
