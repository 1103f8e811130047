"""Export any slide we can open (real, synthetic, composite) to OME-Zarr, OME-TIFF or TIFF.

What gets written for each kind:

- real slide (``Slide``): its pyramid as is; provenance names the source file and its SHA-256.
- synthetic slide (``SyntheticSlide``): the finished store levels, read straight from zarr;
  provenance holds the model, seed, sampler settings and lazy-mode spec. Every pixel is
  synthetic, so no mask is written. A store with unrendered chunks is refused (render it first).
- composite (``CompositeSlide``): the real pyramid (the source's own levels) with the edits
  overlaid, lossless by default; the edit masks as the ``synthetic`` label image (OME-Zarr) or,
  for TIFF exports, a mask TIFF and QuPath GeoJSON beside the file (``mask="ome-image"`` keeps
  the mask in an OME-TIFF as a second image); provenance with the source file's SHA-256 and
  every edit (model, settings, region).

The image is named after the slide (a synthetic store ``syn.cytosyn`` exports as ``syn``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from napari_cytosyn.export.ome_tiff import write_ome_tiff
from napari_cytosyn.export.ome_zarr import write_ome_zarr
from napari_cytosyn.export.provenance import build_provenance
from napari_cytosyn.export.tiff import write_tiff
from napari_cytosyn.export.tile_copy import write_tiff_copy

Format = Literal["ome-zarr", "ome-tiff", "tiff"]
FORMATS: tuple[Format, ...] = ("ome-zarr", "ome-tiff", "tiff")
_SUFFIXES: dict[str, Format] = {
    ".ome.zarr": "ome-zarr",
    ".zarr": "ome-zarr",
    ".ome.tif": "ome-tiff",
    ".ome.tiff": "ome-tiff",
    ".tif": "tiff",
    ".tiff": "tiff",
    ".svs": "tiff",
}


class IncompleteSlideError(ValueError):
    """A synthetic slide still has chunks that were never rendered."""


def output_format(path: str | os.PathLike, fmt: str | None = None) -> Format:
    """The export format: ``fmt`` when given, else from the output name's extension.

    ``*.ome.zarr`` -> ``"ome-zarr"``, ``*.ome.tif(f)`` -> ``"ome-tiff"``, ``*.tif(f)``/``*.svs``
    -> ``"tiff"`` (SVS-layout pyramid). A ``fmt`` that contradicts the extension is refused.
    """
    name = Path(path).name.lower()
    implied = next((f for suffix, f in _SUFFIXES.items() if name.endswith(suffix)), None)
    if fmt is not None:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        if implied is not None and implied != fmt:
            raise ValueError(
                f"{Path(path).name!r} names a {implied} file but the format is {fmt}; "
                "rename the output or drop the format"
            )
        return fmt  # type: ignore[return-value]
    if implied is None:
        raise ValueError(
            f"cannot tell the output format of {Path(path).name!r}: name it *.ome.zarr "
            "(OME-Zarr), *.ome.tif (pyramidal OME-TIFF) or *.tif / *.svs (SVS-layout TIFF)"
        )
    return implied


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


def export_name(slide: Any) -> str:
    """The image name of an export: the slide's name (a store's folder without ``.cytosyn``)."""
    name = str(getattr(slide, "name", "") or Path(slide.path).name)
    if slide_kind(slide) == "synthetic":
        for suffix in (".cytosyn", ".zarr"):
            name = name.removesuffix(suffix)
    return name


def pyramid_method(slide: Any) -> str:
    """How the coarse levels of ``slide`` were made (NGFF ``multiscales[0].metadata.method``)."""
    kind = slide_kind(slide)
    if kind == "synthetic":
        return (
            "synthetic store levels: each coarse pixel the area mean of the 2x2 pixels below "
            "it (napari_cytosyn.chunk_grid)"
        )
    if kind == "composite":
        return (
            f"the source slide's own levels ({slide.real.format}); blocks touched by an edit: "
            "area mean of the level-0 composite (napari_cytosyn.slide.composite)"
        )
    return f"the source slide's own levels ({getattr(slide, 'format', 'unknown format')})"


def label_lines(slide: Any, name: str) -> tuple[str, ...]:
    """Text of the slide label page of a TIFF export: what the file holds."""
    kind = slide_kind(slide)
    what = {
        "synthetic": ("SYNTHETIC", "every pixel generated"),
        "composite": ("INPAINTED: holds", "synthetic regions"),
    }.get(kind, ("copy of a real slide",))
    return ("napari-cytosyn", name, *what)


def default_compression(slide: Any) -> str:
    """``"deflate"`` (lossless) for a composite, whose real tissue must stay exact, else JPEG."""
    return "deflate" if slide_kind(slide) == "composite" else "jpeg"


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
                    # a twin's reference: file, sha256, grid, encoder (no pixels)
                    "reference": attrs.get("reference"),
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
                    "mask": "labels/synthetic (OME-Zarr); TIFF: <stem>.synthetic-mask.tif and "
                    "<stem>.synthetic.geojson beside the file, or the OME image "
                    "'synthetic mask'",
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
    format: str | None = None,
    version: Literal["0.4", "0.5"] = "0.4",
    compression: str | None = None,
    quality: int = 90,
    chunk_px: int = 512,
    shards: str | int | None = "auto",
    mask: str = "sidecar",
    overwrite: bool = False,
    checksum_source: bool = True,
    workers: int | None = None,
    progress: Any = None,
    cancel: Any = None,
) -> Path:
    """Write ``slide`` to ``out``; the format is ``format`` or follows the extension.

    Formats: ``"ome-zarr"`` (``*.ome.zarr``; ``version`` 0.4/0.5, ``shards`` for 0.5, always
    lossless Blosc-zstd), ``"ome-tiff"`` (``*.ome.tif``) and ``"tiff"`` (``*.tif``/``*.svs``,
    SVS layout: every level readable by OpenSlide). ``compression``/``quality`` apply to the
    TIFF formats; the default is lossless deflate for a composite (an inpainted real slide) and
    JPEG 90 otherwise. ``compression="copy"`` (``tiff`` format, composite or real TIFF slide)
    copies the source's compressed tiles that no edit touches and re-encodes the others with
    the source's codec (:mod:`~napari_cytosyn.export.tile_copy`). ``mask`` (composites, TIFF
    formats): ``"sidecar"`` or ``"ome-image"`` (OME-TIFF only). Returns the path written.
    """
    fmt = output_format(out, format)
    levels, masks = slide_pyramid(slide)
    provenance = slide_provenance(slide, checksum_source=checksum_source)
    name = export_name(slide)
    compression = compression or default_compression(slide)
    if compression == "copy":
        if fmt != "tiff" or slide_kind(slide) == "synthetic":
            raise ValueError(
                "compression 'copy' copies a real slide's TIFF tiles: it needs a composite or "
                "real TIFF slide and a *.tif / *.svs output"
            )
        if mask != "sidecar":
            raise ValueError("compression 'copy' keeps the mask beside the file (sidecar)")
        write_tiff_copy(
            out, slide, provenance=provenance, name=name, label_lines=label_lines(slide, name),
            quality=quality, overwrite=overwrite, workers=workers, progress=progress,
            cancel=cancel,
        )  # fmt: skip
        return Path(out)
    if fmt == "ome-zarr":
        return write_ome_zarr(
            out, levels, mpp=slide.mpp, mask_levels=masks, provenance=provenance, name=name,
            pyramid_method=pyramid_method(slide), version=version, chunk_px=chunk_px,
            shards=shards, overwrite=overwrite, workers=workers, progress=progress,
            cancel=cancel,
        )  # fmt: skip
    if fmt == "ome-tiff":
        return write_ome_tiff(
            out, levels, mpp=slide.mpp, mask_levels=masks, provenance=provenance, name=name,
            mask=mask, compression=compression, quality=quality, tile_px=chunk_px,
            overwrite=overwrite, workers=workers, progress=progress, cancel=cancel,
        )  # fmt: skip
    if mask != "sidecar":
        raise ValueError(
            f"mask={mask!r}: a TIFF export keeps the mask beside the file ('sidecar'); "
            "write an OME-TIFF (*.ome.tif) to keep it as a second image"
        )
    return write_tiff(
        out, levels, mpp=slide.mpp, mask_levels=masks, provenance=provenance, name=name,
        objective_power=getattr(slide, "objective_power", None),
        label=label_lines(slide, name), compression=compression,
        quality=quality, tile_px=chunk_px, overwrite=overwrite, workers=workers,
        progress=progress, cancel=cancel,
    )  # fmt: skip
