"""Reference conditioning: embeddings of real tissue on a grid, interpolated to any window.

A conditional model (CytoSyn with H0-mini, PixCell with UNI2-h, any backend whose ``embed()``
works) generates tissue like a reference it is given as an embedding. A :class:`ConditionField`
holds embeddings of reference cells (squares of real tissue, ``model.tile_px`` a side, at the
model's resolution) whose centres lie on a regular grid, and answers "which embedding here?"
for any position: bilinear between the four surrounding cell centres, using only cells that
hold tissue; where some of the four are missing, the missing share goes to an inverse-distance
average (power 4) of the tissue cells within 4 cells (farther when there are none). The
answer depends on the position only, so a window's condition is a function of where it lies:
tiled, lazy and distributed rendering keep their determinism and random access.

The sampling engine resolves a ``cond`` with a ``for_windows(rects)`` method per model batch
(absolute latent rectangles ``(y, x, h, w)`` of its windows -> the batch's ``cond``, see
:func:`~.samplers.model_denoiser`); :meth:`ConditionField.window_cond` gives the one for a
reference field (the field at each window's centre). Embeddings are computed in batches by
:func:`embed_crops` from tissue pixels only: a cell is embedded only when its crop is mostly
tissue (and, around an inpainting mask, mostly real tissue outside the mask:
:func:`surround_field`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .settings import check_cancel
from .tiling import to_float

#: A cell counts as reference tissue when at least this fraction of its crop qualifies.
MIN_CELL_TISSUE = 0.5
#: Power of the inverse-distance weights that fill positions without tissue cells around them.
IDW_POWER = 4.0
#: Cells (grid units) around a position whose tissue cells that average uses (doubled when none).
IDW_RADIUS = 4


def is_conditional(model: Any) -> bool:
    """True when ``model`` takes a reference: it has ``embed()`` and an encoder behind it.

    A model may say so itself with a ``conditional`` attribute; backends built without a
    reference encoder (``embedder is None``) are unconditional.
    """
    flag = getattr(model, "conditional", None)
    if flag is not None:
        return bool(flag)
    if not callable(getattr(model, "embed", None)):
        return False
    return getattr(model, "embedder", True) is not None


def require_conditional(model: Any, what: str = "a reference") -> None:
    """Raise ``ValueError`` naming the model when it cannot take ``what``."""
    if not is_conditional(model):
        name = getattr(model, "name", type(model).__name__)
        raise ValueError(
            f"model {name!r} is unconditional: it cannot generate tissue like {what}. Use a "
            "conditional model (cytosyn, pixcell-256, pixcell-1024; see docs/models.md) or "
            "drop the reference"
        )


def recipe_settings(settings: Any, conditioned: bool) -> Any:
    """``settings`` as a recipe stores them: guidance (scale and interval) only acts with a
    condition, so without one it is stored as off (1.0 on ``(0, 1)``), whatever was asked."""
    if conditioned or (settings.guidance == 1.0 and settings.guidance_interval == (0.0, 1.0)):
        return settings
    return settings.replace(guidance=1.0, guidance_interval=(0.0, 1.0))


def encoder_id(model: Any) -> str:
    """What computed a model's embeddings, for recipes (the registry's description, else the
    model's own name)."""
    try:
        from ..models import get_info

        info = get_info(str(getattr(model, "name", "")))
    except Exception:  # not a registry name (a test model, a py: factory)
        info = None
    if info is not None and info.conditioning:
        return str(info.conditioning)
    emb = getattr(model, "embedder", None)
    hub = getattr(emb, "hub_id", None)
    return str(hub) if hub else f"{getattr(model, 'name', type(model).__name__)}.embed"


@dataclass(frozen=True, eq=False)
class ConditionField:
    """Reference embeddings on a grid of cells, interpolated to any position.

    Parameters
    ----------
    embeddings: ``(ny, nx, *E)`` float32, one embedding per cell (anything where ``valid`` is
        False is ignored).
    valid: ``(ny, nx)`` bool, True where the cell holds reference tissue (at least one).
    cell_px: distance between neighbouring cell centres, in model px.
    origin_px: ``(y, x)`` model px of cell ``(0, 0)``'s centre; cell ``(i, j)`` is centred at
        ``origin + (i, j) * cell_px``. Positions are in the coordinates of the canvas being
        generated (a slide's level 0 at the model's mpp, or an inpainting context).
    """

    embeddings: np.ndarray
    valid: np.ndarray
    cell_px: float
    origin_px: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        emb = np.ascontiguousarray(self.embeddings, dtype=np.float32)
        valid = np.asarray(self.valid, dtype=bool)
        if emb.ndim < 3 or valid.shape != emb.shape[:2]:
            raise ValueError(
                f"embeddings must be (ny, nx, *E) with valid (ny, nx); got {emb.shape} and "
                f"{valid.shape}"
            )
        if not valid.any():
            raise ValueError(
                "no reference cell holds enough tissue to be embedded; choose a reference "
                "region with tissue"
            )
        if not np.isfinite(emb[valid]).all():
            raise ValueError("reference embeddings contain NaN or inf")
        if not self.cell_px > 0:
            raise ValueError(f"cell_px must be > 0, got {self.cell_px!r}")
        object.__setattr__(self, "embeddings", emb)
        object.__setattr__(self, "valid", valid)
        object.__setattr__(self, "origin_px", tuple(float(v) for v in self.origin_px))

    @classmethod
    def constant(cls, embedding: Any) -> ConditionField:
        """A field that is ``embedding`` (``(*E,)``) everywhere: one reference for all windows."""
        emb = np.asarray(torch.as_tensor(embedding).float().cpu().numpy(), dtype=np.float32)
        return cls(emb[None, None], np.ones((1, 1), dtype=bool), 1.0)

    @property
    def shape(self) -> tuple[int, int]:
        """Cells ``(ny, nx)``."""
        return tuple(self.valid.shape)

    @property
    def embedding_shape(self) -> tuple[int, ...]:
        return tuple(self.embeddings.shape[2:])

    def mean(self) -> np.ndarray:
        """Mean embedding of the valid cells ``(*E,)`` float32."""
        return self.embeddings[self.valid].astype(np.float64).mean(axis=0).astype(np.float32)

    def at(self, y_px: Any, x_px: Any) -> np.ndarray:
        """Embeddings at positions (model px): ``(*S, *E)`` float32 for positions of shape S.

        Bilinear between the four cell centres around a position (clamped to the grid at its
        edges); the weight of cells without tissue goes to the inverse-distance average of
        the nearby valid cells (:meth:`_idw`), so the result uses tissue cells only.
        """
        y = np.asarray(y_px, dtype=np.float64)
        x = np.asarray(x_px, dtype=np.float64)
        y, x = np.broadcast_arrays(y, x)
        shape = y.shape
        gy = ((y.reshape(-1) - self.origin_px[0]) / self.cell_px).clip(0, self.shape[0] - 1)
        gx = ((x.reshape(-1) - self.origin_px[1]) / self.cell_px).clip(0, self.shape[1] - 1)
        # a view (a slide's grid can hold 10^5 cells of 768 floats): only gathered rows are cast
        flat = self.embeddings.reshape(self.shape[0], self.shape[1], -1)
        out = np.zeros((gy.size, flat.shape[2]), dtype=np.float64)
        share = np.zeros(gy.size, dtype=np.float64)
        i0 = np.minimum(np.floor(gy).astype(np.int64), max(0, self.shape[0] - 2))
        j0 = np.minimum(np.floor(gx).astype(np.int64), max(0, self.shape[1] - 2))
        fy, fx = gy - i0, gx - j0
        for di, wy in ((0, 1.0 - fy), (1, fy)):
            for dj, wx in ((0, 1.0 - fx), (1, fx)):
                ii = np.minimum(i0 + di, self.shape[0] - 1)
                jj = np.minimum(j0 + dj, self.shape[1] - 1)
                w = wy * wx * self.valid[ii, jj]
                out += w[:, None] * flat[ii, jj].astype(np.float64)
                share += w
        missing = share < 1.0 - 1e-12
        if missing.any():
            out[missing] += (1.0 - share[missing])[:, None] * self._idw(gy[missing], gx[missing])
        return out.reshape(*shape, *self.embedding_shape).astype(np.float32)

    def _idw(self, gy: np.ndarray, gx: np.ndarray) -> np.ndarray:
        """Inverse-distance (power :data:`IDW_POWER`) average of the valid cells within
        :data:`IDW_RADIUS` cells of each position (grid units), the radius doubled until some
        are found: ``(N, E)`` float64. Local, so its cost does not grow with the grid."""
        ny, nx = self.shape
        flat = self.embeddings.reshape(ny, nx, -1)
        out = np.empty((gy.size, flat.shape[2]), dtype=np.float64)
        for k, (y, x) in enumerate(zip(gy, gx, strict=True)):
            r = IDW_RADIUS
            while True:
                i0, i1 = max(0, int(y) - r), min(ny, int(y) + r + 2)
                j0, j1 = max(0, int(x) - r), min(nx, int(x) + r + 2)
                ii, jj = np.nonzero(self.valid[i0:i1, j0:j1])
                if ii.size or (i0, j0, i1, j1) == (0, 0, ny, nx):
                    break
                r *= 2
            ii, jj = ii + i0, jj + j0
            d2 = (y - ii) ** 2 + (x - jj) ** 2
            w = 1.0 / np.maximum(d2, 1e-12) ** (IDW_POWER / 2)
            out[k] = (w @ flat[ii, jj].astype(np.float64)) / w.sum()
        return out

    def window_cond(self, latent_factor: int) -> FieldCondition:
        """The per-window condition for the sampling engine: the embedding at each window's
        centre; windows are absolute latent rectangles, ``latent_factor`` px per latent."""
        return FieldCondition(self, int(latent_factor))

    def fingerprint(self) -> str:
        """Short hash of the cells, their validity and geometry (ties caches to the field)."""
        h = hashlib.blake2b(digest_size=8)
        h.update(np.ascontiguousarray(self.embeddings).tobytes())
        h.update(np.packbits(self.valid).tobytes())
        h.update(repr((self.shape, self.cell_px, self.origin_px)).encode())
        return h.hexdigest()


@dataclass(frozen=True, eq=False)
class FieldCondition:
    """A :class:`ConditionField` as a per-window ``cond`` of the sampling engine.

    ``for_windows(rects)`` (the hook of :func:`~.samplers.model_denoiser`): absolute latent
    rectangles ``(y, x, h, w)`` -> ``(B, *E)`` float32, the field at each window's centre.
    """

    field: ConditionField
    latent_factor: int

    def for_windows(self, rects: Sequence[tuple[int, int, int, int]]) -> torch.Tensor:
        f = float(self.latent_factor)
        cy = np.array([(r[0] + r[2] / 2.0) * f for r in rects], dtype=np.float64)
        cx = np.array([(r[1] + r[3] / 2.0) * f for r in rects], dtype=np.float64)
        return torch.from_numpy(self.field.at(cy, cx))

    def fingerprint(self) -> str:
        return f"{self.field.fingerprint()}-f{self.latent_factor}"


@dataclass(frozen=True, eq=False)
class LatticeCondition:
    """Per-window condition from several fields, one per lattice of windows (a lazy slide's
    phases): a window whose centre is a node of a field's lattice gets that field's cell there,
    the embedding of its own footprint (:func:`~napari_cytosyn.slide.reference.window_lattices`);
    any other window the field whose nearest node is nearest (the first on a tie),
    interpolated. With one field it is :class:`FieldCondition`.
    """

    fields: tuple[ConditionField, ...]
    latent_factor: int

    def for_windows(self, rects: Sequence[tuple[int, int, int, int]]) -> torch.Tensor:
        f = float(self.latent_factor)
        cy = np.array([(r[0] + r[2] / 2.0) * f for r in rects], dtype=np.float64)
        cx = np.array([(r[1] + r[3] / 2.0) * f for r in rects], dtype=np.float64)
        off = np.stack([_node_offset(fl, cy, cx) for fl in self.fields])
        pick = off.argmin(axis=0)
        out = np.empty((len(rects), *self.fields[0].embedding_shape), dtype=np.float32)
        for k in np.unique(pick):
            sel = pick == k
            out[sel] = self.fields[k].at(cy[sel], cx[sel])
        return torch.from_numpy(out)

    def fingerprint(self) -> str:
        return "-".join(fl.fingerprint() for fl in self.fields) + f"-f{self.latent_factor}"


def _node_offset(field: ConditionField, y_px: np.ndarray, x_px: np.ndarray) -> np.ndarray:
    """Distance (grid units, chessboard) from positions, clamped to ``field``'s grid as
    :meth:`ConditionField.at` clamps them, to its nearest node: a window beyond the edge nodes
    (whose crops lie at the slide's edge) gets the edge node's crop, which is its own."""
    out = np.zeros(y_px.shape, dtype=np.float64)
    for pos, o, n in zip((y_px, x_px), field.origin_px, field.shape, strict=True):
        g = ((pos - o) / field.cell_px).clip(0, n - 1)
        out = np.maximum(out, np.abs(g - np.round(g)))
    return out


class JointCondition:
    """Several conditions given to a model together as one dict per window, e.g. a nucleus
    layout and a reference embedding for PixCell's mask ControlNet:
    ``JointCondition(mask=LayoutCondition(...), uni=FieldCondition(...))`` -> ``for_windows``
    gives ``{"mask": (B, 1, H_px, W_px), "uni": (B, *E)}``. Each part is a per-window condition
    (``for_windows``) or a value given to every window as it is; a part whose value is a dict
    (a layout condition's ``{"mask": ...}``) adds its keys instead of nesting."""

    def __init__(self, **parts: Any) -> None:
        if not parts:
            raise ValueError("a joint condition needs at least one part")
        self.parts = dict(parts)

    def for_windows(self, rects: Sequence[tuple[int, int, int, int]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, part in self.parts.items():
            value = (
                part.for_windows(rects) if callable(getattr(part, "for_windows", None)) else part
            )
            if isinstance(value, dict):  # a part that is a dict already ({"mask": ...}) adds it
                out.update(value)
            else:
                out[key] = value
        return out

    def fingerprint(self) -> str:
        text = "|".join(f"{k}={cond_fingerprint(v)}" for k, v in sorted(self.parts.items()))
        return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def cond_fingerprint(cond: Any) -> str:
    """A key part for caches of rendered pixels: empty without a condition, else the
    condition's ``fingerprint()`` (a tensor's bytes; other objects their id: results made with
    them are not shared across objects)."""
    if cond is None:
        return ""
    fp = getattr(cond, "fingerprint", None)
    if callable(fp):
        return str(fp())
    if isinstance(cond, torch.Tensor | np.ndarray):
        data = np.ascontiguousarray(torch.as_tensor(cond).float().cpu().numpy()).tobytes()
        return hashlib.blake2b(data, digest_size=8).hexdigest()
    return f"id{id(cond)}"


# -- computing embeddings ----------------------------------------------------------------------


def embed_px(model: Any) -> int:
    """Side of a reference crop in model px: the model's native tile."""
    return int(model.tile_px)


def embed_crops(
    model: Any,
    crops: Sequence[np.ndarray] | Callable[[int], np.ndarray],
    n: int | None = None,
    batch_size: int | None = None,
    cancel: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """``model.embed`` of RGB crops, ``batch_size`` at a time: ``(N, *E)`` float32.

    ``batch_size`` ``None``: 16 on an accelerator, 4 on the CPU, where a batch costs its crops
    one after another (so smaller batches cost the same and let Cancel, checked between
    batches, act sooner: 16 crops of the embedded model's descriptor took 1.2 s at load 8);
    on the CPU :func:`~.threads.model_workers` batches run side by side.

    ``crops``: ``(h, w, 3)`` uint8 arrays of one size, or ``crops(k) -> crop`` with ``n`` crops
    (read lazily, in order, so only the batches being embedded are in memory).
    """
    from .threads import model_workers, parallel_calls

    require_conditional(model)
    cpu = str(getattr(model, "device", "cpu")).startswith("cpu")
    if batch_size is None:
        batch_size = 4 if cpu else 16
    get = crops if callable(crops) else crops.__getitem__
    total = len(crops) if n is None else int(n)

    def embed(batch: list[np.ndarray]) -> np.ndarray:
        emb = model.embed(torch.stack([_to_float(c) for c in batch]))
        return torch.as_tensor(emb).float().cpu().numpy()

    # On the CPU, model_workers() batches are embedded side by side (the descriptor's numpy
    # and scipy work releases the GIL; each crop's embedding is independent, so the result is
    # the same); crops are read here, in order, as the reader may cache a band of the slide.
    step = batch_size * (model_workers() if cpu else 1)
    out: list[np.ndarray] = []
    for k in range(0, total, step):
        check_cancel(cancel)
        stop = min(total, k + step)
        batches = [
            [get(i) for i in range(j, min(stop, j + batch_size))]
            for j in range(k, stop, batch_size)
        ]
        out += parallel_calls(embed, batches, cpu=cpu)
        if progress is not None:
            progress(stop, total)
    if not out:
        raise ValueError("no reference crops to embed")
    return np.concatenate(out).astype(np.float32)


def _to_float(crop: np.ndarray) -> torch.Tensor:
    crop = np.asarray(crop)
    if crop.ndim != 3 or crop.shape[2] < 3 or crop.dtype != np.uint8:
        raise ValueError(f"reference crops must be (h, w, 3) uint8, got {crop.shape} {crop.dtype}")
    return to_float(crop[..., :3])


def grid_cells(h_px: int, w_px: int, cell_px: int) -> tuple[int, int]:
    """Cells ``(ny, nx)`` of a grid of spacing ``cell_px`` whose centres cover ``h x w`` px
    (cell ``(i, j)`` centred at ``((i + 0.5) cell, (j + 0.5) cell)``)."""
    return max(1, math.ceil(h_px / cell_px)), max(1, math.ceil(w_px / cell_px))


def crop_centred(image: np.ndarray, cy: float, cx: float, side: int) -> np.ndarray:
    """A ``side`` px square of ``image`` centred at ``(cy, cx)``, shifted inside the image
    (reflect-padded when the image is smaller)."""
    h, w = image.shape[:2]
    if h < side or w < side:
        ph, pw = max(0, side - h), max(0, side - w)
        mode = "reflect" if min(h, w) > max(ph, pw) else "edge"
        image = np.pad(image, ((0, ph), (0, pw)) + ((0, 0),) * (image.ndim - 2), mode=mode)
        h, w = image.shape[:2]
    y0 = int(min(max(0, round(cy - side / 2)), h - side))
    x0 = int(min(max(0, round(cx - side / 2)), w - side))
    return image[y0 : y0 + side, x0 : x0 + side]


def surround_field(
    model: Any,
    image: np.ndarray,
    mask: np.ndarray,
    tissue: np.ndarray,
    ring_px: int,
    cancel: Any = None,
) -> ConditionField:
    """Condition field from the real tissue in a ring around an inpainting mask.

    ``image`` ``(H, W, 3)`` uint8 and ``mask``, ``tissue`` ``(H, W)`` bool are at the model's
    resolution (an inpainting context). Cells (spacing half the model's tile) whose crop
    (``model.tile_px`` a side) is mostly real tissue (tissue and outside the mask) and whose
    centre lies within ``ring_px`` of the mask are embedded, in batches. The field is in the
    image's pixel coordinates; windows over a large mask get the embedding of the nearby
    reference cells (a mask across tumour and stroma keeps both).
    """
    side = embed_px(model)
    cell = max(8, side // 2)
    mask = np.asarray(mask, dtype=bool)
    real = np.asarray(tissue, dtype=bool) & ~mask
    h, w = mask.shape
    ny, nx = grid_cells(h, w, cell)
    ys = np.minimum(h - 1, ((np.arange(ny) + 0.5) * cell).astype(np.int64))
    xs = np.minimum(w - 1, ((np.arange(nx) + 0.5) * cell).astype(np.int64))
    near = _box_counts(mask, ys, xs, -ring_px, ring_px + 1) > 0
    frac = _box_counts(real, ys, xs, -(side // 2), side - side // 2) / float(side * side)
    ok = near & ~mask[np.ix_(ys, xs)] & (frac >= MIN_CELL_TISSUE)
    picks = [(int(i), int(j)) for i, j in zip(*np.nonzero(ok), strict=True)]
    if not picks:
        raise ValueError(
            f"no real tissue within {ring_px} px (model resolution) of the mask to condition "
            "on; widen the ring or choose a reference region"
        )
    return _picked_field(model, image, picks, (ny, nx), cell, side, cancel=cancel)


def image_field(
    model: Any,
    image: np.ndarray,
    tissue: np.ndarray | None = None,
    cell_px: int | None = None,
    batch_size: int | None = None,
    cancel: Any = None,
) -> ConditionField:
    """Condition field of a whole reference image ``(H, W, 3)`` uint8 at the model's
    resolution: cells (spacing ``cell_px``, default half the model's tile) whose crop is mostly
    ``tissue`` (default: every pixel) are embedded, in batches. Pixel coordinates are the
    image's, so a synthesis of the same size follows the image's tissue place by place."""
    require_conditional(model, "a reference image")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"a reference image is (H, W, 3) uint8, got {image.shape} {image.dtype}")
    h, w = image.shape[:2]
    ok = np.ones((h, w), bool) if tissue is None else np.asarray(tissue, bool)
    side = embed_px(model)
    cell = int(cell_px or max(8, side // 2))
    ny, nx = grid_cells(h, w, cell)
    ys = np.minimum(h - 1, ((np.arange(ny) + 0.5) * cell).astype(np.int64))
    xs = np.minimum(w - 1, ((np.arange(nx) + 0.5) * cell).astype(np.int64))
    frac = _box_counts(ok, ys, xs, -(side // 2), side - side // 2) / float(side * side)
    picks = [(int(i), int(j)) for i, j in zip(*np.nonzero(frac >= MIN_CELL_TISSUE), strict=True)]
    if not picks:
        raise ValueError("the reference image holds no tissue to condition on")
    return _picked_field(
        model, image, picks, (ny, nx), cell, side, batch_size=batch_size, cancel=cancel
    )


def _picked_field(
    model: Any,
    image: np.ndarray,
    picks: list[tuple[int, int]],
    grid_shape: tuple[int, int],
    cell: int,
    side: int,
    batch_size: int | None = None,
    cancel: Any = None,
) -> ConditionField:
    """Embed the ``side`` px crops centred on the picked cells ``(i, j)`` of a ``cell`` px grid
    (centres at ``(i + 0.5) cell``) and lay them out as a field; other cells are invalid."""
    emb = embed_crops(
        model,
        lambda k: crop_centred(image, (picks[k][0] + 0.5) * cell, (picks[k][1] + 0.5) * cell, side),
        n=len(picks),
        batch_size=batch_size,
        cancel=cancel,
    )
    grid = np.zeros((*grid_shape, *emb.shape[1:]), dtype=np.float32)
    valid = np.zeros(grid_shape, dtype=bool)
    for (i, j), e in zip(picks, emb, strict=True):
        grid[i, j] = e
        valid[i, j] = True
    return ConditionField(grid, valid, float(cell), (cell / 2.0, cell / 2.0))


def _box_counts(ok: np.ndarray, ys: np.ndarray, xs: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """``(len(ys), len(xs))`` int64: how many ``ok`` pixels lie in the box
    ``[y + lo, y + hi) x [x + lo, x + hi)`` (clipped to the array) around each point of the
    grid ``ys x xs``.

    One summed-area table, read at the grid's points only: O(pixels) whatever the box, and
    the cells of a condition field are a few hundred points of an image of millions of pixels
    (evaluating the box at every pixel took 0.4 s of CPU per inpainting edit, 10 s at a
    worker's lowered priority on a loaded machine, none of it cancellable)."""
    h, w = ok.shape
    s = np.zeros((h + 1, w + 1), np.int64)
    np.cumsum(np.asarray(ok, bool), 0, np.int64, out=s[1:, 1:])
    np.cumsum(s[1:, 1:], 1, out=s[1:, 1:])
    y0, y1 = np.clip(ys + lo, 0, h), np.clip(ys + hi, 0, h)
    x0, x1 = np.clip(xs + lo, 0, w), np.clip(xs + hi, 0, w)
    return s[np.ix_(y1, x1)] - s[np.ix_(y0, x1)] - s[np.ix_(y1, x0)] + s[np.ix_(y0, x0)]
