"""The Aperio SVS page layout shared by the TIFF export and its mask sidecar (see ``tiff.py``).

Every page carries an Aperio ``ImageDescription`` (Bio-Formats' SVS reader files a page without
one as the label or macro image), the thumbnail is smaller than the coarsest level
(Bio-Formats drops the smallest, stripped "resolution" as the thumbnail), and the file ends with
a label and a macro page like Aperio's (Bio-Formats 7 takes the last two pages as those).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from napari_cytosyn.export._tiles import Reader, resolution_kwargs, write_page
from napari_cytosyn.pixel_size import PixelSize

THUMBNAIL_PX = 1024
_CODEC_NAMES = {"jpeg": "JPEG", "zlib": "Deflate", "lzw": "LZW", None: "None"}


def svs_description(
    shape0: Sequence[int],
    tile_px: int,
    codec: str | None,
    quality: int,
    mpp_xy: PixelSize | None,
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
    head = f"{_header()}{w}x{h} [0,0 {w}x{h}] ({tile_px}x{tile_px}) {_comp(codec, quality)}"
    pairs = []
    if objective_power:
        pairs.append(f"AppMag = {objective_power:g}")
    if mpp_xy is not None:
        pairs.append(f"MPP = {(mpp_xy.x + mpp_xy.y) / 2:.6g}")
    pairs.append(f"Filename = {name.replace('|', '_')}")
    if provenance:
        text = json.dumps(provenance, sort_keys=True, ensure_ascii=True).replace("|", "\\u007c")
        pairs.append(f"napari_cytosyn = {text}")
    return "|".join([head, *pairs])


def _header() -> str:
    from napari_cytosyn import __version__

    return f"Aperio Image Library napari-cytosyn {__version__}\r\n"


def level_description(
    shape0: Sequence[int], shape: Sequence[int], tile_px: int, codec: str | None, quality: int
) -> str:
    """The ``ImageDescription`` of a reduced level, as Aperio writes it (``W0xH0 -> wxh``)."""
    h0, w0 = int(shape0[0]), int(shape0[1])
    return (
        f"{_header()}{w0}x{h0} [0,0 {w0}x{h0}] ({tile_px}x{tile_px}) -> "
        f"{int(shape[1])}x{int(shape[0])} {_comp(codec, quality)}"
    )


def _comp(codec: str | None, quality: int) -> str:
    """Aperio's name of a compression (``JPEG Q=90``)."""
    return _CODEC_NAMES.get(codec, str(codec)) + (f" Q={int(quality)}" if codec == "jpeg" else "")


def thumbnail_description(shape0: Sequence[int], shape: Sequence[int]) -> str:
    """The ``ImageDescription`` of the thumbnail page."""
    return f"{_header()}{int(shape0[1])}x{int(shape0[0])} -> {int(shape[1])}x{int(shape[0])}"


def thumbnail_px(shapes: Sequence[Sequence[int]]) -> int:
    """Thumbnail size: <= ``THUMBNAIL_PX`` and half the coarsest level's longer side."""
    return max(1, min(THUMBNAIL_PX, max(int(shapes[-1][0]), int(shapes[-1][1])) // 2))


def read_svs_provenance(description: str) -> dict[str, Any] | None:
    """The provenance JSON of an ``ImageDescription`` written by :func:`svs_description`."""
    for pair in description.split("|")[1:]:
        key, _, value = pair.partition("=")
        if key.strip() == "napari_cytosyn":
            return json.loads(value.strip())
    return None


def thumbnail_of(read: Reader, shape: Sequence[int], max_px: int) -> np.ndarray:
    """``(h, w, samples)`` uint8 thumbnail of one level (:func:`chunk_grid.thumbnail`)."""
    from napari_cytosyn.chunk_grid import thumbnail

    return thumbnail(lambda _, y, x, h, w: read(y, y + h, x, x + w), [shape], max_px)


def write_svs_pages(
    tif: Any,
    readers: Sequence[Reader],
    shapes: Sequence[Sequence[int]],
    samples: int,
    tile_px: int,
    mpp_xy: PixelSize | None,
    description: str,
    options: dict[str, Any],
    workers: int,
    cancel: Any,
    tick: Callable[[int], None],
    label_lines: Sequence[str] = ("napari-cytosyn",),
) -> None:
    """Write levels in the SVS layout: level 0, thumbnail, levels 1..., label, macro."""
    thumb = thumbnail_of(readers[-1], shapes[-1], thumbnail_px(shapes))
    photometric = "rgb" if samples == 3 else "minisblack"
    codec = options.get("compression")
    quality = (options.get("compressionargs") or {}).get("level", 0)
    for i, (read, shape) in enumerate(zip(readers, shapes, strict=True)):
        text = (
            description if i == 0 else level_description(shapes[0], shape, tile_px, codec, quality)
        )
        write_page(
            tif, read, shape, samples, tile_px, workers, cancel, tick, photometric=photometric,
            description=text, metadata=None, software="napari-cytosyn", **options,
            **resolution_kwargs(mpp_xy, shapes[0], shape),
        )  # fmt: skip
        if i == 0:
            write_thumbnail(tif, thumb, shapes[0], mpp_xy)
    write_label_and_macro(tif, thumb, label_lines)


def _stripped(image: np.ndarray) -> dict[str, Any]:
    return {
        "data": image if image.shape[-1] == 3 else image[..., 0],
        "photometric": "rgb" if image.shape[-1] == 3 else "minisblack",
        "metadata": None,
        "software": "napari-cytosyn",
    }


def write_thumbnail(
    tif: Any, thumb: np.ndarray, shape0: Sequence[int], mpp_xy: PixelSize | None
) -> None:
    """The thumbnail page (IFD 1): stripped, deflate, smaller than every level."""
    tif.write(
        **_stripped(thumb),
        compression="zlib",
        description=thumbnail_description(shape0, thumb.shape),
        **resolution_kwargs(mpp_xy, shape0, thumb.shape),
    )


def label_image(lines: Sequence[str], samples: int, size_px: int = 320) -> np.ndarray:
    """A white label with ``lines`` of black text (PIL's built-in font), ``(s, s, samples)``."""
    from PIL import Image, ImageDraw, ImageFont

    image = Image.new("L", (size_px, size_px), 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=22)
    for i, line in enumerate(lines):
        draw.text((12, 12 + 30 * i), str(line)[:24], fill=0, font=font)
    grey = np.asarray(image, np.uint8)[..., None]
    return np.repeat(grey, samples, axis=-1) if samples == 3 else grey


def write_label_and_macro(tif: Any, thumb: np.ndarray, label_lines: Sequence[str]) -> None:
    """The last two pages, as Aperio writes them: ``label`` (text naming what the file is) and
    ``macro`` (the overview, here the thumbnail).

    Bio-Formats' SVS reader takes the last two pages of an SVS for label and macro; without
    them it would file the two smallest levels as such and lose them from the pyramid.
    """
    label = label_image(label_lines, thumb.shape[-1])
    h, w = label.shape[:2]
    tif.write(
        **_stripped(label),
        compression="lzw",
        subfiletype=1,
        description=f"{_header()}label {w}x{h}",
    )
    tif.write(
        **_stripped(thumb),
        compression="zlib",
        subfiletype=9,
        description=f"{_header()}macro {thumb.shape[1]}x{thumb.shape[0]}",
    )
