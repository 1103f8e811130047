"""OpenSlide backend: vendor formats and generic tiled pyramidal TIFF, RGBA composited on white."""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import numpy as np

from napari_cytosyn.pixel_size import PixelSize
from napari_cytosyn.slide._backend import SlideReadError

_UINT32_P = ctypes.POINTER(ctypes.c_uint32)


def detect_vendor(path: str | Path) -> str | None:
    """OpenSlide's vendor name for ``path`` (e.g. ``"aperio"``, ``"generic-tiff"``), or None."""
    import openslide

    try:
        return openslide.OpenSlide.detect_format(str(path))
    except openslide.OpenSlideError:
        return None


def composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """``(h, w, 3)`` uint8 of un-premultiplied ``(h, w, 4)`` RGBA (``OpenSlide.read_region``'s,
    transparent where the scanner recorded nothing) composited on white."""
    alpha = rgba[..., 3]
    if alpha.size == 0 or alpha.min() == 255:
        return np.ascontiguousarray(rgba[..., :3])
    a = alpha[..., None].astype(np.uint16)
    inv = 255 - rgba[..., :3].astype(np.uint16)
    return (255 - (inv * a + 127) // 255).astype(np.uint8)


def premultiplied_bgra_on_white(bgra: np.ndarray) -> np.ndarray:
    """``(h, w, 3)`` uint8 RGB of OpenSlide's premultiplied ARGB buffer (``(h, w, 4)`` bytes B,
    G, R, A) on white: with c' = c * a / 255, ``c * a + 255 * (1 - a)`` is ``c' + 255 - a``."""
    rgb = bgra[..., [2, 1, 0]]  # fancy indexing: one contiguous copy
    alpha = bgra[..., 3]
    if alpha.size and alpha.min() != 255:
        rgb += (255 - alpha)[..., None]  # c' <= a, so the sum never exceeds 255
    return rgb


class OpenSlideBackend:
    """Reads a slide through ``openslide.OpenSlide``; thread-safe like the C library."""

    def __init__(self, path: str | Path):
        import openslide

        self.path = Path(path)
        try:
            self._osr = openslide.OpenSlide(str(self.path))
        except openslide.OpenSlideUnsupportedFormatError as exc:
            raise SlideReadError(
                f"{self.path}: OpenSlide does not recognise this file's format ({exc})"
            ) from exc
        except openslide.OpenSlideError as exc:
            raise SlideReadError(
                f"{self.path}: OpenSlide could not open it (corrupt or truncated?): {exc}"
            ) from exc
        props = {k: str(v) for k, v in self._osr.properties.items()}
        self.properties = props
        self.format = f"openslide:{props.get('openslide.vendor', 'unknown')}"
        self.level_shapes = [(h, w) for w, h in self._osr.level_dimensions]
        self._downsamples = list(self._osr.level_downsamples)
        self.tile_shapes: list[tuple[int, int] | None] = []
        for level in range(len(self.level_shapes)):
            th = props.get(f"openslide.level[{level}].tile-height")
            tw = props.get(f"openslide.level[{level}].tile-width")
            self.tile_shapes.append((int(th), int(tw)) if th and tw else None)
        self.mpp = _mpp(props)
        power = props.get("openslide.objective-power")
        self.objective_power = _float_or_none(power)
        # openslide-python's ctypes binding of openslide_read_region (fills premultiplied ARGB);
        # fall back to the public PIL path if a future version renames it.
        self._read_argb = getattr(openslide.lowlevel, "_read_region", None)
        if sys.byteorder != "little" or not hasattr(self._osr, "_osr"):
            self._read_argb = None

    def read(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        """In-bounds region of ``level`` as (h, w, 3) uint8 (OpenSlide's RGBA on white)."""
        ds = self._downsamples[level]
        x0, y0 = round(x * ds), round(y * ds)
        if self._read_argb is None:
            image = self._osr.read_region((x0, y0), level, (w, h))
            return composite_on_white(np.asarray(image))
        # Straight into a numpy buffer: skips the un-premultiply pass and the PIL image that
        # openslide-python builds, and releases the GIL while OpenSlide decodes.
        buf = np.empty((h, w), np.uint32)
        self._read_argb(self._osr._osr, buf.ctypes.data_as(_UINT32_P), x0, y0, level, w, h)
        return premultiplied_bgra_on_white(buf.view(np.uint8).reshape(h, w, 4))

    def close(self) -> None:
        self._osr.close()


def _float_or_none(value: str | None) -> float | None:
    try:
        out = float(value) if value is not None else None
    except ValueError:
        return None
    return out if out is not None and out > 0 and np.isfinite(out) else None


def _mpp(props: dict[str, str]) -> PixelSize | None:
    mx = _float_or_none(props.get("openslide.mpp-x"))
    my = _float_or_none(props.get("openslide.mpp-y"))
    if mx is None and my is None:
        return None
    return PixelSize(mx or my, my or mx)  # type: ignore[arg-type]
