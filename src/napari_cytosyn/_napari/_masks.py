"""Masks and rectangles drawn in napari, turned into level-0 pixels of a slide layer.

A Shapes layer (rectangles, polygons, ellipses) or a single-scale Labels layer (non-zero =
synthesize) marks where synthetic tissue goes. Layers are related through their world
coordinates (``scale`` and ``translate``); layers with a rotation, shear or affine transform
are refused with a message, because the mask would not land where it is drawn.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

AREA_SHAPES = ("rectangle", "polygon", "ellipse")
Region = tuple[int, int, int, int]  # (y, x, h, w) in level-0 px of the target slide


def _axis_aligned(layer: Any) -> tuple[np.ndarray, np.ndarray]:
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


def data_to_data(src: Any, dst: Any, points: np.ndarray) -> np.ndarray:
    """Map ``(N, 2)`` (y, x) data coordinates of layer ``src`` to data coordinates of ``dst``
    (level 0 for a multiscale ``dst``) through world coordinates."""
    s_src, t_src = _axis_aligned(src)
    s_dst, t_dst = _axis_aligned(dst)
    return (np.asarray(points, float) * s_src + t_src - t_dst) / s_dst


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


def mask_from_shapes(
    shapes: Any, target: Any, shape_hw: tuple[int, int], selected_only: bool = False
) -> tuple[Region, np.ndarray]:
    """Rasterize the area shapes of a Shapes layer onto level 0 of ``target``.

    Parameters
    ----------
    shapes: napari Shapes layer; rectangles, polygons and ellipses count, lines and paths are
        refused (they enclose no area).
    target: the slide's image layer (its level-0 grid is the output grid).
    shape_hw: level-0 ``(height, width)`` of the slide.
    selected_only: use only the selected shapes (all when none are selected).

    Returns ``((y, x, h, w), mask)``: the clipped bounding box in level-0 px and a
    ``(h, w)`` bool mask, True inside any shape.
    """
    from skimage.draw import polygon as draw_polygon

    indices = range(len(shapes.data))
    if selected_only and shapes.selected_data:
        indices = sorted(shapes.selected_data)
    outlines = []
    for i in indices:
        kind = shapes.shape_type[i]
        if kind not in AREA_SHAPES:
            raise ValueError(
                f"shape {i} of {shapes.name!r} is a {kind}, which encloses no area; use "
                "rectangles, polygons or ellipses"
            )
        verts = np.asarray(shapes.data[i], float)[:, -2:]
        outlines.append(data_to_data(shapes, target, _shape_outline(kind, verts)))
    if not outlines:
        raise ValueError(f"{shapes.name!r} has no shapes; draw a rectangle, polygon or ellipse")
    allv = np.concatenate(outlines)
    y, x, h, w = _clip_bbox(allv.min(axis=0), allv.max(axis=0), shape_hw, shapes.name)
    mask = np.zeros((h, w), dtype=bool)
    for outline in outlines:
        rr, cc = draw_polygon(outline[:, 0] - y, outline[:, 1] - x, shape=(h, w))
        mask[rr, cc] = True
    if not mask.any():
        raise ValueError(f"the shapes in {shapes.name!r} cover no slide pixel; draw larger ones")
    return (y, x, h, w), mask


def mask_from_labels(
    labels: Any, target: Any, shape_hw: tuple[int, int]
) -> tuple[Region, np.ndarray]:
    """Resample the non-zero pixels of a single-scale Labels layer onto level 0 of ``target``.

    Each level-0 pixel takes the label of the Labels pixel its centre falls in (nearest), so a
    Labels layer painted at any resolution works. Returns ``((y, x, h, w), mask)`` like
    :func:`mask_from_shapes`.
    """
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
    rows = np.nonzero(painted.any(axis=1))[0]
    cols = np.nonzero(painted.any(axis=0))[0]
    corners = np.array(
        [[rows[0] - 0.5, cols[0] - 0.5], [rows[-1] + 0.5, cols[-1] + 0.5]], dtype=float
    )
    ends = data_to_data(labels, target, corners)
    lo, hi = ends.min(axis=0), ends.max(axis=0)
    # Target pixels whose centres lie in [lo, hi): the painted area, no more.
    y, x, h, w = _clip_bbox(np.ceil(lo), np.ceil(hi) - 1, shape_hw, labels.name)
    # Centres of the target's pixels, expressed in the labels' data coordinates.
    ys = data_to_data(target, labels, np.stack([np.arange(y, y + h), np.zeros(h)], 1))[:, 0]
    xs = data_to_data(target, labels, np.stack([np.zeros(w), np.arange(x, x + w)], 1))[:, 1]
    iy, ix = np.round(ys).astype(int), np.round(xs).astype(int)
    inside_y = (iy >= 0) & (iy < data.shape[0])
    inside_x = (ix >= 0) & (ix < data.shape[1])
    mask = painted[np.clip(iy, 0, data.shape[0] - 1)][:, np.clip(ix, 0, data.shape[1] - 1)]
    mask &= inside_y[:, None] & inside_x[None, :]
    if not mask.any():
        raise ValueError(f"the painting in {labels.name!r} covers no slide pixel")
    return (y, x, h, w), mask


def mask_from_layer(
    mask_layer: Any, target: Any, shape_hw: tuple[int, int]
) -> tuple[Region, np.ndarray]:
    """Dispatch on the layer type: Shapes or Labels (see the functions above)."""
    kind = type(mask_layer).__name__
    if kind == "Shapes":
        return mask_from_shapes(mask_layer, target, shape_hw)
    if kind == "Labels":
        return mask_from_labels(mask_layer, target, shape_hw)
    raise TypeError(
        f"{mask_layer.name!r} is a {kind} layer; draw the mask on a Shapes layer or paint it on "
        "a Labels layer"
    )


def world_rectangles(shapes: Any) -> list[tuple[float, float, float, float]]:
    """Axis-aligned world bounding boxes ``(y0, x0, y1, x1)`` of every shape of a Shapes layer
    (any shape type; used to place synthesized regions)."""
    if not len(shapes.data):
        raise ValueError(f"{shapes.name!r} has no shapes; draw a rectangle where to synthesize")
    s, t = _axis_aligned(shapes)
    out = []
    for verts in shapes.data:
        w = np.asarray(verts, float)[:, -2:] * s + t
        lo, hi = w.min(axis=0), w.max(axis=0)
        out.append((float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])))
    return out
