"""References on real slides: embedding grids for synthetic twins, regions for inpainting.

A *synthetic twin* of a real slide has the real slide's size (at the model's resolution), its
tissue layout (the real slide's tissue mask) and, window by window, its kind of tissue: the model
is conditioned on a :class:`~napari_cytosyn.sampling.conditioning.ConditionField` computed on a
grid over the real tissue (one embedding per grid cell that is mostly tissue, batched). The
field lives in the twin's store with the real slide's checksum, the grid spacing and the encoder,
so reopening the store (or rendering it on a dask worker) conditions exactly as before and
recreating a twin of the same file reuses the embeddings. No pixel of the reference is stored.

Coordinates: the twin's level 0 is the real slide's level 0 resampled to the model's mpp
(``factor = model.mpp / slide mpp`` slide px per model px); cell ``(i, j)`` is centred at
``((i + 0.5) g, (j + 0.5) g)`` model px for a grid of ``g`` px.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from napari_cytosyn.sampling.settings import ThreadValue, check_cancel

#: Store attribute and group holding a slide's reference.
REFERENCE_KEY = "reference"
#: Widest band of a cell row read at once when embedding a slide's grid, in model px.
BAND_PX = 8192
_SCOPE = ThreadValue()


def progress_scope(
    progress: Callable[[int, int], None] | None,
) -> contextlib.AbstractContextManager[None]:
    """Within the block, grids embedded by this thread (a twin's creation) report
    ``progress(cells done, cells)`` after each batch; for callers that reach the embedding
    through ``SyntheticSlide.create``."""
    return _SCOPE.scope(progress)


def slide_checksum(path: str | os.PathLike) -> str:
    """SHA-256 of a slide file, or of a slide folder's files (relative path, NUL, contents, in
    sorted order): the digest export provenance records for a source slide."""
    from .provenance import file_sha256

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"cannot checksum the reference {path}: no such file")
    return file_sha256(path)


def slide_mpp(slide: Any, model: Any) -> float:
    """Level-0 um/px of ``slide``'s square pixels (the model's when the file does not say); a
    ``ValueError`` for anisotropic pixels, which one resampling factor cannot serve."""
    mpp = getattr(slide, "mpp", None)
    return mpp.side_um("a reference of the real tissue") if mpp else float(model.mpp)


def twin_size(slide: Any, model: Any) -> tuple[int, int]:
    """``(height, width)`` of a twin of ``slide`` in model px (same physical extent)."""
    factor = float(model.mpp) / slide_mpp(slide, model)
    h0, w0 = slide.level_shapes[0]
    return max(1, round(h0 / factor)), max(1, round(w0 / factor))


def read_model_px(
    slide: Any, model: Any, y: float, x: float, h: int, w: int | None = None
) -> np.ndarray:
    """``(h, w, 3)`` uint8 of ``slide`` at the model's resolution whose top-left corner is
    ``(y, x)`` model px (``w`` defaults to ``h``; white outside the slide). Read from the
    finest level at or below the model's resolution and area-averaged (integer factors) or
    resampled to it."""
    w = h if w is None else w
    factor = float(model.mpp) / slide_mpp(slide, model)
    level = slide.best_level_for_downsample(max(1.0, factor))
    d = float(slide.downsamples[level])
    scale = factor / d  # level px per model px
    ly, lx = round(y * scale), round(x * scale)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    rgb = slide.read_region(level, ly, lx, nh, nw)
    if (nh, nw) == (h, w):
        return rgb
    k = round(scale)
    if abs(scale - k) < 1e-6 and k > 1:
        return rgb.reshape(h, k, w, k, 3).mean(axis=(1, 3)).round().astype(np.uint8)
    from skimage.transform import resize

    out = resize(rgb, (h, w), order=1, anti_aliasing=scale > 1, preserve_range=True)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def tissue_fraction_of_boxes(
    mask: np.ndarray, shape: tuple[int, int], boxes: list[tuple[float, float, float, float]]
) -> np.ndarray:
    """Tissue fraction of boxes ``(y0, x0, y1, x1)`` (px of a ``shape`` image) under a tissue
    ``mask`` at any resolution that covers the whole image."""
    mh, mw = mask.shape
    h, w = shape
    s = np.pad(mask.astype(np.float64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    out = np.empty(len(boxes), dtype=np.float64)
    for k, (y0, x0, y1, x1) in enumerate(boxes):
        r0 = min(mh - 1, max(0, math.floor(y0 * mh / h)))
        r1 = min(mh, max(r0 + 1, math.ceil(y1 * mh / h)))
        c0 = min(mw - 1, max(0, math.floor(x0 * mw / w)))
        c1 = min(mw, max(c0 + 1, math.ceil(x1 * mw / w)))
        total = s[r1, c1] - s[r0, c1] - s[r1, c0] + s[r0, c0]
        out[k] = total / ((r1 - r0) * (c1 - c0))
    return out


#: HSV saturation from which a pixel counts as stained tissue in any case (glass: ~0.01-0.05).
STAINED_SATURATION = 0.15
_TISSUE_MASKS: dict[tuple[str, float, int], np.ndarray] = {}


def slide_tissue_mask(slide: Any, max_px: int = 1024) -> np.ndarray:
    """Tissue mask of a slide from its thumbnail (Otsu; ``(h, w)`` bool), computed once per
    file version (inpainting asks for it at every edit)."""
    from .tissue import otsu_tissue_mask

    path = Path(slide.path)
    try:
        key = (str(path.resolve()), path.stat().st_mtime, int(max_px))
    except OSError:
        key = None
    if key is not None and key in _TISSUE_MASKS:
        return _TISSUE_MASKS[key]
    thumb = slide.thumbnail(max_px=max_px)
    # Otsu splits two stains instead of tissue and glass when glass is scarce: clearly
    # stained pixels (saturated and not bright) are tissue whatever the threshold says.
    rgb = thumb[..., :3].astype(np.float64)
    hi, lo = rgb.max(axis=2), rgb.min(axis=2)
    stained = ((hi - lo) / np.maximum(hi, 1.0) >= STAINED_SATURATION) & (rgb.mean(axis=2) < 230)
    mask = otsu_tissue_mask(thumb) | stained
    if key is not None:
        _TISSUE_MASKS[key] = mask
    return mask


def window_lattices(model: Any, spec: Any) -> list[tuple[float, float, float]]:
    """Where a lazy slide of ``model`` under ``spec`` (a ``LazySpec``) evaluates its windows:
    ``(centre y, centre x, period)`` in model px of each phase's lattice of window centres
    (centres modulo the period; lattices of two phases that coincide are listed once). The
    offsets depend on the seed, so a twin embedded on them belongs to its spec."""
    from napari_cytosyn.sampling.lazy import LazyPlan, MemoryPhaseCache

    plan = LazyPlan(model, spec, MemoryPhaseCache())
    f = int(model.latent_factor)
    out: list[tuple[float, float, float]] = []
    for ph in plan.phases:
        half = plan.window / 2.0 - ph.context  # window centre from the cell's origin
        period = float(ph.stride * f)
        lat = (
            float((ph.offset[0] + half) * f % period),
            float((ph.offset[1] + half) * f % period),
            period,
        )
        if lat not in out:
            out.append(lat)
    return out


def slide_field(
    model: Any,
    slide: Any,
    tissue_mask: np.ndarray,
    grid_px: int,
    batch_size: int = 16,
    progress: Any = None,
    cancel: Any = None,
) -> Any:
    """Embeddings on a grid over the tissue of ``slide``: a ``ConditionField`` in model px.

    Cells of ``grid_px`` model px, cell ``(i, j)`` centred at ``((i + 0.5) g, (j + 0.5) g)``;
    see :func:`lattice_fields` for which cells are embedded and how."""
    return lattice_fields(
        model,
        slide,
        tissue_mask,
        [(grid_px / 2.0, grid_px / 2.0, float(grid_px))],
        batch_size,
        progress,
        cancel,
        grid_cells_default=True,
    )[0]


def lattice_fields(
    model: Any,
    slide: Any,
    tissue_mask: np.ndarray,
    lattices: list[tuple[float, float, float]],
    batch_size: int = 16,
    progress: Any = None,
    cancel: Any = None,
    grid_cells_default: bool = False,
) -> list[Any]:
    """One ``ConditionField`` per lattice ``(centre y, centre x, period)`` model px of cell
    centres over ``slide`` (:func:`window_lattices`), embedded in one batched pass.

    A cell's crop (``model.tile_px`` a side, centred on the cell, shifted inside the slide: glass
    beyond it is no reference) is embedded when at least
    :data:`~napari_cytosyn.sampling.conditioning.MIN_CELL_TISSUE` of it is tissue under
    ``tissue_mask``, ``batch_size`` crops per ``model.embed`` call. Nodes run from the last one
    whose crop touches the slide's top/left edge to the first whose crop touches its
    bottom/right edge (windows beyond get those crops); ``grid_cells_default``: the plain grid's
    ``ceil(extent / period)`` cells from the first node instead.
    """
    from napari_cytosyn.sampling.conditioning import (
        MIN_CELL_TISSUE,
        ConditionField,
        embed_crops,
        embed_px,
        grid_cells,
    )

    h, w = twin_size(slide, model)
    side = embed_px(model)

    def corner(c: float, extent: int) -> int:
        return int(min(max(0, round(c - side / 2)), max(0, extent - side)))

    def axis(o: float, g: float, extent: int) -> tuple[float, int]:
        if grid_cells_default:
            return o, grid_cells(extent, extent, round(g))[0]
        first = o - g * math.ceil(max(0.0, o - side / 2) / g)
        return first, max(1, math.ceil((extent - side / 2 - first) / g) + 1)

    plans, jobs = [], []  # per lattice (y0, x0, g, ny, nx, picks); jobs: (lattice, cell index)
    for oy, ox, g in lattices:
        (y0, ny), (x0, nx) = axis(oy, g, h), axis(ox, g, w)
        boxes = [
            (corner(y0 + i * g, h), corner(x0 + j * g, w)) for i in range(ny) for j in range(nx)
        ]
        frac = tissue_fraction_of_boxes(
            np.asarray(tissue_mask, bool), (h, w), [(y, x, y + side, x + side) for y, x in boxes]
        )
        picks = [k for k in range(ny * nx) if frac[k] >= MIN_CELL_TISSUE]
        plans.append((y0, x0, g, ny, nx, picks))
        jobs += [(len(plans) - 1, k) for k in picks]
    if not jobs:
        raise ValueError(
            f"{getattr(slide, 'name', 'the reference')}: no reference cell "
            f"({', '.join(f'{g:g}' for *_, g in lattices)} px apart) is mostly tissue; the tissue "
            "mask is empty or the grid is too coarse"
        )

    # Crops are cut from bands of a cell row (<= BAND_PX wide): one slide read per band, not
    # per cell (a whole slide has ~10^5 cells). Jobs are row-major per lattice, so in order.
    band: dict[str, Any] = {"key": None}

    def crop(n: int) -> np.ndarray:
        lat, k = jobs[n]
        y0, x0, g, _ny, nx, _p = plans[lat]
        seg = max(1, int(BAND_PX // g))
        i, j = divmod(k, nx)
        key = (lat, i, j // seg)
        if band["key"] != key:
            j0, j1 = key[2] * seg, min(nx, (key[2] + 1) * seg)
            left, right = corner(x0 + j0 * g, w), corner(x0 + (j1 - 1) * g, w) + side
            top = corner(y0 + i * g, h)
            img = read_model_px(slide, model, top, left, side, right - left)
            band.update(key=key, x0=left, img=img)
        left = corner(x0 + j * g, w) - band["x0"]
        return band["img"][:, left : left + side]

    emb = embed_crops(
        model, crop, n=len(jobs), batch_size=batch_size, cancel=cancel, progress=progress
    )
    fields, start = [], 0
    for y0, x0, g, ny, nx, picks in plans:
        grid = np.zeros((ny * nx, *emb.shape[1:]), dtype=np.float32)
        valid = np.zeros(ny * nx, dtype=bool)
        grid[picks] = emb[start : start + len(picks)]
        valid[picks] = True
        start += len(picks)
        if not picks:  # a lattice without tissue cells: all of its windows are glass
            grid[:], valid[:] = emb.mean(axis=0), True
        fields.append(
            ConditionField(grid.reshape(ny, nx, *emb.shape[1:]), valid.reshape(ny, nx), g, (y0, x0))
        )
    return fields


def region_embedding(
    model: Any,
    slide: Any,
    region: tuple[int, int, int, int],
    tissue_mask: np.ndarray | None = None,
    batch_size: int = 16,
    cancel: Any = None,
) -> np.ndarray:
    """Mean embedding of the tissue in ``region`` ``(y, x, h, w)`` (level-0 px of ``slide``).

    The region is cut into ``model.tile_px`` crops at the model's resolution (one crop when it
    is smaller); crops that are mostly glass (by ``tissue_mask`` over the whole slide, default
    the slide's Otsu mask, :func:`slide_tissue_mask`) are left out. Returns ``(*E,)`` float32.
    """
    from napari_cytosyn.sampling.conditioning import MIN_CELL_TISSUE, embed_crops, embed_px

    y, x, h, w = (int(v) for v in region)
    H0, W0 = slide.level_shapes[0]
    if h <= 0 or w <= 0 or y < 0 or x < 0 or y + h > H0 or x + w > W0:
        raise ValueError(
            f"reference region y={y} x={x} h={h} w={w} is not inside the slide ({H0} x {W0} px)"
        )
    factor = float(model.mpp) / slide_mpp(slide, model)
    side = embed_px(model)
    my, mx, mh, mw = y / factor, x / factor, h / factor, w / factor
    ny, nx = max(1, round(mh / side)), max(1, round(mw / side))
    # crops spread evenly over the region (centred when it is smaller than one crop)
    tops = [my + (mh - side) * (i / (ny - 1) if ny > 1 else 0.5) for i in range(ny)]
    lefts = [mx + (mw - side) * (j / (nx - 1) if nx > 1 else 0.5) for j in range(nx)]
    crops = [read_model_px(slide, model, ty, tx, side) for ty in tops for tx in lefts]
    mask = slide_tissue_mask(slide) if tissue_mask is None else np.asarray(tissue_mask, bool)
    boxes = [(ty, tx, ty + side, tx + side) for ty in tops for tx in lefts]
    frac = tissue_fraction_of_boxes(mask, twin_size(slide, model), boxes)
    keep = [c for c, f in zip(crops, frac, strict=True) if f >= MIN_CELL_TISSUE]
    if not keep:
        raise ValueError(
            f"the reference region y={y} x={x} h={h} w={w} holds no tissue to condition on; "
            "choose a region over tissue"
        )
    emb = embed_crops(model, keep, batch_size=batch_size, cancel=cancel)
    return emb.astype(np.float64).mean(axis=0).astype(np.float32)


def reference_record(slide: Any, model: Any, checksum: str, **extra: Any) -> dict[str, Any]:
    """What a recipe stores about a reference: file, checksum, encoder (never pixels)."""
    from napari_cytosyn.sampling.conditioning import encoder_id

    path = Path(slide.path)
    return {
        "file": path.name,
        "name": getattr(slide, "name", path.name),
        "path": str(path.resolve()),
        "sha256": checksum,
        "encoder": encoder_id(model),
        "model": str(getattr(model, "name", "")),
        "slide_mpp": slide_mpp(slide, model),
        "model_mpp": float(model.mpp),
        **extra,
    }


def save_fields(root: Any, fields: list[Any]) -> None:
    """Write fields' cells into the zarr group ``root`` (``reference/embeddings``,
    ``reference/valid``, then ``embeddings_1``, ``valid_1``... for more lattices) with their
    geometry as attributes."""
    group = root.require_group(REFERENCE_KEY)
    for k, field in enumerate(fields):
        sfx = f"_{k}" if k else ""
        emb = np.ascontiguousarray(field.embeddings)
        group.create_array(f"embeddings{sfx}", data=emb, overwrite=True)
        group.create_array(f"valid{sfx}", data=field.valid.astype(np.uint8), overwrite=True)
    group.attrs["fields"] = [
        {
            "cell_px": float(f.cell_px),
            "origin_px": list(f.origin_px),
            "fingerprint": f.fingerprint(),
        }
        for f in fields
    ]


def load_fields(root: Any) -> list[Any]:
    """The fields saved by :func:`save_fields`; their fingerprints are checked."""
    from napari_cytosyn.sampling.conditioning import ConditionField

    group = root[REFERENCE_KEY]
    attrs = dict(group.attrs)
    fields = []
    for k, geo in enumerate(attrs.get("fields", [attrs])):  # a one-grid store: top-level attrs
        sfx = f"_{k}" if k else ""
        field = ConditionField(
            np.asarray(group[f"embeddings{sfx}"][...], dtype=np.float32),
            np.asarray(group[f"valid{sfx}"][...]).astype(bool),
            float(geo["cell_px"]),
            tuple(geo["origin_px"]),
        )
        if field.fingerprint() != geo.get("fingerprint"):
            raise ValueError(
                "the reference embeddings stored in this slide do not match their fingerprint "
                "(the store was modified); recreate the twin"
            )
        fields.append(field)
    return fields


def twin_condition(fields: list[Any], latent_factor: int) -> Any:
    """The per-window condition of a twin from its fields (:func:`lattice_fields`)."""
    from napari_cytosyn.sampling.conditioning import LatticeCondition

    return LatticeCondition(tuple(fields), int(latent_factor))


def cached_fields(store: str | os.PathLike, record: dict[str, Any]) -> list[Any] | None:
    """Fields already stored at ``store`` for the same reference (checksum, grid or window
    lattices, encoder, model), else ``None``: recreating a twin of the same file does not embed
    it again."""
    from .store import read_store_attrs

    try:
        attrs = read_store_attrs(store)
    except Exception:  # an unreadable or foreign folder: nothing to reuse
        return None
    old = (attrs or {}).get(REFERENCE_KEY)
    keys = ("sha256", "grid_px", "lattices_px", "encoder", "model", "model_mpp", "slide_mpp")
    if not old or any(old.get(k) != record.get(k) for k in keys):
        return None
    import zarr

    try:
        return load_fields(zarr.open_group(str(store), mode="r"))
    except (KeyError, ValueError, FileNotFoundError):
        return None


def twin_inputs(
    model: Any,
    reference: Any,
    store: str | os.PathLike,
    spec: Any,
    tissue_mask: np.ndarray | None = None,
    grid_um: float | None = None,
    batch_size: int = 16,
    progress: Any = None,
    cancel: Any = None,
) -> tuple[tuple[int, int], np.ndarray, list[Any], dict[str, Any]]:
    """Everything a twin of ``reference`` (a ``Slide`` or a path) rendered under ``spec`` (its
    ``LazySpec``) needs.

    Returns ``((height, width) model px, tissue mask, fields, record)``. By default every
    window of every phase of ``spec`` is conditioned on its own footprint: one field per phase
    lattice (:func:`window_lattices`); ``grid_um``: one grid of that spacing instead, windows
    interpolated between its cells. The tissue mask is the real slide's (Otsu on its thumbnail)
    unless given. The fields are taken from ``store`` when it already holds them for the same
    file (checksum), lattices or grid, and encoder.
    """
    from napari_cytosyn.sampling.conditioning import require_conditional

    require_conditional(model, "a reference slide")
    if isinstance(reference, str | os.PathLike):
        from .real import open_slide

        reference = open_slide(reference)
    if grid_um is None:
        lattices = window_lattices(model, spec)
        geometry: dict[str, Any] = {"lattices_px": [list(v) for v in lattices]}
    else:
        grid_px = round(float(grid_um) / float(model.mpp))
        if grid_px < 8:
            raise ValueError(
                f"grid spacing {grid_um} um is {grid_px} px at the model's {model.mpp} um/px; "
                "use at least 8 px"
            )
        lattices = None
        geometry = {"grid_px": grid_px, "grid_um": grid_px * float(model.mpp)}
    mask = slide_tissue_mask(reference) if tissue_mask is None else np.asarray(tissue_mask, bool)
    if mask.ndim != 2 or not mask.any():
        raise ValueError(f"{reference.name}: no tissue found on the reference slide")
    record = reference_record(reference, model, slide_checksum(reference.path), **geometry)
    fields = cached_fields(store, record)
    if fields is None:
        progress = progress if progress is not None else _SCOPE.get()
        if lattices is None:
            fields = [slide_field(model, reference, mask, grid_px, batch_size, progress, cancel)]
        else:
            fields = lattice_fields(model, reference, mask, lattices, batch_size, progress, cancel)
    record.update(
        cells=[list(f.shape) for f in fields] if lattices else list(fields[0].shape),
        tissue_cells=int(sum(f.valid.sum() for f in fields)),
        embedding_shape=list(fields[0].embedding_shape),
        field_fingerprint=twin_condition(fields, model.latent_factor).fingerprint(),
    )
    return twin_size(reference, model), mask, fields, record


# -- inpainting --------------------------------------------------------------------------------

#: ``CompositeSlide.inpaint(reference=...)`` values besides a rectangle.
REFERENCE_MODES = ("auto", "surround", "none")


def _tissue_in_box(slide: Any, model: Any, y: float, x: float, h: int, w: int) -> np.ndarray:
    """``(h, w)`` bool: the slide's tissue mask over a box of model px (nearest sampling)."""
    mask = slide_tissue_mask(slide)
    H, W = twin_size(slide, model)
    mh, mw = mask.shape
    rows = np.clip(((np.arange(h) + y + 0.5) * mh / H).astype(np.int64), 0, mh - 1)
    cols = np.clip(((np.arange(w) + x + 0.5) * mw / W).astype(np.int64), 0, mw - 1)
    inside = (
        ((np.arange(h) + y) >= 0)[:, None]
        & ((np.arange(h) + y) < H)[:, None]
        & ((np.arange(w) + x) >= 0)[None, :]
        & ((np.arange(w) + x) < W)[None, :]
    )
    return mask[np.ix_(rows, cols)] & inside


def inpaint_condition(
    model: Any,
    slide: Any,
    reference: Any,
    context: tuple[int, int, int, int],
    mask_box: tuple[int, int, int, int],
    mask: np.ndarray,
    ring_um: float | None = None,
    cancel: Any = None,
) -> tuple[Any, dict[str, Any] | None]:
    """The condition of one inpainting edit on a real ``slide``, and what its recipe stores.

    ``reference``: ``"auto"`` (the ring of real tissue around the mask for a conditional
    model, nothing for an unconditional one), ``"surround"`` (the ring; the model must be
    conditional), ``"none"``/``None`` (unconditioned), or a rectangle ``(y, x, h, w)`` in level-0
    px of ``slide`` (its mean tissue embedding, everywhere). ``context`` ``(y, x, h, w)`` is
    the inpainting context in level-0 px, whose model-resolution pixels the returned condition
    addresses; ``mask_box`` ``(y, x, h, w)`` and ``mask`` locate the edit's mask. The ring is
    ``ring_um`` wide (default: one model tile) at the model's resolution and only the slide's
    tissue outside the mask counts. Returns ``(cond, record)``: ``(None, None)`` unconditioned.
    """
    from napari_cytosyn.sampling.conditioning import (
        ConditionField,
        encoder_id,
        is_conditional,
        require_conditional,
        surround_field,
    )

    if reference is None or (isinstance(reference, str) and reference == "none"):
        return None, None
    if isinstance(reference, str):
        if reference not in REFERENCE_MODES:
            raise ValueError(
                f"reference must be one of {', '.join(REFERENCE_MODES)} or a rectangle "
                f"(y, x, h, w), got {reference!r}"
            )
        if reference == "auto" and not is_conditional(model):
            return None, None
        require_conditional(model, "the tissue around the mask")
        factor = float(model.mpp) / slide_mpp(slide, model)
        ring_um = float(model.tile_px * model.mpp) if ring_um is None else float(ring_um)
        if not ring_um > 0:
            raise ValueError(f"ring width must be > 0 um, got {ring_um}")
        ring_px = max(1, round(ring_um / float(model.mpp)))
        margin = ring_px + model.tile_px // 2 + 1  # model px around the mask's box
        my, mx, mh, mw = (v / factor for v in mask_box)
        ry, rx = math.floor(my) - margin, math.floor(mx) - margin
        rh, rw = math.ceil(my + mh) + margin - ry, math.ceil(mx + mw) + margin - rx
        image = read_model_px(slide, model, ry, rx, rh, rw)
        check_cancel(cancel)  # the read takes seconds at a worker's priority on a busy machine
        tissue = _tissue_in_box(slide, model, ry, rx, rh, rw)
        m = np.asarray(mask, bool)
        rows = np.clip(
            ((np.arange(rh) + ry + 0.5) * factor - mask_box[0]).astype(np.int64), -1, m.shape[0]
        )
        cols = np.clip(
            ((np.arange(rw) + rx + 0.5) * factor - mask_box[1]).astype(np.int64), -1, m.shape[1]
        )
        ok_r, ok_c = (rows >= 0) & (rows < m.shape[0]), (cols >= 0) & (cols < m.shape[1])
        mask_m = np.zeros((rh, rw), bool)
        mask_m[np.ix_(ok_r, ok_c)] = m[np.ix_(rows[ok_r], cols[ok_c])]
        field = surround_field(model, image, mask_m, tissue, ring_px, cancel=cancel)
        # the context's model px: shift the field from the ring box to the context's origin
        oy, ox = ry - context[0] / factor, rx - context[1] / factor
        field = ConditionField(
            field.embeddings,
            field.valid,
            field.cell_px,
            (field.origin_px[0] + oy, field.origin_px[1] + ox),
        )
        record = {
            "mode": "surround",
            "ring_um": ring_um,
            "cells": int(field.valid.sum()),
            "encoder": encoder_id(model),
            "field_fingerprint": field.fingerprint(),
        }
        return field.window_cond(model.latent_factor), record
    try:
        rect = [int(v) for v in reference]
    except (TypeError, ValueError):
        rect = []
    if len(rect) != 4:
        raise ValueError(f"a reference region is (y, x, h, w) in level-0 px, got {reference!r}")
    require_conditional(model, "a reference region")
    emb = region_embedding(model, slide, tuple(rect), cancel=cancel)
    field = ConditionField.constant(emb)
    record = {
        "mode": "region",
        "region": rect,
        "file": Path(slide.path).name,
        "encoder": encoder_id(model),
        "field_fingerprint": field.fingerprint(),
    }
    return field.window_cond(model.latent_factor), record
