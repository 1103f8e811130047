"""Pyramidal OME-TIFF writer (tifffile): tiled, SubIFD levels, JPEG or lossless, streamed.

Layout (what QuPath, OMERO, Bio-Formats and tifffile expect of a pyramidal OME-TIFF):

- series 0, the RGB image: level 0 in the main IFD, coarser levels in its SubIFDs
  (``NewSubfileType = 1``); OME-XML ``PhysicalSizeX/Y`` in µm and TIFF resolution tags per level;
  the provenance JSON in the OME ``Image/Description``.
- the synthetic mask of a composite: beside the file by default (``<stem>.synthetic-mask.tif``
  and ``<stem>.synthetic.geojson``, :mod:`~napari_cytosyn.export.sidecars`), so the file holds
  one OME image and readers that file OME images by size (large_image) show the tissue; with
  ``mask="ome-image"`` series 1, ``synthetic mask``: uint8 (1 = synthetic), same pyramid,
  deflate-compressed.

Tiles are streamed as :mod:`~napari_cytosyn.export._tiles` describes (bounded memory).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from napari_cytosyn.export._stream import ProgressFn, atomic_output
from napari_cytosyn.export._tiles import (
    COMPRESSIONS,
    Reader,
    level_readers,
    resolution_kwargs,
    scratch_dir,
    tiff_options,
    tiff_plan,
    write_page,
)
from napari_cytosyn.pixel_size import PixelSize
from napari_cytosyn.slide.real import slide_stem

__all__ = ["COMPRESSIONS", "MASK_PLACES", "write_ome_tiff"]

#: Where a composite's synthetic mask goes: beside the file, or in it as a second OME image.
MASK_PLACES = ("sidecar", "ome-image")


def write_ome_tiff(
    path: str | os.PathLike,
    levels: Sequence[Any],
    *,
    mpp: PixelSize | float | Sequence[float] | None = None,
    mask_levels: Sequence[Any] | None = None,
    provenance: dict[str, Any] | None = None,
    name: str | None = None,
    mask: str = "sidecar",
    compression: str | None = None,
    quality: int = 90,
    tile_px: int = 512,
    overwrite: bool = False,
    workers: int | None = None,
    progress: ProgressFn | None = None,
    cancel: Any = None,
) -> Path:
    """Write an RGB pyramid (and optional synthetic mask) as a tiled pyramidal OME-TIFF.

    Parameters
    ----------
    path: output file (``*.ome.tif``), written to a temporary sibling and renamed at the end;
        an existing file is refused unless ``overwrite``.
    levels: the pyramid, finest first, ``(y, x, 3)`` uint8 arrays (dask, zarr, numpy). With one
        level, 2x levels are built (box mean) down to one tile.
    mpp: level-0 pixel size (``PixelSize.from_any``): OME ``PhysicalSizeX/Y`` and TIFF
        resolution of every level.
    mask_levels: ``(y, x)`` arrays, non-zero = synthetic; one per level or only the finest.
    mask: ``"sidecar"`` (mask TIFF + GeoJSON beside the file,
        :mod:`~napari_cytosyn.export.sidecars`) or ``"ome-image"`` (a second OME image,
        ``synthetic mask``, 1 = synthetic; large_image then shows the mask, see docs/export.md).
    provenance: JSON in the OME ``Image/Description``.
    compression: ``"jpeg"`` (``quality`` 1-100), ``"deflate"``/``"zlib"``, ``"lzw"`` or
        ``"none"``; default ``"deflate"`` with a mask (real tissue stays exact), else JPEG.
    tile_px: tile edge (multiple of 16); a source in square 256-1024 px chunks (multiples of
        16) is tiled by its chunks, so each is read once.
    progress: ``progress(done, total)`` in tiles; ``cancel.is_set()`` aborts (``Cancelled``),
        leaving no output.
    """
    import tifffile

    if mask not in MASK_PLACES:
        raise ValueError(f"mask must be one of {MASK_PLACES}, got {mask!r}")
    plan = tiff_plan(levels, mask_levels, compression, quality, tile_px, mpp, workers, progress)
    tile_px, shapes, workers, tick = plan.tile_px, plan.shapes, plan.workers, plan.tick
    if mask_levels is not None and mask == "sidecar":
        from napari_cytosyn.export.sidecars import check_sidecars

        check_sidecars(path, overwrite)
    name = name or slide_stem(Path(path))
    embed_mask = mask_levels is not None and mask == "ome-image"
    with atomic_output(path, overwrite) as tmp, scratch_dir(path, tmp) as scratch:
        image_readers = level_readers(levels, shapes, scratch, None, tile_px, workers, cancel)
        with tifffile.TiffWriter(tmp, bigtiff=True, ome=True) as tif:
            image_meta: dict[str, Any] = {"axes": "YXS", "Name": name}
            if provenance:
                image_meta["Description"] = json.dumps(provenance, sort_keys=True)
            options = {"photometric": "rgb", **tiff_options(plan.codec, quality)}
            _write_series(
                tif, image_readers, shapes, 3, plan.mpp, image_meta, options, tile_px,
                workers, cancel, tick,
            )  # fmt: skip
            if embed_mask:
                mask_readers = level_readers(
                    mask_levels, shapes, scratch, 1, tile_px, workers, cancel
                )
                mask_meta = {"axes": "YX", "Name": "synthetic mask"}
                mask_options = {"photometric": "minisblack", "compression": "zlib"}
                _write_series(
                    tif, mask_readers, shapes, 1, plan.mpp, mask_meta, mask_options, tile_px,
                    workers, cancel, tick,
                )  # fmt: skip
    if mask_levels is not None and not embed_mask:
        from napari_cytosyn.export.sidecars import write_mask_sidecars

        write_mask_sidecars(
            path, mask_levels, shapes, plan.mpp, tile_px, overwrite, workers, cancel, tick
        )
    return Path(path)


def _write_series(
    tif: Any,
    readers: Sequence[Reader],
    shapes: Sequence[Sequence[int]],
    samples: int,
    mpp_xy: PixelSize | None,
    metadata: dict[str, Any],
    options: dict[str, Any],
    tile_px: int,
    workers: int,
    cancel: Any,
    tick: Callable[[int], None],
) -> None:
    for i, (read, shape) in enumerate(zip(readers, shapes, strict=True)):
        kwargs: dict[str, Any] = {**options, **resolution_kwargs(mpp_xy, shapes[0], shape)}
        if i == 0:
            meta = dict(metadata)
            if mpp_xy is not None:
                meta.update(
                    PhysicalSizeX=mpp_xy.x,
                    PhysicalSizeXUnit="µm",
                    PhysicalSizeY=mpp_xy.y,
                    PhysicalSizeYUnit="µm",
                )
            kwargs.update(metadata=meta, subifds=len(shapes) - 1)
        else:
            kwargs.update(subfiletype=1, metadata=None)
        write_page(tif, read, shape, samples, tile_px, workers, cancel, tick, **kwargs)
