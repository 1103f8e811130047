"""The synthetic mask beside a TIFF export: a mask TIFF and QuPath GeoJSON annotations.

The tissue stays alone in the file (readers that file images by size, e.g. large_image, would
otherwise show the mask); beside it:

- ``<stem>.synthetic-mask.tif``: uint8, 255 = synthetic, in the image's SVS layout, levels,
  tiles and resolution (deflate), so the same readers open it aligned with the image;
- ``<stem>.synthetic.geojson``: a ``FeatureCollection`` of ``Polygon`` annotations in level-0
  px (x right, y down) with QuPath's properties (``objectType: annotation``, class
  ``Synthetic``): File > Import objects in QuPath shows them.

Polygons follow the midpoints of pixel edges (``find_contours`` at 0.5, a vertex only where the
outline turns), outer rings counter-clockwise on screen, holes clockwise; each region is traced
on the finest level where its box holds at most ``MAX_TRACE_PX`` pixels, scaled to level 0.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_cytosyn.export._stream import atomic_output, output_path
from napari_cytosyn.export._svs import svs_description, write_svs_pages
from napari_cytosyn.export._tiles import level_readers, scratch_dir, tiff_options
from napari_cytosyn.pixel_size import PixelSize
from napari_cytosyn.slide.real import mask_sidecar, slide_stem

MASK_VALUE = 255
MAX_TRACE_PX = 4096 * 4096
CLASSIFICATION = {"name": "Synthetic", "color": [255, 0, 255]}


def sidecar_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(mask TIFF, GeoJSON) written beside the TIFF export ``path``."""
    path = Path(path)
    return mask_sidecar(path), path.with_name(f"{slide_stem(Path(path))}.synthetic.geojson")


def check_sidecars(path: str | os.PathLike, overwrite: bool) -> None:
    """Fail before anything is written when a sidecar exists and ``overwrite`` is false."""
    for side in sidecar_paths(path):
        output_path(side, overwrite)


def write_mask_sidecars(
    path: str | os.PathLike,
    mask_levels: Sequence[Any],
    shapes: Sequence[Sequence[int]],
    mpp_xy: PixelSize | None,
    tile_px: int,
    overwrite: bool,
    workers: int,
    cancel: Any,
    tick: Callable[[int], None],
) -> tuple[Path, Path]:
    """Write the mask TIFF and the GeoJSON beside ``path``; returns their paths."""
    import tifffile
    import zarr

    mask_path, geojson_path = sidecar_paths(path)
    with atomic_output(mask_path, overwrite) as tmp:
        with scratch_dir(mask_path, tmp) as scratch:
            readers = level_readers(
                mask_levels, shapes, scratch, MASK_VALUE, tile_px, workers, cancel
            )
            description = svs_description(
                shapes[0], tile_px, "zlib", 0, mpp_xy, f"{slide_stem(Path(path))} synthetic mask"
            )
            with tifffile.TiffWriter(tmp, bigtiff=True) as tif:
                write_svs_pages(
                    tif, readers, shapes, 1, tile_px, mpp_xy, description,
                    tiff_options("zlib", 0), workers, cancel, tick,
                    ("napari-cytosyn", "synthetic mask", slide_stem(Path(path))),
                )  # fmt: skip
        with tifffile.TiffFile(str(tmp)) as tf:  # levels read lazily, tiles decoded on read
            series = tf.series[0]
            levels = [
                zarr.open_array(series.aszarr(level=k), mode="r") for k in range(len(series.levels))
            ]
            features = mask_features(levels, shapes)
    with atomic_output(geojson_path, overwrite) as tmp:
        tmp.write_text(json.dumps(feature_collection(features)))
    return mask_path, geojson_path


def _squeeze(block: Any) -> np.ndarray:
    block = np.asarray(block)
    while block.ndim > 2:
        block = block[0] if block.shape[0] == 1 else block[..., 0]
    return block


def mask_features(
    mask_levels: Sequence[Any], shapes: Sequence[Sequence[int]]
) -> list[dict[str, Any]]:
    """QuPath annotation features of the non-zero regions of a mask pyramid (finest first):
    regions found on the coarsest level, each traced on the finest level where its box holds at
    most ``MAX_TRACE_PX`` pixels, only under its coarse region (none is traced twice)."""
    from skimage.measure import label, regionprops

    coarse = _squeeze(mask_levels[-1][...]) != 0
    labels = label(coarse, connectivity=2)
    h0, w0 = shapes[0]
    hk, wk = shapes[-1]
    features: list[dict[str, Any]] = []
    for region in regionprops(labels):
        r0, c0, r1, c1 = region.bbox
        # finest level whose box (in that level's px) holds at most MAX_TRACE_PX pixels
        for j, (hj, wj) in enumerate(shapes):
            y0, y1 = math.floor(r0 * hj / hk), min(hj, math.ceil(r1 * hj / hk))
            x0, x1 = math.floor(c0 * wj / wk), min(wj, math.ceil(c1 * wj / wk))
            if (y1 - y0) * (x1 - x0) <= MAX_TRACE_PX or j == len(shapes) - 1:
                break
        sub = _squeeze(mask_levels[j][y0:y1, x0:x1]) != 0
        # keep only the pixels whose coarse parent belongs to this region
        rows = np.minimum((np.arange(y0, y1) * hk) // hj, hk - 1)
        cols = np.minimum((np.arange(x0, x1) * wk) // wj, wk - 1)
        sub &= labels[np.ix_(rows, cols)] == region.label
        scale = (w0 / wj, h0 / hj)
        for polygon in _polygons(sub, (x0, y0), scale):
            features.append(_feature(polygon, len(features) + 1))
    return features


def _drop_collinear(ring: np.ndarray) -> np.ndarray:
    """A closed ring without the vertices on the line through their neighbours (the same
    outline; ``find_contours`` puts one on every pixel edge it crosses)."""
    pts = ring[:-1]
    prev, nxt = np.roll(pts, 1, axis=0), np.roll(pts, -1, axis=0)
    cross = (pts[:, 0] - prev[:, 0]) * (nxt[:, 1] - pts[:, 1]) - (pts[:, 1] - prev[:, 1]) * (
        nxt[:, 0] - pts[:, 0]
    )
    kept = pts[np.abs(cross) > 1e-9]
    return np.concatenate([kept, kept[:1]]) if len(kept) else ring


def _ring_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]))


def _polygons(
    mask: np.ndarray, origin_xy: tuple[int, int], scale_xy: tuple[float, float]
) -> list[list[np.ndarray]]:
    """Polygons (outer ring, holes...) of a bool mask, as (x, y) level-0 px rings."""
    from skimage.measure import find_contours, points_in_poly

    outers: list[np.ndarray] = []
    holes: list[np.ndarray] = []
    for contour in find_contours(np.pad(mask, 1).astype(np.float32), 0.5):
        contour = _drop_collinear(contour)
        if len(contour) < 4:
            continue
        # (row, col) in the padded array -> (x, y) at pixel-edge coordinates of level 0
        ring = np.stack(
            [
                (contour[:, 1] - 1 + 0.5 + origin_xy[0]) * scale_xy[0],
                (contour[:, 0] - 1 + 0.5 + origin_xy[1]) * scale_xy[1],
            ],
            axis=1,
        )
        # with y pointing down, the outer boundary has positive shoelace area, holes negative
        (outers if _ring_area(ring) > 0 else holes).append(ring)
    polygons = [[outer] for outer in sorted(outers, key=_ring_area)]
    for hole in holes:
        for polygon in polygons:  # smallest enclosing outer ring first
            if points_in_poly(hole[:1], polygon[0])[0]:
                polygon.append(hole)
                break
    return polygons


def _feature(rings: list[np.ndarray], index: int) -> dict[str, Any]:
    coords = [[[round(float(x), 2), round(float(y), 2)] for x, y in ring] for ring in rings]
    return {
        "type": "Feature",
        "id": f"synthetic-{index}",
        "geometry": {"type": "Polygon", "coordinates": coords},
        "properties": {
            "objectType": "annotation",
            "name": f"synthetic {index}",
            "classification": dict(CLASSIFICATION),
            "isLocked": True,
        },
    }


def feature_collection(features: list[dict[str, Any]]) -> dict[str, Any]:
    """A GeoJSON ``FeatureCollection`` of the given features."""
    return {"type": "FeatureCollection", "features": features}
