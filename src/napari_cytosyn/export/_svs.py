"""The Aperio SVS page layout shared by the TIFF export and its mask sidecar (see ``tiff.py``)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_cytosyn.export._tiles import Reader, resolution_kwargs, tiles

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


TIFF_SUFFIXES = (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".svs")


def tiff_stem(path: str | os.PathLike) -> str:
    """The output's name without its TIFF ending (``case.ome.tif`` -> ``case``)."""
    name = Path(path).name
    for suffix in TIFF_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem
