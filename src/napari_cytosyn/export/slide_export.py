"""Export any slide we can open (real, synthetic, composite) to OME-Zarr or OME-TIFF.

What gets written for each kind:

- real slide (``Slide``): its pyramid as is; provenance names the source file and its SHA-256.
- synthetic slide (``SyntheticSlide``): the finished store levels, read straight from zarr;
  provenance holds the model, seed, sampler settings and lazy-mode spec. Every pixel is
  synthetic, so no mask is written. A store with unrendered chunks is refused (render it first).
- composite (``CompositeSlide``): the real pyramid with the edits overlaid, the edit masks as the
  ``synthetic`` label image (OME-Zarr) or second series (OME-TIFF), provenance with the source
  file's SHA-256 and every edit (model, settings, region).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from napari_cytosyn.export.ome_tiff import write_ome_tiff
from napari_cytosyn.export.ome_zarr import write_ome_zarr
from napari_cytosyn.export.provenance import build_provenance

Format = Literal["ome-zarr", "ome-tiff"]
_SUFFIXES: dict[str, Format] = {
    ".ome.zarr": "ome-zarr",
    ".zarr": "ome-zarr",
    ".ome.tif": "ome-tiff",
    ".ome.tiff": "ome-tiff",
}


class IncompleteSlideError(ValueError):
    """A synthetic slide still has chunks that were never rendered."""


def output_format(path: str | os.PathLike) -> Format:
    """``"ome-zarr"`` or ``"ome-tiff"`` from the output name's extension."""
    name = Path(path).name.lower()
    for suffix, fmt in _SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    raise ValueError(
        f"cannot tell the output format of {Path(path).name!r}: "
        "name it *.ome.zarr (OME-Zarr) or *.ome.tif (pyramidal OME-TIFF)"
    )


def slide_kind(slide: Any) -> str:
    """``"synthetic"``, ``"composite"`` or ``"real"``."""
    store = getattr(slide, "store", None)
    kind = getattr(store, "kind", None)
    if kind == "synthetic-slide":
        return "synthetic"
    if kind == "edit-store":
        return "composite"
    return "real"


def slide_pyramid(slide: Any) -> tuple[list[Any], list[Any] | None]:
    """(image levels ``(y, x, 3)`` uint8, mask levels ``(y, x)`` or ``None``) of a slide."""
    kind = slide_kind(slide)
    if kind == "synthetic":
        slide.store.refresh()
        missing = sum(len(slide.missing_chunks(k)) for k in range(slide.store.n_levels))
        if missing:
            raise IncompleteSlideError(
                f"{slide.path} has {missing} unrendered chunks; finish it first "
                f"(napari-cytosyn render {slide.path})"
            )
        return [slide.store.level_array(k) for k in range(slide.store.n_levels)], None
    if kind == "composite":
        return list(slide.levels), list(slide.mask_levels)
    return list(slide.levels), None


def slide_provenance(slide: Any, checksum_source: bool = True) -> dict[str, Any]:
    """Provenance record of a slide (see :mod:`~napari_cytosyn.export.provenance`)."""
    kind = slide_kind(slide)
    if kind == "synthetic":
        attrs = slide.store.attrs
        return build_provenance(
            model=attrs.get("model"),
            seed=attrs.get("seed"),
            sampler=attrs.get("settings"),
            extra={
                "synthetic": {
                    "kind": "synthetic-slide",
                    "fully_synthetic": True,
                    "width": attrs.get("width"),
                    "height": attrs.get("height"),
                    "mpp": attrs.get("mpp"),
                    "chunk_px": attrs.get("chunk_px"),
                    "lazy_spec": attrs.get("lazy_spec"),
                    "tissue_mask": attrs.get("tissue_mask"),
                    "store": str(slide.path),
                }
            },
        )
    if kind == "composite":
        edits = slide.edits
        last = edits[-1] if edits else {}
        source = slide.store.attrs["source"]
        settings = last.get("settings") or {}
        return build_provenance(
            model=last.get("model"),
            seed=settings.get("seed"),
            sampler=settings or None,
            source_path=source.get("path"),
            source_name=Path(source["path"]).name if source.get("path") else source.get("name"),
            checksum_source=checksum_source and Path(source.get("path", "")).exists(),
            extra={
                "synthetic": {
                    "kind": "composite",
                    "fully_synthetic": False,
                    "mask": "labels/synthetic (OME-Zarr) or series 'synthetic mask' (OME-TIFF)",
                    "edits": edits,
                    "edit_store": str(slide.path),
                }
            },
        )
    return build_provenance(
        source_path=slide.path,
        source_name=Path(slide.path).name,
        checksum_source=checksum_source,
        extra={"synthetic": None},
    )


def export_slide(
    slide: Any,
    out: str | os.PathLike,
    *,
    version: Literal["0.4", "0.5"] = "0.4",
    compression: str = "jpeg",
    quality: int = 90,
    chunk_px: int = 512,
    overwrite: bool = False,
    checksum_source: bool = True,
    workers: int | None = None,
    progress: Any = None,
    cancel: Any = None,
) -> Path:
    """Write ``slide`` to ``out``; the format follows the extension (``.ome.zarr``/``.ome.tif``).

    ``version`` applies to OME-Zarr, ``compression``/``quality`` to OME-TIFF (OME-Zarr is always
    lossless, Blosc-zstd). Returns the path written.
    """
    fmt = output_format(out)
    levels, masks = slide_pyramid(slide)
    provenance = slide_provenance(slide, checksum_source=checksum_source)
    name = getattr(slide, "name", None)
    if fmt == "ome-zarr":
        return write_ome_zarr(
            out, levels, mpp=slide.mpp, mask_levels=masks, provenance=provenance, name=name,
            version=version, chunk_px=chunk_px, overwrite=overwrite, workers=workers,
            progress=progress, cancel=cancel,
        )  # fmt: skip
    return write_ome_tiff(
        out, levels, mpp=slide.mpp, mask_levels=masks, provenance=provenance, name=name,
        compression=compression, quality=quality, tile_px=chunk_px, overwrite=overwrite,
        workers=workers, progress=progress, cancel=cancel,
    )  # fmt: skip
