"""TIFF dispatch and the tifffile backend (OME-TIFF with SubIFD pyramids, flat TIFF).

Vendor TIFFs (SVS, NDPI, SCN, BIF, Philips) and generic tiled pyramids whose levels are separate
IFDs go to OpenSlide; OME-TIFF, SubIFD pyramids and TIFFs OpenSlide does not recognise are read with
tifffile through its zarr store, which decodes only the tiles a region touches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_cytosyn.pixel_size import PixelSize
from napari_cytosyn.slide._backend import UM_PER_UNIT, SlideBackend, SlideReadError, read_rgb

#: TIFF ResolutionUnit values -> micrometres per unit (1 = no absolute unit).
_UM_PER_RESUNIT = {2: 25400.0, 3: 1e4, 4: 1e3, 5: 1.0}


def open_tiff_backend(path: Path) -> SlideBackend:
    """Check a TIFF for truncation and pick OpenSlide or tifffile to read it."""
    import tifffile

    try:
        tf = tifffile.TiffFile(str(path))
    except Exception as exc:
        raise SlideReadError(f"{path}: not a readable TIFF ({type(exc).__name__}: {exc})") from exc
    try:
        _check_not_truncated(tf, path)
        series = tf.series[0] if tf.series else None
        if series is None:
            raise SlideReadError(f"{path}: TIFF holds no image")
        subifd_pyramid = len(series.levels) > 1 and bool(tf.pages[0].subifds)
        if not (tf.is_ome or subifd_pyramid):
            from napari_cytosyn.slide._openslide import OpenSlideBackend, detect_vendor

            if detect_vendor(path) is not None:
                tf.close()
                return OpenSlideBackend(path)
        return TiffBackend(tf, path)
    except BaseException:
        tf.close()
        raise


def _check_not_truncated(tf: Any, path: Path) -> None:
    """Raise if any page's tile/strip data lies past the end of the file."""
    size = path.stat().st_size
    pages = list(tf.pages)
    for series in tf.series:
        for level in series.levels:
            pages.extend(level.pages)
    for page in pages:
        if page is None:
            continue
        offsets = np.asarray(page.dataoffsets, dtype=np.int64)
        counts = np.asarray(page.databytecounts, dtype=np.int64)
        if offsets.size and int((offsets + counts).max()) > size:
            raise SlideReadError(
                f"{path}: truncated or corrupt TIFF: image data of page {page.index} ends at byte "
                f"{int((offsets + counts).max())} but the file has {size} bytes"
            )


class TiffBackend:
    """Reads RGB uint8 TIFF pyramids through ``tifffile``'s zarr store."""

    def __init__(self, tf: Any, path: Path):
        import zarr

        self.path = Path(path)
        self._tf = tf
        series = tf.series[0]
        self.format = "ome-tiff" if tf.is_ome else "tiff"
        if series.dtype != np.uint8:
            raise SlideReadError(
                f"{path}: pixel type is {series.dtype}, only 8-bit RGB (uint8) slides are supported"
            )
        layout = _rgb_layout(series.axes, series.shape, path)
        self._yxc = (series.axes.index("Y"), series.axes.index("X"), series.axes.index(layout))
        self._arrays = []
        self.level_shapes: list[tuple[int, int]] = []
        self.tile_shapes: list[tuple[int, int] | None] = []
        for index, level in enumerate(series.levels):
            store = series.aszarr(level=index)
            self._arrays.append(zarr.open_array(store, mode="r"))
            sizes = dict(zip(series.axes, level.shape, strict=True))
            self.level_shapes.append((sizes["Y"], sizes["X"]))
            key = level.keyframe
            self.tile_shapes.append(
                (int(key.tilelength), int(key.tilewidth)) if key.is_tiled else None
            )
        page = tf.pages[0]
        self.properties = _tiff_properties(tf, page)
        self.properties["tifffile.axes"] = series.axes
        self.mpp = None
        self.objective_power = None
        if tf.is_ome:
            self.mpp, self.objective_power = _ome_physical(tf.ome_metadata)
        if self.mpp is None:
            self.mpp = _resolution_mpp(page)

    def read(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        """In-bounds region of ``level`` as (h, w, 3) uint8."""
        return read_rgb(self._arrays[level], self._yxc, y, x, h, w)

    def close(self) -> None:
        self._tf.close()


def _rgb_layout(axes: str, shape: tuple[int, ...], path: Path) -> str:
    """The name of the colour axis ('S' or 'C') of an RGB series; raise for anything else."""
    sizes = dict(zip(axes, shape, strict=True))
    if "Y" not in sizes or "X" not in sizes:
        raise SlideReadError(f"{path}: TIFF series has axes {axes!r} without Y and X")
    colour = [a for a in axes if a in ("S", "C")]
    others = [a for a in axes if a not in ("Y", "X", "S", "C") and sizes[a] != 1]
    colour = [a for a in colour if sizes[a] != 1] or colour
    if others or len(colour) != 1 or sizes[colour[0]] != 3:
        raise SlideReadError(
            f"{path}: not an RGB image (axes {axes!r}, shape {tuple(shape)}); "
            "only 3-channel RGB slides are supported"
        )
    return colour[0]


_PROPERTY_TAGS = "ImageDescription Software Make Model DateTime Artist XResolution YResolution"


def _tiff_properties(tf: Any, page: Any) -> dict[str, str]:
    props: dict[str, str] = {}
    for tag in (*_PROPERTY_TAGS.split(), "ResolutionUnit"):
        if tag in page.tags:
            value = page.tags[tag].value
            text = str(getattr(value, "name", value))
            props[f"tiff.{tag}"] = text if len(text) <= 4096 else text[:4096] + "..."
    props["tiff.compression"] = str(getattr(page.compression, "name", page.compression))
    return props


def _resolution_mpp(page: Any) -> PixelSize | None:
    unit = int(page.resolutionunit)
    um = _UM_PER_RESUNIT.get(unit)
    if um is None:
        return None
    xres, yres = page.resolution
    if not (xres > 0 and yres > 0) or (xres == 1 and yres == 1):
        return None
    return PixelSize(um / xres, um / yres)


def _ome_physical(xml: str | None) -> tuple[PixelSize | None, float | None]:
    """(pixel size, nominal objective magnification) from OME-XML; either may be None."""
    if not xml:
        return None, None
    import tifffile

    try:
        ome = tifffile.xml2dict(xml).get("OME", {})
    except Exception:
        return None, None
    image = ome.get("Image", {})
    image = image[0] if isinstance(image, list) else image
    pixels = image.get("Pixels", {})
    mpp = None
    try:
        px = float(pixels["PhysicalSizeX"])
        py = float(pixels.get("PhysicalSizeY", px))
        ux = UM_PER_UNIT.get(str(pixels.get("PhysicalSizeXUnit", "µm")))
        uy = UM_PER_UNIT.get(str(pixels.get("PhysicalSizeYUnit", "µm")))
        if ux is not None and uy is not None and px > 0 and py > 0:
            mpp = PixelSize(px * ux, py * uy)
    except (KeyError, TypeError, ValueError):
        mpp = None
    power = None
    instrument = ome.get("Instrument", {})
    instrument = instrument[0] if isinstance(instrument, list) else instrument
    objective = instrument.get("Objective", {}) if isinstance(instrument, dict) else {}
    objective = objective[0] if isinstance(objective, list) else objective
    try:
        power = float(objective["NominalMagnification"])
    except (KeyError, TypeError, ValueError):
        power = None
    return mpp, power
