"""The phase structure of a lazy slide: lattices, dependency cones and cached states."""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import torch

from ..counter_noise import noise_field, uniform
from ..precision import resolve_autocast
from ..region import window_of
from ..samplers import alpha_sigma, get_sampler, model_denoiser
from ..schedules import time_grid
from ..tiling import window_profile
from . import batching
from .spec import LazySpec, PhaseCache


@dataclass(frozen=True)
class _Phase:
    index: int
    first_step: int
    last_step: int  # exclusive
    offset: tuple[int, int]
    stride: int  # lattice period of the cells
    extent: int  # side of the stored cell state (the core of a tile; the whole blend window)
    context: int  # latents of context on each side of a tile's core (evaluated, not kept)
    blend: bool


class LazyPlan:
    """The phase structure of a spec for one model (lattices, steps), and the engine on it.

    ``cond``: the model's condition for every window, or a per-window one
    (``cond.for_windows(rects)``, see :func:`~.samplers.model_denoiser`) that must depend on
    a window's absolute position only (e.g. a reference field's); the cache belongs to it too.
    """

    def __init__(
        self,
        model: Any,
        spec: LazySpec,
        cache: PhaseCache,
        cancel: Any = None,
        cond: Any = None,
    ):
        self.model = model
        self.cond = cond
        self.spec = spec
        self.cache = cache
        self.cancel = cancel
        st = spec.settings
        self.window = window_of(model, st)
        self.ts = time_grid(st.steps, st.time_shift, st.sampler)
        self.evaluations = 0  # windows x steps through the model, padding excluded
        self.padded_evaluations = 0  # zero windows that filled up batches
        w = self.window
        tile_end = st.steps - spec.blend_steps
        bounds = [0]
        for tb in spec.phase_times:
            i = next((k for k, tv in enumerate(self.ts) if tv <= tb), st.steps)
            if bounds[-1] < i < tile_end:
                bounds.append(i)
        bounds.append(tile_end)
        phases: list[_Phase] = []
        ctx = spec.context_latent
        ctx = (ctx,) if isinstance(ctx, int) else ctx
        oy = ox = 0
        for k in range(len(bounds) - 1):
            m = ctx[min(k, len(ctx) - 1)]
            core = w - 2 * m
            if core < 1:
                raise ValueError(f"context_latent={m} leaves no core in a {w}-latent window")
            if k > 0:
                u = uniform(st.seed, "lazy-lattice", (k,), 2)
                oy = (oy + core // 2 + int((u[0] - 0.5) * core / 4)) % core
                ox = (ox + core // 2 + int((u[1] - 0.5) * core / 4)) % core
            phases.append(_Phase(k, bounds[k], bounds[k + 1], (oy, ox), core, core, m, False))
        if spec.blend_steps > 0:
            stride = max(1, round(w * (1.0 - spec.blend_overlap)))
            oy, ox = (oy + stride // 2) % stride, (ox + stride // 2) % stride
            k = len(phases)
            phases.append(_Phase(k, tile_end, st.steps, (oy, ox), stride, w, 0, True))
        self.phases = phases
        self.sampler = get_sampler(st.sampler)
        self.autocast = resolve_autocast(st.autocast, model)
        self.on_cpu = torch.device(getattr(model, "device", "cpu")).type == "cpu"
        self.denoise = model_denoiser(model, st.guidance, st.guidance_interval, cond, self.autocast)
        self._prof = window_profile(w, "tent").float()
        self._lock = threading.Lock()

    # -- geometry ---------------------------------------------------------------------------
    def _cell_range(self, phase: _Phase, axis: int, lo: int, hi: int) -> range:
        o, s, e = phase.offset[axis], phase.stride, phase.extent
        first = math.floor((lo - o - e) / s) + 1
        last = math.ceil((hi - o) / s) - 1
        return range(first, last + 1)

    def origin(self, phase: _Phase, i: int, j: int) -> tuple[int, int]:
        """Absolute latent position of cell ``(i, j)``'s stored state."""
        return phase.offset[0] + i * phase.stride, phase.offset[1] + j * phase.stride

    def _gather(self, p: int, y: int, x: int, h: int, w: int) -> torch.Tensor:
        """Stored states of (non-blend) phase ``p`` cropped to an absolute rectangle."""
        ph = self.phases[p]
        out = torch.empty((self.model.latent_channels, h, w), dtype=torch.float32)
        e = ph.extent
        for i in self._cell_range(ph, 0, y, y + h):
            for j in self._cell_range(ph, 1, x, x + w):
                oy, ox = self.origin(ph, i, j)
                ya, yb = max(y, oy), min(y + h, oy + e)
                xa, xb = max(x, ox), min(x + w, ox + e)
                tile = self.state(p, i, j)
                out[:, ya - y : yb - y, xa - x : xb - x] = tile[
                    :, ya - oy : yb - oy, xa - ox : xb - ox
                ]
        return out

    # -- states -----------------------------------------------------------------------------
    def state(self, p: int, i: int, j: int) -> torch.Tensor:
        """End-of-phase state ``(C, W, W)`` of window ``(i, j)`` of phase ``p`` (cached)."""
        got = self.cache.get((p, i, j))
        if got is not None:
            return got
        batching.prepare_cells(self, p, {(i, j)})
        got = self.cache.get((p, i, j))
        if got is not None:
            return got
        # A cache that drops entries at once (a full LRU): compute this one directly.
        return batching.run_batch(self, self.phases[p], [(i, j)])[0]

    def cached(self, key: tuple[int, int, int]) -> bool:
        contains = getattr(self.cache, "__contains__", None)
        if contains is not None:
            return contains(key)
        return self.cache.get(key) is not None

    def covering(self, p: int, y: int, x: int, h: int, w: int) -> set[tuple[int, int]]:
        """Cells of phase ``p`` whose stored state overlaps an absolute latent rectangle."""
        ph = self.phases[p]
        return {
            (i, j)
            for i in self._cell_range(ph, 0, y, y + h)
            for j in self._cell_range(ph, 1, x, x + w)
        }

    def deps(self, q: int, i: int, j: int) -> set[tuple[int, int]]:
        """Cells of phase ``q - 1`` that the window of cell ``(i, j)`` of phase ``q`` reads."""
        oy, ox = self.origin(self.phases[q], i, j)
        m = self.phases[q].context
        return self.covering(q - 1, oy - m, ox - m, self.window, self.window)

    def cone(
        self,
        p: int,
        cells: set[tuple[int, int]],
        known: dict[tuple[int, int, int], bool] | None = None,
    ) -> list[list[tuple[int, int]]]:
        """Missing cells, per phase, that computing ``cells`` of phase ``p`` needs (top-down
        walk: a cached state needs nothing below it). ``known``: :meth:`cached` answers kept
        across calls while nothing is computed (a planner asks for the same cells' cones
        many times; each answer may stat a file)."""
        known = {} if known is None else known
        missing: list[list[tuple[int, int]]] = [[] for _ in self.phases]
        todo = cells
        for q in range(p, -1, -1):
            below: set[tuple[int, int]] = set()
            for i, j in sorted(todo):
                if (q, i, j) not in known:
                    known[q, i, j] = self.cached((q, i, j))
                if known[q, i, j]:
                    continue
                missing[q].append((i, j))
                if q > 0:
                    below |= self.deps(q, i, j)
            todo = below
        return missing

    def prepare(self, y: int, x: int, h: int, w: int) -> None:
        """Compute (batched) every phase state the final latents of a rectangle depend on.

        Optional: :meth:`final_latents` does it too; calling it once for the union of several
        rectangles (a chunk and its decode margins) fills the model batches better.
        """
        self.prepare_rects([(y, x, h, w)])

    def prepare_rects(
        self,
        rects: list[tuple[int, int, int, int]],
        then: list[list[tuple[int, int, int, int]]] = (),
    ) -> None:
        """:meth:`prepare` for the union of ``rects`` in one plan; ``then``: groups of
        rectangles wanted next (most urgent first) whose work may fill the padded batch slots."""
        last = len(self.phases) - 1
        cells: set[tuple[int, int]] = set()
        for r in rects:
            cells |= self.covering(last, *r)
        later = []
        for group in then:
            wanted: set[tuple[int, int]] = set()
            for r in group:
                wanted |= self.covering(last, *r)
            later.append(wanted)
        batching.prepare_cells(self, last, cells, later)

    def input_field(self, p: int, y: int, x: int, h: int, w: int) -> torch.Tensor:
        """Latents ``(C, h, w)`` at the START of phase ``p`` over an absolute rectangle."""
        if p == 0:
            _, s1 = alpha_sigma(self.model.interpolant, 1.0)
            c = self.model.latent_channels
            return s1 * noise_field(self.spec.settings.seed, "init", y, x, h, w, c)
        if self.phases[p - 1].blend:
            raise RuntimeError("the blend phase is always the last one")
        return self._gather(p - 1, y, x, h, w)

    def final_latents(self, y: int, x: int, h: int, w: int) -> torch.Tensor:
        """Final (t = 0) latents ``(C, h, w)`` over an absolute latent rectangle."""
        self.prepare(y, x, h, w)
        last = self.phases[-1]
        if not last.blend:
            return self._gather(last.index, y, x, h, w)
        c = self.model.latent_channels
        acc = torch.zeros((c, h, w), dtype=torch.float32)
        norm = torch.zeros((1, h, w), dtype=torch.float32)
        wgt = self._prof[:, None] * self._prof[None, :]
        for i in self._cell_range(last, 0, y, y + h):
            for j in self._cell_range(last, 1, x, x + w):
                oy, ox = self.origin(last, i, j)
                ya, yb = max(y, oy), min(y + h, oy + self.window)
                xa, xb = max(x, ox), min(x + w, ox + self.window)
                win = self.state(last.index, i, j)
                sy, sx = slice(ya - oy, yb - oy), slice(xa - ox, xb - ox)
                ty, tx = slice(ya - y, yb - y), slice(xa - x, xb - x)
                acc[:, ty, tx] += win[:, sy, sx] * wgt[sy, sx]
                norm[:, ty, tx] += wgt[sy, sx]
        return acc / norm

    def lattice_lines_px(self) -> list[tuple[int, int, int, bool]]:
        """``(offset_y_px, offset_x_px, period_px, blend)`` of every phase's window borders."""
        f = self.model.latent_factor
        return [(p.offset[0] * f, p.offset[1] * f, p.stride * f, p.blend) for p in self.phases]
