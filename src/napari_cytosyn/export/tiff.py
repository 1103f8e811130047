"""Generic tiled pyramidal TIFF in the Aperio SVS layout: every level in every slide reader.

OpenSlide does not read SubIFD pyramids (the OME-TIFF layout), so OpenSlide-based pipelines see
one level of an OME-TIFF. This writer puts every level in its own top-level IFD, as libvips and
Aperio do, and starts the file with an Aperio ``ImageDescription``, so that OpenSlide (driver
``aperio``), tiffslide, tifffile (series ``Baseline`` with all levels), libvips, Bio-Formats and
QuPath read all levels and the pixel size:

- IFD 0: level 0, tiled; ``ImageDescription`` ``Aperio Image Library napari-cytosyn ...`` with
  ``|MPP = ...`` (OpenSlide's ``openslide.mpp-x/y``), ``|AppMag = ...`` when the source has an
  objective power, ``|Filename = <name>`` and ``|napari_cytosyn = <provenance JSON>``.
- IFD 1: a stripped RGB thumbnail (<= 1024 px), where SVS readers expect it.
- IFD 2, 3, ...: levels 1, 2, ..., tiled, ``NewSubfileType = 0`` like Aperio's own levels
  (tifffile's SVS reader stops at reduced-resolution pages).
- every level: ``XResolution``/``YResolution`` in pixels per centimetre of that level.

Pixels are the caller's levels as given (a real or inpainted slide keeps its source's level
layout); a single-level source gets 2x levels built in a scratch zarr first.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_cytosyn.export._stream import (
    ProgressFn,
    atomic_output,
    pyramid_shapes,
    tile_grid,
    validate_levels,
    validate_masks,
)
from napari_cytosyn.export._tiles import (
    Reader,
    check_compression,
    level_readers,
    resolution_kwargs,
    tile_px_for,
    tiles,
)
from napari_cytosyn.export.ome_zarr import normalise_mpp

THUMBNAIL_PX = 1024
_CODEC_NAMES = {"jpeg": "JPEG", "zlib": "Deflate", "lzw": "LZW", None: "None"}


def svs_description(
    shape0: Sequence[int],
    tile_px: int,
    codec: str | None,
    quality: int,
    mpp_xy: tuple[float, float] | None,
    name: str,
    objective_power: float | None = None,
    provenance: dict[str, Any] | None = None,
) -> str:
    """The Aperio ``ImageDescription`` of level 0: a header line, then ``|key = value`` pairs.

    OpenSlide's aperio driver turns the pairs into ``aperio.*`` properties (``MPP`` into
    ``openslide.mpp-x/y``, ``AppMag`` into ``openslide.objective-power``). A ``|`` inside the
    provenance JSON is written as ``\\u007c`` so the JSON stays one value (and still decodes).
    """
    h, w = int(shape0[0]), int(shape0[1])
    comp = _CODEC_NAMES.get(codec, str(codec))
    if codec == "jpeg":
        comp += f" Q={int(quality)}"
    from napari_cytosyn import __version__

    head = (
        f"Aperio Image Library napari-cytosyn {__version__}\r\n"
        f"{w}x{h} [0,0 {w}x{h}] ({tile_px}x{tile_px}) {comp}"
    )
    pairs = []
    if objective_power:
        pairs.append(f"AppMag = {objective_power:g}")
    if mpp_xy is not None:
        pairs.append(f"MPP = {(mpp_xy[0] + mpp_xy[1]) / 2:.6g}")
    pairs.append(f"Filename = {name.replace('|', '_')}")
    if provenance:
        text = json.dumps(provenance, sort_keys=True, ensure_ascii=True).replace("|", "\\u007c")
        pairs.append(f"napari_cytosyn = {text}")
    return "|".join([head, *pairs])


def read_svs_provenance(description: str) -> dict[str, Any] | None:
    """The provenance JSON of an ``ImageDescription`` written by :func:`svs_description`."""
    for pair in description.split("|")[1:]:
        key, _, value = pair.partition("=")
        if key.strip() == "napari_cytosyn":
            return json.loads(value.strip())
    return None


def thumbnail_of(read: Reader, shape: Sequence[int], max_px: int = THUMBNAIL_PX) -> np.ndarray:
    """``(h, w, samples)`` uint8 thumbnail of a level: box means of whole ``f x f`` blocks.

    Read in row bands of ``f`` rows, so memory stays one band of the (coarsest) level.
    """
    from napari_cytosyn.export._stream import downsample

    h, w = int(shape[0]), int(shape[1])
    f = max(1, math.ceil(max(h, w) / max_px))
    band = max(f, (4096 // f) * f)
    rows = [downsample(read(y0, min(y0 + band, h), 0, w), f) for y0 in range(0, h, band)]
    return np.ascontiguousarray(np.concatenate(rows, axis=0))


def write_svs_pages(
    tif: Any,
    readers: Sequence[Reader],
    shapes: Sequence[Sequence[int]],
    samples: int,
    tile_px: int,
    mpp_xy: tuple[float, float] | None,
    description: str,
    options: dict[str, Any],
    workers: int,
    cancel: Any,
    tick: Callable[[int], None],
) -> None:
    """Write levels in the SVS layout: level 0, thumbnail, levels 1... (see the module doc)."""
    thumb = thumbnail_of(readers[-1], shapes[-1])
    photometric = "rgb" if samples == 3 else "minisblack"
    for i, (read, shape) in enumerate(zip(readers, shapes, strict=True)):
        tif.write(
            tiles(read, shape, tile_px, workers, cancel, tick),
            shape=(*shape, samples) if samples > 1 else tuple(shape),
            dtype=np.uint8,
            tile=(tile_px, tile_px),
            photometric=photometric,
            description=description if i == 0 else None,
            metadata=None,
            software="napari-cytosyn",
            maxworkers=workers,
            **options,
            **resolution_kwargs(mpp_xy, shapes[0], shape),
        )
        if i == 0:
            tif.write(
                thumb if samples > 1 else thumb[..., 0],
                photometric=photometric,
                description="thumbnail",
                metadata=None,
                software="napari-cytosyn",
                **options,
                **resolution_kwargs(mpp_xy, shapes[0], thumb.shape),
            )


def tiff_options(codec: str | None, quality: int) -> dict[str, Any]:
    """tifffile ``compression``/``compressionargs`` for a codec name from ``check_compression``."""
    return {
        "compression": codec,
        "compressionargs": {"level": int(quality)} if codec == "jpeg" else None,
    }


def write_tiff(
    path: str | os.PathLike,
    levels: Sequence[Any],
    *,
    mpp: float | Sequence[float] | None = None,
    mask_levels: Sequence[Any] | None = None,
    provenance: dict[str, Any] | None = None,
    name: str | None = None,
    objective_power: float | None = None,
    compression: str = "jpeg",
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
    mpp: microns per pixel of level 0 (``x_um`` or ``(x_um, y_um)``): Aperio ``MPP`` (their
        mean: SVS has one value) and TIFF resolution tags of every level.
    mask_levels: ``(y, x)`` arrays, non-zero = synthetic (one per level or only the finest):
        written beside the image as ``<stem>.synthetic-mask.tif`` (same layout, 255 =
        synthetic) and ``<stem>.synthetic.geojson`` (QuPath annotations), see
        :mod:`~napari_cytosyn.export.sidecars`.
    provenance: stored as the ``napari_cytosyn`` Aperio property (JSON).
    name: ``Filename`` property (default: the output's stem).
    objective_power: ``AppMag`` property (OpenSlide's ``openslide.objective-power``).
    compression: ``"jpeg"`` (lossy, ``quality`` 1-100), ``"deflate"``/``"zlib"``, ``"lzw"``
        (lossless) or ``"none"``.
    tile_px: tile edge (multiple of 16); a source chunked in square 256-1024 px chunks that are
        multiples of 16 is tiled by its own chunk size.
    progress: ``progress(done, total)`` in tiles; ``cancel``: ``.is_set()`` aborts (raising
        ``Cancelled``), leaving no output.

    Returns the final path.
    """
    import tifffile

    validate_levels(levels)
    codec = check_compression(compression, quality)
    mpp_xy = normalise_mpp(mpp)
    tile_px = tile_px_for(levels[0], int(tile_px))
    if tile_px % 16:
        raise ValueError(f"TIFF tiles must be a multiple of 16 px, got {tile_px}")
    given = [tuple(int(s) for s in lv.shape[:2]) for lv in levels]
    shapes = given if len(given) > 1 else pyramid_shapes(given[0], min_level_px or tile_px)
    if mask_levels is not None:
        from napari_cytosyn.export.sidecars import check_sidecars

        validate_masks(mask_levels, shapes)
        check_sidecars(path, overwrite)
    workers = workers or min(4, os.cpu_count() or 1)
    name = name or tiff_stem(path)
    n_tiles = sum(len(tile_grid(s, (tile_px, tile_px))) for s in shapes)
    total = n_tiles * (2 if mask_levels is not None else 1)
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    with atomic_output(path, overwrite) as tmp:
        scratch = Path(tempfile.mkdtemp(prefix=f".{Path(path).name}.scratch-", dir=tmp.parent))
        try:
            readers = level_readers(levels, shapes, scratch, None, tile_px, workers, cancel)
            description = svs_description(
                shapes[0], tile_px, codec, quality, mpp_xy, name, objective_power, provenance
            )
            with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
                write_svs_pages(
                    tif, readers, shapes, 3, tile_px, mpp_xy, description,
                    tiff_options(codec, quality), workers, cancel, tick,
                )  # fmt: skip
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    if mask_levels is not None:
        from napari_cytosyn.export.sidecars import write_mask_sidecars

        write_mask_sidecars(
            path, mask_levels, shapes, mpp_xy, tile_px, overwrite, workers, cancel, tick
        )
    return Path(path)


TIFF_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".svs")


def tiff_stem(path: str | os.PathLike) -> str:
    """The output's name without its TIFF ending (``case.ome.tif`` -> ``case``)."""
    name = Path(path).name
    for suffix in TIFF_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem
