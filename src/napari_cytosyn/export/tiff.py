"""Generic tiled pyramidal TIFF in the Aperio SVS layout: every level in every slide reader.

OpenSlide reads no SubIFD pyramids (the OME-TIFF layout); this writer puts every level in its
own IFD, as libvips and Aperio do, under an Aperio ``ImageDescription``, so OpenSlide, tiffslide,
tifffile, libvips and Bio-Formats (QuPath, OMERO) read all levels and the pixel size:

- IFD 0: level 0, tiled; ``ImageDescription`` ``Aperio Image Library napari-cytosyn ...`` with
  ``|MPP = ...`` (OpenSlide's ``openslide.mpp-x/y``), ``|AppMag = ...`` when the source has an
  objective power, ``|Filename = <name>`` and ``|napari_cytosyn = <provenance JSON>``.
- IFD 1: a stripped RGB thumbnail (<= 1024 px, smaller than the coarsest level), where SVS
  readers expect it.
- IFD 2, 3, ...: levels 1, 2, ..., tiled, ``NewSubfileType = 0`` and an Aperio description like
  Aperio's own levels (tifffile's SVS reader stops at reduced-resolution pages).
- the last two IFDs: ``label`` (text saying what the file holds) and ``macro`` (the overview),
  where Bio-Formats' SVS reader expects them.
- every level: ``XResolution``/``YResolution`` in pixels per centimetre of that level.

Pixels are the caller's levels as given (a real or inpainted slide keeps its source's level
layout); a single-level source gets 2x levels built in a scratch zarr first.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from napari_cytosyn.export._stream import ProgressFn, atomic_output
from napari_cytosyn.export._svs import (
    read_svs_provenance,
    svs_description,
    write_svs_pages,
)
from napari_cytosyn.export._tiles import level_readers, scratch_dir, tiff_options, tiff_plan
from napari_cytosyn.export.sidecars import check_sidecars, write_mask_sidecars
from napari_cytosyn.pixel_size import PixelSize
from napari_cytosyn.slide.real import slide_stem

__all__ = ["read_svs_provenance", "write_tiff"]


def write_tiff(
    path: str | os.PathLike,
    levels: Sequence[Any],
    *,
    mpp: PixelSize | float | Sequence[float] | None = None,
    mask_levels: Sequence[Any] | None = None,
    provenance: dict[str, Any] | None = None,
    name: str | None = None,
    objective_power: float | None = None,
    label: Sequence[str] | None = None,
    compression: str | None = None,
    quality: int = 90,
    tile_px: int = 512,
    overwrite: bool = False,
    workers: int | None = None,
    progress: ProgressFn | None = None,
    cancel: Any = None,
) -> Path:
    """Write an RGB pyramid as a tiled pyramidal TIFF in the Aperio SVS layout (``.tif``/``.svs``).

    Parameters as :func:`~napari_cytosyn.export.ome_tiff.write_ome_tiff`, and:

    mpp: written as Aperio ``MPP`` (the mean of x and y: SVS has one value) and as TIFF
        resolution tags of every level.
    mask_levels: written beside the image as ``<stem>.synthetic-mask.tif`` (same layout, 255 =
        synthetic) and ``<stem>.synthetic.geojson`` (:mod:`~napari_cytosyn.export.sidecars`).
    provenance: stored as the ``napari_cytosyn`` Aperio property (JSON).
    name: ``Filename`` property (default: the output's stem).
    objective_power: ``AppMag`` property (OpenSlide's ``openslide.objective-power``).
    label: text lines of the slide label image (default: ``napari-cytosyn`` and the name).
    """
    import tifffile

    plan = tiff_plan(levels, mask_levels, compression, quality, tile_px, mpp, workers, progress)
    if mask_levels is not None:
        check_sidecars(path, overwrite)
    name = name or slide_stem(Path(path))
    with atomic_output(path, overwrite) as tmp, scratch_dir(path, tmp) as scratch:
        readers = level_readers(
            levels, plan.shapes, scratch, None, plan.tile_px, plan.workers, cancel
        )
        description = svs_description(
            plan.shapes[0], plan.tile_px, plan.codec, quality, plan.mpp, name, objective_power,
            provenance,
        )  # fmt: skip
        with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
            write_svs_pages(
                tif, readers, plan.shapes, 3, plan.tile_px, plan.mpp, description,
                tiff_options(plan.codec, quality), plan.workers, cancel, plan.tick,
                label or ("napari-cytosyn", name),
            )  # fmt: skip
    if mask_levels is not None:
        write_mask_sidecars(
            path, mask_levels, plan.shapes, plan.mpp, plan.tile_px, overwrite, plan.workers,
            cancel, plan.tick,
        )  # fmt: skip
    return Path(path)
