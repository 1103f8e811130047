"""Generic tiled pyramidal TIFF in the Aperio SVS layout: every level in every slide reader.

OpenSlide does not read SubIFD pyramids (the OME-TIFF layout), so OpenSlide-based pipelines see
one level of an OME-TIFF. This writer puts every level in its own top-level IFD, as libvips and
Aperio do, and starts the file with an Aperio ``ImageDescription``, so that OpenSlide (driver
``aperio``), tiffslide, tifffile (series ``Baseline`` with all levels), libvips and Bio-Formats
(the reader of QuPath and OMERO) read all levels and the pixel size:

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

from napari_cytosyn import chunk_grid
from napari_cytosyn.export._stream import (
    ProgressCounter,
    ProgressFn,
    atomic_output,
    default_workers,
)
from napari_cytosyn.export._svs import (
    read_svs_provenance,
    svs_description,
    tiff_stem,
    write_svs_pages,
)
from napari_cytosyn.export._tiles import level_readers, scratch_dir, tiff_options, tiff_plan
from napari_cytosyn.export.sidecars import check_sidecars, write_mask_sidecars
from napari_cytosyn.pixel_size import PixelSize

__all__ = ["read_svs_provenance", "tiff_stem", "write_tiff"]


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
    min_level_px: int | None = None,
    overwrite: bool = False,
    workers: int | None = None,
    progress: ProgressFn | None = None,
    cancel: Any = None,
) -> Path:
    """Write an RGB pyramid as a tiled pyramidal TIFF in the Aperio SVS layout (``.tif``/``.svs``).

    Parameters
    ----------
    path: output file; written to a temporary sibling and renamed at the end; an existing
        file is refused unless ``overwrite``.
    levels: the pyramid, finest first, ``(y, x, 3)`` uint8 arrays (dask, zarr, numpy), written
        as given. With one level, 2x levels are built (box mean) down to ``min_level_px``
        (default ``tile_px``).
    mpp: microns per pixel of level 0 (a ``PixelSize``, ``x_um`` or ``(x_um, y_um)``): Aperio
        ``MPP`` (their mean: SVS has one value) and TIFF resolution tags of every level.
    mask_levels: ``(y, x)`` arrays, non-zero = synthetic (one per level or only the finest):
        written beside the image as ``<stem>.synthetic-mask.tif`` (same layout, 255 =
        synthetic) and ``<stem>.synthetic.geojson`` (QuPath annotations), see
        :mod:`~napari_cytosyn.export.sidecars`.
    provenance: stored as the ``napari_cytosyn`` Aperio property (JSON).
    name: ``Filename`` property (default: the output's stem).
    objective_power: ``AppMag`` property (OpenSlide's ``openslide.objective-power``).
    label: text lines of the slide label image (default: ``napari-cytosyn`` and the name).
    compression: ``"jpeg"`` (lossy, ``quality`` 1-100), ``"deflate"``/``"zlib"``, ``"lzw"``
        (lossless) or ``"none"``; default: ``"deflate"`` when ``mask_levels`` is given (the
        real tissue of an inpainted slide stays exact), else ``"jpeg"``.
    tile_px: tile edge (multiple of 16); a source chunked in square 256-1024 px chunks that are
        multiples of 16 is tiled by its own chunk size.
    progress: ``progress(done, total)`` in tiles; ``cancel``: ``.is_set()`` aborts (raising
        ``Cancelled``), leaving no output.

    Returns the final path.
    """
    import tifffile

    codec, tile_px, shapes = tiff_plan(
        levels, mask_levels, compression, quality, tile_px, min_level_px
    )
    mpp_xy = PixelSize.from_any(mpp)
    if mask_levels is not None:
        check_sidecars(path, overwrite)
    workers = default_workers(workers)
    name = name or tiff_stem(path)
    n_tiles = sum(len(chunk_grid.tiles(s, (tile_px, tile_px))) for s in shapes)
    tick = ProgressCounter(progress, n_tiles * (2 if mask_levels is not None else 1))
    with atomic_output(path, overwrite) as tmp, scratch_dir(path, tmp) as scratch:
        readers = level_readers(levels, shapes, scratch, None, tile_px, workers, cancel)
        description = svs_description(
            shapes[0], tile_px, codec, quality, mpp_xy, name, objective_power, provenance
        )
        with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
            write_svs_pages(
                tif, readers, shapes, 3, tile_px, mpp_xy, description,
                tiff_options(codec, quality), workers, cancel, tick,
                label or ("napari-cytosyn", name),
            )  # fmt: skip
    if mask_levels is not None:
        write_mask_sidecars(
            path, mask_levels, shapes, mpp_xy, tile_px, overwrite, workers, cancel, tick
        )
    return Path(path)
