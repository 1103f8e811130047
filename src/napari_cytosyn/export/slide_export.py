"""Export any slide (real, synthetic, composite, ``ArraySlide``) to OME-Zarr, OME-TIFF or TIFF.

What differs by kind is asked of ``slide.kind`` and of the slide (``finished_levels()``,
``provenance()``, ``synthetic_mask(level)``: :mod:`napari_cytosyn.slide.kinds`): a real
slide's pyramid as is; a synthetic slide's finished store levels (no mask: every pixel is
synthetic); a composite's real levels with the edits overlaid (lossless by default) and its
mask as the ``synthetic`` label image (OME-Zarr) or beside a TIFF. The image is named after the
slide (a store ``syn.cytosyn`` exports as ``syn``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from napari_cytosyn.export.ome_tiff import write_ome_tiff
from napari_cytosyn.export.ome_zarr import write_ome_zarr
from napari_cytosyn.export.tiff import write_tiff
from napari_cytosyn.export.tile_copy import write_tiff_copy
from napari_cytosyn.slide.kinds import export_mask_levels

if TYPE_CHECKING:
    from napari_cytosyn.slide.kinds import SlideLike

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


def output_format(path: str | os.PathLike, fmt: str | None = None) -> Format:
    """The export format: ``fmt``, else from the extension (``*.ome.zarr``, ``*.ome.tif``,
    ``*.tif``/``*.svs``); a ``fmt`` contradicting the extension is refused."""
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


def export_name(slide: Any) -> str:
    """The image name of an export: the slide's name (a store's folder without ``.cytosyn``)."""
    name = str(getattr(slide, "name", "") or Path(slide.path).name)
    if slide.kind == "synthetic":
        for suffix in (".cytosyn", ".zarr"):
            name = name.removesuffix(suffix)
    return name


def pyramid_method(slide: Any) -> str:
    """How the coarse levels of ``slide`` were made (NGFF ``multiscales[0].metadata.method``):
    what the slide says (an ``ArraySlide``), else what its kind implies."""
    stated = getattr(slide, "pyramid_method", None)
    if stated:
        return stated
    kind = slide.kind
    if kind == "synthetic":
        return (
            "synthetic store levels: each coarse pixel the area mean of the 2x2 pixels below "
            "it (napari_cytosyn.chunk_grid)"
        )
    if kind == "composite":
        return (
            f"the source slide's own levels ({getattr(slide.real, 'format', '?')}); blocks "
            "touched by an edit: "
            "area mean of the level-0 composite (napari_cytosyn.slide.composite)"
        )
    return f"the source slide's own levels ({getattr(slide, 'format', 'unknown format')})"


def label_lines(slide: Any, name: str) -> tuple[str, ...]:
    """Text of the slide label page of a TIFF export: what the file holds."""
    kind = slide.kind
    what = {
        "synthetic": ("SYNTHETIC", "every pixel generated"),
        "composite": ("INPAINTED: holds", "synthetic regions"),
    }.get(kind, ("copy of a real slide",))
    return ("napari-cytosyn", name, *what)


def export_slide(
    slide: SlideLike,
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
    render_missing: bool = False,
    checksum_source: bool = True,
    workers: int | None = None,
    progress: Any = None,
    cancel: Any = None,
) -> Path:
    """Write ``slide`` (anything answering :class:`~napari_cytosyn.slide.kinds.SlideLike`) to
    ``out``; the format is ``format`` or follows the extension. Returns the path written.

    Formats: ``"ome-zarr"`` (``version`` 0.4/0.5, ``shards`` for 0.5, lossless Blosc-zstd),
    ``"ome-tiff"`` and ``"tiff"`` (SVS layout: every level readable by OpenSlide).
    ``compression``/``quality`` (TIFF formats) default to lossless deflate when a mask goes
    with the slide, else JPEG 90; ``"copy"`` (``tiff``, composite or real TIFF slide) copies
    the source's untouched compressed tiles (:mod:`~napari_cytosyn.export.tile_copy`).
    ``mask`` (TIFF formats): ``"sidecar"`` or ``"ome-image"`` (OME-TIFF only).

    A synthetic slide with unrendered chunks is refused (``IncompleteSlideError``) unless
    ``render_missing`` renders them first (``progress``/``cancel`` see that too). The mask of a
    composite, or of a reopened export, goes with it. ``cancel.is_set()`` stops the writer
    (``Cancelled``), leaving nothing at ``out``.
    """
    fmt = output_format(out, format)
    if compression == "copy":
        if fmt != "tiff" or slide.kind == "synthetic":
            raise ValueError(
                "compression 'copy' copies a real slide's TIFF tiles: it needs a composite or "
                "real TIFF slide and a *.tif / *.svs output"
            )
        if mask != "sidecar":
            raise ValueError("compression 'copy' keeps the mask beside the file (sidecar)")
    elif fmt == "tiff" and mask != "sidecar":
        raise ValueError(
            f"mask={mask!r}: a TIFF export keeps the mask beside the file ('sidecar'); "
            "write an OME-TIFF (*.ome.tif) to keep it as a second image"
        )
    levels = slide.finished_levels(render_missing=render_missing, progress=progress, cancel=cancel)
    masks = export_mask_levels(slide, len(levels))
    provenance = slide.provenance(checksum_source=checksum_source)
    name = export_name(slide)
    if compression == "copy":
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
    return write_tiff(
        out, levels, mpp=slide.mpp, mask_levels=masks, provenance=provenance, name=name,
        objective_power=getattr(slide, "objective_power", None),
        label=label_lines(slide, name), compression=compression,
        quality=quality, tile_px=chunk_px, overwrite=overwrite, workers=workers,
        progress=progress, cancel=cancel,
    )  # fmt: skip
