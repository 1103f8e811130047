"""Inpainting masks from files: GeoJSON polygons (level-0 px) or a mask image at a slide level.

Each becomes components ``((y, x, h, w), mask)`` in level-0 px, one per polygon or connected
region, so every inpainting call works on a bounded context. Polygons are filled by scanline
over their bounding box (a 20,000-vertex polygon takes milliseconds, not the minutes of a
point-in-polygon test per pixel).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np

Component = tuple[tuple[int, int, int, int], np.ndarray]
_IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


class MaskError(ValueError):
    """A mask file that cannot be used on this slide."""


def read_mask(path: str | Path, slide: Any, level: int = 0) -> list[Component]:
    """Components ``((y, x, h, w), mask (h, w) bool)`` in level-0 px of ``slide``.

    ``path``: ``*.geojson``/``*.json`` (Polygon/MultiPolygon features, ``[x, y]`` in level-0 px,
    holes honoured) or an image (non-zero = inpaint) whose size equals ``slide`` level ``level``.
    Raises :class:`MaskError` for an unreadable, empty or out-of-slide mask.
    """
    path = Path(path)
    if not path.is_file():
        raise MaskError(f"mask file {path} does not exist")
    shape0 = tuple(slide.level_shapes[0])
    if path.suffix.lower() in (".geojson", ".json"):
        if level != 0:
            raise MaskError("GeoJSON masks are in level-0 px; drop --mask-level")
        components = _geojson_components(path, shape0)
    elif path.suffix.lower() in _IMAGE_SUFFIXES:
        components = _image_components(path, slide, level)
    else:
        raise MaskError(f"mask {path.name}: use a GeoJSON file or a PNG/TIFF/JPEG mask image")
    if not components:
        raise MaskError(f"mask {path.name} is empty: nothing to inpaint")
    return components


def _polygons(geo: Any) -> list[list[list[list[float]]]]:
    """Polygon coordinate lists (rings of [x, y]) from any GeoJSON object."""
    kind = geo.get("type") if isinstance(geo, dict) else None
    if kind == "FeatureCollection":
        return [p for f in geo.get("features", []) for p in _polygons(f)]
    if kind == "Feature":
        if geo.get("geometry") is None:
            warnings.warn(
                f"a Feature without geometry (id {geo.get('id')!r}) was skipped",
                UserWarning,
                stacklevel=2,
            )
            return []
        return _polygons(geo["geometry"])
    if kind == "GeometryCollection":
        return [p for g in geo.get("geometries", []) for p in _polygons(g)]
    if kind == "Polygon":
        return [geo["coordinates"]]
    if kind == "MultiPolygon":
        return list(geo["coordinates"])
    if kind in ("Point", "MultiPoint", "LineString", "MultiLineString"):
        return []  # annotations of other kinds (QuPath points, lines) are not areas
    raise MaskError(f"not a GeoJSON object: type {kind!r}")


def _geojson_components(path: Path, shape0: tuple[int, int]) -> list[Component]:
    try:
        geo = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MaskError(f"mask {path.name} is not valid JSON ({exc})") from exc
    H, W = shape0
    components = []
    for i, rings in enumerate(_polygons(geo)):
        try:
            rings = [np.asarray(r, dtype=np.float64) for r in rings]
        except (TypeError, ValueError) as exc:
            raise MaskError(f"polygon {i} of {path.name} has malformed coordinates") from exc
        if not rings:
            raise MaskError(f"polygon {i} of {path.name} has no rings")
        exterior = rings[0]
        if exterior.ndim != 2 or exterior.shape[0] < 3 or exterior.shape[1] < 2:
            raise MaskError(f"polygon {i} of {path.name} has fewer than 3 points")
        for ring in rings:
            if ring.ndim != 2 or ring.shape[1] < 2 or not np.isfinite(ring[:, :2]).all():
                raise MaskError(
                    f"polygon {i} of {path.name} has a non-finite (NaN or infinite) or "
                    "malformed coordinate"
                )
        xs, ys = exterior[:, 0], exterior[:, 1]
        if xs.min() < 0 or ys.min() < 0 or xs.max() > W or ys.max() > H:
            raise MaskError(
                f"polygon {i} of {path.name} spans x {xs.min():.0f}..{xs.max():.0f}, "
                f"y {ys.min():.0f}..{ys.max():.0f}, outside the slide (0..{W}, 0..{H} level-0 px)"
            )
        y0, x0 = int(np.floor(ys.min())), int(np.floor(xs.min()))
        y1, x1 = min(H, int(np.ceil(ys.max()))), min(W, int(np.ceil(xs.max())))
        h, w = max(1, y1 - y0), max(1, x1 - x0)
        # Holes are rings too: the even-odd rule removes them from the exterior.
        mask = fill_rings([r[:, :2] - (x0, y0) for r in rings], (h, w))
        if mask.any():
            components.append(((y0, x0, h, w), mask))
    return components


def fill_rings(rings: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Scanline fill of polygon rings (``[x, y]`` rows, px) on an ``(h, w)`` grid, even-odd rule.

    Pixel ``(r, c)`` is inside when its centre ``(r + 0.5, c + 0.5)`` is. Cost: the rows spanned
    by the edges plus the grid, whatever the number of vertices.
    """
    h, w = shape
    starts = np.concatenate([r for r in rings])
    ends = np.concatenate([np.roll(r, -1, axis=0) for r in rings])
    xa, ya, xb, yb = starts[:, 0], starts[:, 1], ends[:, 0], ends[:, 1]
    keep = ya != yb
    xa, ya, xb, yb = xa[keep], ya[keep], xb[keep], yb[keep]
    lo, hi = np.minimum(ya, yb), np.maximum(ya, yb)
    # rows whose centre y = r + 0.5 satisfies lo <= y < hi (half-open: vertices count once)
    r0 = np.clip(np.ceil(lo - 0.5), 0, h).astype(np.int64)
    r1 = np.clip(np.ceil(hi - 0.5), 0, h).astype(np.int64)
    n = np.maximum(r1 - r0, 0)
    out = np.zeros((h, w), dtype=bool)
    if n.sum() == 0:
        return out
    edge = np.repeat(np.arange(len(n)), n)
    rows = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n) + r0[edge]
    yc = rows + 0.5
    x = xa[edge] + (yc - ya[edge]) * (xb[edge] - xa[edge]) / (yb[edge] - ya[edge])
    order = np.lexsort((x, rows))
    rows, x = rows[order], x[order]
    # crossings come in pairs per row; fill the centres between each pair
    rows, xl, xr = rows[0::2], x[0::2], x[1::2]
    c0 = np.clip(np.ceil(xl - 0.5), 0, w).astype(np.int64)
    c1 = np.clip(np.ceil(xr - 0.5), 0, w).astype(np.int64)
    span = c1 > c0
    diff = np.zeros((h, w + 1), dtype=np.int32)
    np.add.at(diff, (rows[span], c0[span]), 1)
    np.add.at(diff, (rows[span], c1[span]), -1)
    return np.cumsum(diff[:, :w], axis=1) > 0


def _image_components(path: Path, slide: Any, level: int) -> list[Component]:
    from skimage.io import imread
    from skimage.measure import label, regionprops

    if not 0 <= level < len(slide.level_shapes):
        last = len(slide.level_shapes) - 1
        raise MaskError(f"--mask-level {level}: the slide has levels 0..{last}")
    try:
        image = np.asarray(imread(path))
    except Exception as exc:
        raise MaskError(f"cannot read mask image {path.name} ({exc})") from exc
    if image.ndim == 3:
        image = image[..., :3].max(axis=-1) if image.shape[-1] in (3, 4) else image[..., 0]
    mask_k = image != 0
    Hk, Wk = slide.level_shapes[level]
    if mask_k.shape != (Hk, Wk):
        raise MaskError(
            f"mask image {path.name} is {mask_k.shape[0]} x {mask_k.shape[1]} px but level "
            f"{level} of the slide is {Hk} x {Wk}; pass the --mask-level it was drawn on"
        )
    H0, W0 = slide.level_shapes[0]
    dy, dx = H0 / Hk, W0 / Wk
    labels = label(mask_k)
    components = []
    for region in regionprops(labels):
        r0, c0, r1, c1 = region.bbox
        y0, x0 = int(np.floor(r0 * dy)), int(np.floor(c0 * dx))
        y1, x1 = min(H0, int(np.ceil(r1 * dy))), min(W0, int(np.ceil(c1 * dx)))
        # nearest-neighbour upsampling of this component only (the image may be a coarse level)
        rows = np.clip(((np.arange(y0, y1) + 0.5) / dy).astype(int), r0, r1 - 1)
        cols = np.clip(((np.arange(x0, x1) + 0.5) / dx).astype(int), c0, c1 - 1)
        own = labels[r0:r1, c0:c1] == region.label
        mask0 = own[np.ix_(rows - r0, cols - c0)]
        if mask0.any():
            components.append(((y0, x0, y1 - y0, x1 - x0), mask0))
    return components
