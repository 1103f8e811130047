"""Chunks of a lazy slide: final latents decoded with a halo and cross-faded borders, or with
a local (frozen GroupNorm) decoder from their own crop."""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from napari_cytosyn.chunk_grid import pieces

from .. import precision
from ..conditioning import cond_fingerprint
from ..settings import check_cancel
from ..threads import parallel_calls
from ..tiling import to_uint8
from .plan import LazyPlan
from .spec import LazySpec, MemoryPhaseCache, PhaseCache


def render_chunk(
    model: Any,
    spec: LazySpec,
    chunk_y: int,
    chunk_x: int,
    cache: PhaseCache,
    cancel: Any = None,
    cond: Any = None,
) -> np.ndarray:
    """Render output chunk ``(chunk_y, chunk_x)`` (indices) -> ``(chunk_px, chunk_px, 3)`` uint8.

    The chunk covers pixels ``[chunk_y * chunk_px, (chunk_y + 1) * chunk_px)`` (same for x) of
    the slide at model resolution. It is decoded from the final latents under it plus
    ``spec.decode_halo_latent`` on every side, keeping the centre. Phase states are taken
    from / written to ``cache``. On CPU the result is bit-identical whatever was rendered before.
    ``cond``: the model's condition, or a per-window one (see :class:`LazyPlan`); ``cache``
    must be its own.
    """
    return _LazyRenderer(LazyPlan(model, spec, cache, cancel, cond)).chunk(chunk_y, chunk_x)


def lazy_defaults(model: Any) -> dict[str, Any]:
    """The :class:`LazySpec` fields a new lazy slide of ``model`` uses unless told otherwise:
    the frozen decode (``decode_norm="frozen"``, halo ``model.frozen_norm_halo_latent``) when
    the model ships a local decoder (``frozen_norm_model``), else nothing (the spec's defaults)."""
    if getattr(model, "frozen_norm_model", None) is None:
        return {}
    return {"decode_norm": "frozen", "decode_halo_latent": int(model.frozen_norm_halo_latent)}


def prepare_chunks(
    model: Any,
    spec: LazySpec,
    chunks: list[tuple[int, int]],
    cache: PhaseCache,
    cancel: Any = None,
    upcoming: list[tuple[int, int]] = (),
    cond: Any = None,
) -> None:
    """Compute the phase states that rendering ``chunks`` (indices ``(cy, cx)``) needs.

    One plan for all of them, so their windows share full model batches: preparing the next
    few chunks of a view together wastes fewer padded batch slots than rendering them one by
    one. ``upcoming``: chunks wanted after these, most urgent first; the model batches that
    would end partly empty are filled with windows of their dependency cones whose inputs are
    ready. Optional (:func:`render_chunk` computes what is missing); pixels are the same
    either way. ``cond``: as in :func:`render_chunk`.
    """
    _LazyRenderer(LazyPlan(model, spec, cache, cancel, cond)).prepare(chunks, upcoming)


class _BorderDecodes:
    """Bounded, thread-safe memory of the border/corner crop decodes of lazy chunks.

    Two chunks that share a border (four that share a corner) decode the same crop, a function
    of the border alone; keeping recent ones lets the second chunk reuse the first one's decode
    instead of running the decoder again. Entries are keyed per model (weakly, so a model's
    entries go with it) by ``(spec fingerprint, crop rectangle)``; a hit returns exactly the
    tensor a fresh decode of that crop gave, so pixels do not depend on what was cached.
    """

    def __init__(self, max_bytes: int = 64 << 20) -> None:
        self.max_bytes = max_bytes
        # id(model) -> (weak reference to the model, its table); models may be unhashable.
        self._per_model: dict[int, tuple[weakref.ref, OrderedDict]] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def _table(self, model: Any) -> OrderedDict | None:
        entry = self._per_model.get(id(model))
        if entry is not None and entry[0]() is model:
            return entry[1]
        per_model = self._per_model
        key = id(model)

        def forget(ref: weakref.ref) -> None:  # the model died: drop its decodes
            if per_model.get(key, (None,))[0] is ref:
                per_model.pop(key, None)

        try:
            ref = weakref.ref(model, forget)
        except TypeError:  # not weakly referenceable: no caching
            return None
        table: OrderedDict = OrderedDict()
        per_model[key] = (ref, table)
        return table

    def get(self, model: Any, key: tuple) -> torch.Tensor | None:
        with self._lock:
            table = self._table(model)
            got = None if table is None else table.get(key)
            if got is None:
                self.misses += 1
                return None
            table.move_to_end(key)
            self.hits += 1
            return got

    def put(self, model: Any, key: tuple, value: torch.Tensor) -> None:
        with self._lock:
            table = self._table(model)
            if table is None or value.nbytes > self.max_bytes:
                return
            table[key] = value
            total = sum(v.nbytes for v in table.values())
            while total > self.max_bytes:
                _, old = table.popitem(last=False)
                total -= old.nbytes

    def clear(self) -> None:
        with self._lock:
            self._per_model.clear()


BORDER_DECODES = _BorderDecodes()


class _LazyRenderer:
    """Decodes the chunks of a plan's final latents."""

    def __init__(self, plan: LazyPlan):
        self.plan, self.model, self.spec, self.cancel = plan, plan.model, plan.spec, plan.cancel
        f = self.model.latent_factor
        if self.spec.chunk_px % f:
            raise ValueError(
                f"chunk_px={self.spec.chunk_px} must be a multiple of the model's latent factor {f}"
            )
        # border decodes are shared between renderers of one spec AND one condition
        self._fingerprint = self.spec.fingerprint() + cond_fingerprint(plan.cond)
        self.decoder = self.model
        if self.spec.decode_norm == "frozen":
            self.decoder = getattr(self.model, "frozen_norm_model", None)
            if self.decoder is None:
                raise ValueError(
                    f"this lazy slide decodes with frozen GroupNorm statistics (decode_norm "
                    f"'frozen'), which model {getattr(self.model, 'name', '?')!r} does not ship; "
                    "open it with the model it was made with"
                )

    def _latent_rect(self, cy: int, cx: int) -> tuple[int, int, int, int]:
        """Absolute latent rectangle ``(y, x, h, w)`` whose final latents chunk ``(cy, cx)``'s
        decode reads: the chunk plus halo and border cross-fade on every side."""
        n = self.spec.chunk_px // self.model.latent_factor
        r = self.spec.decode_halo_latent + min(self._blend_latent(), n // 2)
        return cy * n - r, cx * n - r, n + 2 * r, n + 2 * r

    def _blend_latent(self) -> int:
        return 0 if self.spec.decode_norm == "frozen" else self.spec.decode_blend_latent

    def prepare(self, chunks: list[tuple[int, int]], upcoming: list[tuple[int, int]] = ()) -> None:
        self.plan.prepare_rects(
            [self._latent_rect(cy, cx) for cy, cx in chunks],
            [[self._latent_rect(cy, cx)] for cy, cx in upcoming],
        )

    def _decode_all(self, rects: list[tuple[int, int, int, int]]) -> list[torch.Tensor]:
        """Decode the final latents of absolute latent rectangles ``(y, x, h, w)`` (no
        cropping): latents gathered here, the decoder calls side by side on the cores."""
        zs = [self.plan.final_latents(*r) for r in rects]
        check_cancel(self.cancel)
        mode = self.plan.autocast

        def decode(z: torch.Tensor) -> torch.Tensor:
            return precision.decode(self.decoder, z.unsqueeze(0), mode)[0]

        return parallel_calls(decode, zs, self.plan.on_cpu)

    def chunk(self, cy: int, cx: int) -> np.ndarray:
        """Decode chunk ``(cy, cx)``: its own crop plus, with blending, its borders and corners.

        With ``spec.decode_norm == "frozen"`` (a local decoder) the chunk is decoded as two
        halves, top and bottom, side by side, each from its latents plus the halo, keeping the
        centre: the split is fixed, so pixels do not depend on the number of workers.
        Without blending the chunk is decoded from its latents plus the halo and the centre is
        kept. With ``b = spec.decode_blend_latent > 0``, pixels within ``b`` latents of a
        chunk border are cross-faded towards a decode of a crop centred on that border (or, near
        a corner, on that corner). Those crops are functions of the border alone, so both chunks
        at a border use the same decode there and meet without a step, whatever the per-crop
        GroupNorm statistics of the decoder. Costs ~2.2x the decoder work at 64 + 2 x 8 latents
        for an isolated chunk; neighbours share border decodes through :data:`BORDER_DECODES`.
        """
        f = self.model.latent_factor
        n = self.spec.chunk_px // f
        halo = self.spec.decode_halo_latent
        b = min(self._blend_latent(), n // 2)
        y0, x0 = cy * n, cx * n
        # Every latent the crops below need, planned at once: fuller model batches.
        self.plan.prepare(*self._latent_rect(cy, cx))
        own_rect = (y0 - halo, x0 - halo, n + 2 * halo, n + 2 * halo)
        a = halo * f
        px = self.spec.chunk_px
        if self.spec.decode_norm == "frozen":
            h = n // 2  # rows of the top half, in latents
            top = (y0 - halo, x0 - halo, h + 2 * halo, n + 2 * halo)
            bottom = (y0 + h - halo, x0 - halo, n - h + 2 * halo, n + 2 * halo)
            halves = self._decode_all([top, bottom] if h else [bottom])
            rgb = torch.cat([d[:, a : d.shape[1] - a, a : a + px] for d in halves], 1)
            return to_uint8(rgb)
        if b == 0:
            (own,) = self._decode_all([own_rect])
            return to_uint8(own[:, a : a + px, a : a + px])
        e = b + halo  # half-size of a border crop, in latents
        crops: dict[tuple[int, int], tuple[int, int, int, int]] = {}
        for sy in (-1, 0, 1):
            for sx in (-1, 0, 1):
                if sy == 0 and sx == 0:
                    continue
                # Crop centred on the border line(s): rows/cols span the chunk (plus halo)
                # along an axis without a border, 2 e around the border line otherwise.
                by = y0 + (n if sy == 1 else 0)
                bx = x0 + (n if sx == 1 else 0)
                ry, rh = (by - e, 2 * e) if sy else (y0 - halo, n + 2 * halo)
                rx, rw = (bx - e, 2 * e) if sx else (x0 - halo, n + 2 * halo)
                crops[sy, sx] = (ry, rx, rh, rw)
        decoded = {
            side: BORDER_DECODES.get(self.model, (self._fingerprint, *r))
            for side, r in crops.items()
        }
        missing = [side for side, dec in decoded.items() if dec is None]
        own, *fresh = self._decode_all([own_rect] + [crops[side] for side in missing])
        for side, dec in zip(missing, fresh, strict=True):
            BORDER_DECODES.put(self.model, (self._fingerprint, *crops[side]), dec)
            decoded[side] = dec
        rgb = own[:, a : a + px, a : a + px]
        # 1-D partition of unity along a chunk side: low border, interior, high border.
        u = (torch.arange(px, dtype=torch.float32) + 0.5) / (b * f)
        lo = (1.0 - u).clamp(min=0.0)
        hi = lo.flip(0)
        mid = 1.0 - lo - hi
        prof = {-1: lo, 0: mid, 1: hi}
        out = rgb * (mid[:, None] * mid[None, :])
        for (sy, sx), (ry, rx, _, _) in crops.items():
            dec = decoded[sy, sx]
            oy, ox = (y0 - ry) * f, (x0 - rx) * f
            # Only the part of the chunk inside the crop carries weight; take that part.
            wy, wx = prof[sy], prof[sx]
            ya, yb = (0, px) if sy == 0 else ((0, b * f) if sy == -1 else (px - b * f, px))
            xa, xb = (0, px) if sx == 0 else ((0, b * f) if sx == -1 else (px - b * f, px))
            part = dec[:, oy + ya : oy + yb, ox + xa : ox + xb]
            out[:, ya:yb, xa:xb] += part * (wy[ya:yb, None] * wx[None, xa:xb])
        return to_uint8(out)


def final_latents(
    model: Any,
    spec: LazySpec,
    y_lat: int,
    x_lat: int,
    h_lat: int,
    w_lat: int,
    cache: PhaseCache,
    cond: Any = None,
) -> torch.Tensor:
    """Final latents ``(C, h_lat, w_lat)`` float32 of the lazy slide at absolute latents."""
    return LazyPlan(model, spec, cache, cond=cond).final_latents(y_lat, x_lat, h_lat, w_lat)


def render_region_lazy(
    model: Any,
    spec: LazySpec,
    y_px: int,
    x_px: int,
    h_px: int,
    w_px: int,
    cache: PhaseCache | None = None,
    progress=None,
    cancel: Any = None,
    cond: Any = None,
) -> np.ndarray:
    """Any pixel region of the lazy slide, assembled from :func:`render_chunk` chunks.

    Returns ``(h_px, w_px, 3)`` uint8, equal pixel for pixel to the chunks that cover it.
    ``progress(done, total)`` counts chunks. ``cond``: as in :func:`render_chunk`.
    """
    cache = MemoryPhaseCache() if cache is None else cache
    renderer = _LazyRenderer(LazyPlan(model, spec, cache, cancel, cond))
    out = np.empty((h_px, w_px, 3), dtype=np.uint8)
    todo = list(pieces(None, spec.chunk_px, y_px, x_px, h_px, w_px))
    if not todo:
        return out
    first_row, last_row = todo[0].cy, todo[-1].cy
    cols = sorted({p.cx for p in todo})
    # Plan bands of >= 32 chunks at once: full model batches (padding only at the end of each
    # phase of a band, not of every chunk), while progress still moves band by band.
    band = max(1, -(-32 // len(cols)))
    for done, p in enumerate(todo):
        if p.cx == cols[0] and (p.cy - first_row) % band == 0:
            rows = range(p.cy, min(p.cy + band, last_row + 1))
            renderer.prepare([(r, cx) for r in rows for cx in cols])
        check_cancel(cancel)
        out[p.out] = renderer.chunk(p.cy, p.cx)[p.chunk]
        if progress is not None:
            progress(done + 1, len(todo))
    return out
