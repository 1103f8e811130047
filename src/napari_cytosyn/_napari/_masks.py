"""Masks and rectangles drawn in napari, turned into level-0 pixels of a slide layer.

A Shapes layer (rectangles, polygons, ellipses) or a single-scale Labels layer (non-zero =
synthesize) marks where synthetic tissue goes. Layers are related through their world
coordinates (``scale`` and ``translate``); layers with a rotation, shear or affine transform
are refused with a message, because the mask would not land where it is drawn.

:func:`read_mask` reads a mask layer on the GUI thread as plain data (cheap: vertices, or a
copy of the painted labels); :meth:`DrawnMask.rasterise` turns it into pixels in a job's worker
thread, so a large mask never stalls napari and painting on during the job changes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

AREA_SHAPES = ("rectangle", "polygon", "ellipse")
Region = tuple[int, int, int, int]  # (y, x, h, w) in level-0 px of the target slide
Placement = tuple[np.ndarray, np.ndarray]  # (scale, translate) of a layer's last two axes


def _placement(layer: Any) -> Placement:
    """``(scale, translate)`` of the last two axes; refuses other transforms."""
    nd = layer.ndim
    if not (
        np.allclose(layer.affine.affine_matrix, np.eye(nd + 1))
        and np.allclose(layer.rotate, np.eye(nd))
        and np.allclose(layer.shear, 0)
    ):
        raise ValueError(
            f"layer {layer.name!r} is rotated, sheared or has an affine transform; masks are "
            "only supported on layers placed with scale and translate. Reset its transform"
        )
    return np.asarray(layer.scale[-2:], float), np.asarray(layer.translate[-2:], float)


def _map(src: Placement, dst: Placement, points: np.ndarray) -> np.ndarray:
    """``(N, 2)`` (y, x) data coordinates of a layer placed at ``src`` -> data coordinates of
    one placed at ``dst`` (level 0 for a multiscale layer), through world coordinates."""
    return (np.asarray(points, float) * src[0] + src[1] - dst[1]) / dst[0]


def _shape_outline(shape_type: str, vertices: np.ndarray) -> np.ndarray:
    """Polygon ``(N, 2)`` tracing an area shape given by napari's vertices."""
    if shape_type != "ellipse":
        return vertices
    # napari stores an ellipse as the 4 corners of its (possibly rotated) bounding box.
    centre = vertices.mean(axis=0)
    a = (vertices[1] + vertices[2]) / 2 - centre
    b = (vertices[2] + vertices[3]) / 2 - centre
    t = np.linspace(0, 2 * math.pi, 128, endpoint=False)[:, None]
    return centre + np.cos(t) * a + np.sin(t) * b


def _clip_bbox(lo: np.ndarray, hi: np.ndarray, shape_hw: tuple[int, int], name: str) -> Region:
    y0, x0 = max(0, math.floor(lo[0])), max(0, math.floor(lo[1]))
    y1, x1 = min(shape_hw[0], math.ceil(hi[0]) + 1), min(shape_hw[1], math.ceil(hi[1]) + 1)
    if y1 <= y0 or x1 <= x0:
        raise ValueError(f"the mask in {name!r} lies outside the slide; draw it over the tissue")
    return y0, x0, y1 - y0, x1 - x0


@dataclass(frozen=True, eq=False)
class DrawnMask:
    """What a mask layer holds, as plain data (see :func:`read_mask`).

    From a Shapes layer: ``outlines``, polygons ``(N, 2)`` float (y, x) in the target slide's
    level-0 px. From a Labels layer: ``painted``, its ``(H, W)`` bool non-zero pixels (a copy),
    and ``placements``, the ``(scale, translate)`` of the labels and of the slide layer.
    """

    name: str
    outlines: tuple[np.ndarray, ...] = ()
    painted: np.ndarray | None = None
    placements: tuple[Placement, Placement] | None = None

    def rasterise(self, shape_hw: tuple[int, int]) -> tuple[Region, np.ndarray]:
        """Level-0 pixels of the mask on a slide of level-0 ``(height, width)`` ``shape_hw``:
        ``((y, x, h, w), mask)``, the clipped bounding box and a ``(h, w)`` bool mask.

        Shapes: True where a pixel's centre lies inside any shape (half-open edges, as the
        CLI's GeoJSON masks). Labels: each level-0 pixel takes the label of the Labels pixel its
        centre falls in (nearest), so a Labels layer painted at any resolution works.
        """
        if self.painted is not None:
            return self._resample_painted(shape_hw)
        # The CLI's scanline fill: a few numpy calls, where skimage.draw.polygon tested every
        # pixel of the bounding box in one call that holds the GIL (0.2 s for 600 x 600 px,
        # 3.6 s for 2400 x 2400 px: napari froze meanwhile)
        from napari_cytosyn.cli_masks import fill_rings

        allv = np.concatenate(self.outlines)
        y, x, h, w = _clip_bbox(allv.min(axis=0), allv.max(axis=0), shape_hw, self.name)
        mask = np.zeros((h, w), dtype=bool)
        for outline in self.outlines:  # each shape filled on its own: overlaps stay inside
            # (y, x) with pixel centres on integers -> (x, y) with centres on halves
            mask |= fill_rings([outline[:, ::-1] - (x - 0.5, y - 0.5)], (h, w))
        if not mask.any():
            raise ValueError(f"the shapes in {self.name!r} cover no slide pixel; draw larger ones")
        return (y, x, h, w), mask

    def _resample_painted(self, shape_hw: tuple[int, int]) -> tuple[Region, np.ndarray]:
        painted, (labels_at, target_at) = self.painted, self.placements
        rows = np.nonzero(painted.any(axis=1))[0]
        cols = np.nonzero(painted.any(axis=0))[0]
        corners = np.array(
            [[rows[0] - 0.5, cols[0] - 0.5], [rows[-1] + 0.5, cols[-1] + 0.5]], dtype=float
        )
        ends = _map(labels_at, target_at, corners)
        lo, hi = ends.min(axis=0), ends.max(axis=0)
        # Target pixels whose centres lie in [lo, hi): the painted area, no more.
        y, x, h, w = _clip_bbox(np.ceil(lo), np.ceil(hi) - 1, shape_hw, self.name)
        # Centres of the target's pixels, expressed in the labels' data coordinates.
        ys = _map(target_at, labels_at, np.stack([np.arange(y, y + h), np.zeros(h)], 1))[:, 0]
        xs = _map(target_at, labels_at, np.stack([np.zeros(w), np.arange(x, x + w)], 1))[:, 1]
        iy, ix = np.round(ys).astype(int), np.round(xs).astype(int)
        inside_y = (iy >= 0) & (iy < painted.shape[0])
        inside_x = (ix >= 0) & (ix < painted.shape[1])
        mask = painted[np.clip(iy, 0, painted.shape[0] - 1)][
            :, np.clip(ix, 0, painted.shape[1] - 1)
        ]
        mask &= inside_y[:, None] & inside_x[None, :]
        if not mask.any():
            raise ValueError(f"the painting in {self.name!r} covers no slide pixel")
        return (y, x, h, w), mask


def _read_shapes(shapes: Any, target: Any) -> DrawnMask:
    """Rectangles, polygons and ellipses count; lines and paths are refused (no area)."""
    shapes_at, target_at = _placement(shapes), _placement(target)
    outlines = []
    for i, kind in enumerate(shapes.shape_type):
        if kind not in AREA_SHAPES:
            raise ValueError(
                f"shape {i} of {shapes.name!r} is a {kind}, which encloses no area; use "
                "rectangles, polygons or ellipses"
            )
        verts = np.asarray(shapes.data[i], float)[:, -2:]
        outlines.append(_map(shapes_at, target_at, _shape_outline(kind, verts)))
    if not outlines:
        raise ValueError(f"{shapes.name!r} has no shapes; draw a rectangle, polygon or ellipse")
    return DrawnMask(shapes.name, outlines=tuple(outlines))


def _read_labels(labels: Any, target: Any) -> DrawnMask:
    if labels.multiscale:
        raise ValueError(
            f"{labels.name!r} is multiscale, and multiscale Labels cannot be painted; add a "
            "single-scale Labels layer (e.g. at a coarse scale over the slide) and paint there"
        )
    data = np.asarray(labels.data)
    if data.ndim != 2:
        raise ValueError(f"{labels.name!r} must be 2-D (y, x), got shape {data.shape}")
    painted = data != 0
    if not painted.any():
        raise ValueError(f"nothing is painted in {labels.name!r}; paint where to synthesize")
    placements = (_placement(labels), _placement(target))
    return DrawnMask(labels.name, painted=painted, placements=placements)


def read_mask(mask_layer: Any, target: Any) -> DrawnMask:
    """The mask drawn in a Shapes layer or painted in a single-scale Labels layer (non-zero)
    over slide layer ``target``, read as plain data on the GUI thread; what the layer holds
    cannot be used (no area, nothing painted, rotated...) is refused here with a message."""
    kind = type(mask_layer).__name__
    if kind == "Shapes":
        return _read_shapes(mask_layer, target)
    if kind == "Labels":
        return _read_labels(mask_layer, target)
    raise TypeError(
        f"{mask_layer.name!r} is a {kind} layer; draw the mask on a Shapes layer or paint it on "
        "a Labels layer"
    )


def world_rectangles(shapes: Any) -> list[tuple[float, float, float, float]]:
    """Axis-aligned world bounding boxes ``(y0, x0, y1, x1)`` of every shape of a Shapes layer
    (any shape type; used to place synthesized regions)."""
    if not len(shapes.data):
        raise ValueError(f"{shapes.name!r} has no shapes; draw a rectangle where to synthesize")
    s, t = _placement(shapes)
    out = []
    for verts in shapes.data:
        w = np.asarray(verts, float)[:, -2:] * s + t
        lo, hi = w.min(axis=0), w.max(axis=0)
        out.append((float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])))
    return out
