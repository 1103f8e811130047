"""OME-Zarr backend (NGFF 0.4 on zarr v2, NGFF 0.5 on zarr v3) through zarr-python 3."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_cytosyn.pixel_size import PixelSize
from napari_cytosyn.slide._backend import UM_PER_UNIT, SlideReadError, read_rgb


def _multiscales(attrs: dict[str, Any]) -> tuple[list[dict[str, Any]] | None, str | None]:
    """(multiscales list, NGFF version) from group attributes of NGFF 0.4 or 0.5."""
    if isinstance(attrs.get("ome"), dict) and "multiscales" in attrs["ome"]:
        ome = attrs["ome"]
        return ome["multiscales"], str(ome.get("version", "0.5"))
    if "multiscales" in attrs:
        ms = attrs["multiscales"]
        version = ms[0].get("version") if ms and isinstance(ms[0], dict) else None
        return ms, str(version) if version else None
    return None, None


def _scale_of(transforms: list[dict[str, Any]] | None, ndim: int) -> list[float]:
    scale = [1.0] * ndim
    for t in transforms or []:
        if t.get("type") == "scale" and "scale" in t:
            scale = [a * float(b) for a, b in zip(scale, t["scale"], strict=True)]
    return scale


class OmeZarrBackend:
    """Reads the first multiscale image of an OME-Zarr group; colour axis 'c' of size 3."""

    def __init__(self, path: str | Path):
        import zarr

        self.path = Path(path)
        try:
            group = zarr.open_group(str(self.path), mode="r")
        except Exception as exc:
            raise SlideReadError(
                f"{self.path}: not a readable zarr group ({type(exc).__name__}: {exc})"
            ) from exc
        attrs = dict(group.attrs)
        multiscales, version = _multiscales(attrs)
        if multiscales is None and "0" in group and isinstance(group["0"], zarr.Group):
            group = group["0"]  # bioformats2raw layout: the image sits in group "0"
            multiscales, version = _multiscales(dict(group.attrs))
        if not multiscales:
            raise SlideReadError(
                f"{self.path}: zarr group without OME-NGFF 'multiscales' metadata; "
                "only OME-Zarr images (NGFF 0.4 or 0.5) are supported"
            )
        ms = multiscales[0]
        self.format = f"ome-zarr:{version or 'unknown'}"
        axes = ms.get("axes")
        if not axes:
            raise SlideReadError(f"{self.path}: OME-Zarr multiscales has no 'axes'")
        names = [a["name"] if isinstance(a, dict) else str(a) for a in axes]
        types = [a.get("type") if isinstance(a, dict) else None for a in axes]
        units = [a.get("unit") if isinstance(a, dict) else None for a in axes]
        if "y" not in names or "x" not in names:
            raise SlideReadError(f"{self.path}: OME-Zarr axes {names} have no 'y' and 'x'")
        colour = [i for i, (n, t) in enumerate(zip(names, types, strict=True)) if t == "channel"]
        colour = colour or [i for i, n in enumerate(names) if n == "c"]
        if len(colour) != 1:
            raise SlideReadError(
                f"{self.path}: OME-Zarr axes {names} have no single channel axis; "
                "only RGB images with a 'c' axis of size 3 are supported"
            )
        self._names = names
        self._c = colour[0]
        self._y = names.index("y")
        self._x = names.index("x")
        self._arrays = []
        self.level_shapes: list[tuple[int, int]] = []
        self.tile_shapes: list[tuple[int, int] | None] = []
        for ds in ms["datasets"]:
            try:
                arr = group[ds["path"]]
            except KeyError as exc:
                raise SlideReadError(
                    f"{self.path}: OME-Zarr dataset {ds['path']!r} listed but missing"
                ) from exc
            self._check_array(arr, ds["path"])
            self._arrays.append(arr)
            self.level_shapes.append((arr.shape[self._y], arr.shape[self._x]))
            self.tile_shapes.append((arr.chunks[self._y], arr.chunks[self._x]))
        global_scale = _scale_of(ms.get("coordinateTransformations"), len(names))
        scale0 = _scale_of(ms["datasets"][0].get("coordinateTransformations"), len(names))
        self.mpp = self._mpp([a * b for a, b in zip(scale0, global_scale, strict=True)], units)
        self.objective_power = None
        self.properties = {"ome.version": str(version), "ome.axes": ",".join(names)}
        if ms.get("name"):
            self.properties["ome.name"] = str(ms["name"])

    def _check_array(self, arr: Any, name: str) -> None:
        if arr.ndim != len(self._names):
            raise SlideReadError(
                f"{self.path}: dataset {name!r} has {arr.ndim} dims for axes {self._names}"
            )
        if arr.dtype != np.uint8:
            raise SlideReadError(
                f"{self.path}: dataset {name!r} has pixel type {arr.dtype}; "
                "only 8-bit RGB (uint8) slides are supported"
            )
        for i, n in enumerate(arr.shape):
            if i == self._c and n != 3:
                raise SlideReadError(
                    f"{self.path}: not an RGB image: channel axis has {n} channels, expected 3"
                )
            if i not in (self._c, self._y, self._x) and n != 1:
                raise SlideReadError(
                    f"{self.path}: axis {self._names[i]!r} has size {n}; only single-plane "
                    "(t = z = 1) RGB images are supported"
                )

    def _mpp(self, scale: list[float], units: list[str | None]) -> PixelSize | None:
        out = []
        for i in (self._x, self._y):
            unit = units[i]
            if unit is None:
                # No unit: by convention micrometres, unless the scale is the identity (unknown).
                if scale[i] == 1.0:
                    return None
                unit = "micrometer"
            factor = UM_PER_UNIT.get(str(unit).lower())
            if factor is None or not scale[i] > 0:
                return None
            out.append(scale[i] * factor)
        return PixelSize(out[0], out[1])

    def read(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        """In-bounds region of ``level`` as (h, w, 3) uint8."""
        return read_rgb(self._arrays[level], (self._y, self._x, self._c), y, x, h, w)

    def close(self) -> None:
        """zarr holds no open file handles."""
