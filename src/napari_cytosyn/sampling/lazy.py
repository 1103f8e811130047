"""Lazy random-access mode: any chunk from a bounded neighbourhood, bit-identically.

The step schedule is split into phases at ``phase_times``. In a *tile phase* the latent plane
is cut into cells on a lattice whose offset moves by about half a cell (seeded) from phase to
phase, so the seams a phase leaves fall inside the next phase's cells (SpotDiffusion's shifting,
done per phase instead of per step). Each cell is evolved through the phase's steps on its own,
as one ``W x W`` model window of which only the centre ``W - 2 m`` is kept: the ``m`` latents of
context on each side are evaluated but their update is discarded (overlap-save). On the GRF
model the outermost latent of a window carries most of the boundary error, so 1-2 latents of
context in the middle phases remove the seams for ``(W / (W - 2m))^2`` the cost. Inside a phase
cells are independent, so a cell's state at the end of phase ``k`` depends only on the phase
``k - 1`` cells under its window: the dependency cone is bounded by the number of phases
(InfiniteDiffusion's idea). Optionally the last ``blend_steps`` steps run on overlapping windows
cross-faded with tent weights (a *blend phase*).

Every state is cached under ``(phase, cell_y, cell_x)`` in a :class:`PhaseCache`, so neighbours
reuse work and a whole slide costs each (phase, cell) once. Before a region is assembled, the
states its final latents depend on are planned phase by phase (the cone is pure geometry) and the
missing ones are evaluated ``batch`` windows per model call. The model is always called with
exactly ``batch`` windows (the last call of a phase is padded with zeros): a network's output for
one window changes in the last bits with the batch SIZE on CPU, but not with the other windows of
a batch of fixed size, so no result depends on which chunk asked first or what shared its batch
(a chunk is bit-identical whatever the request order).

Cost amortised over a large area: ``sum_k steps_k (W / stride_k)^2 / steps`` times naive tiling
(1.29 with the defaults: 3 phases split at t = 0.7 and 0.4, context 2, 2, 1). An isolated chunk
or region also pays for its dependency cone, about one window more per phase on each side, which
is why the defaults use 3 phases rather than more (docs/sampling.md, "Lazy mode: cost of a fresh
view").
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import math
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from . import precision
from .conditioning import cond_fingerprint
from .counter_noise import noise_field, uniform
from .precision import resolve_autocast
from .region import window_of
from .samplers import alpha_sigma, get_sampler, model_denoiser
from .schedules import time_grid
from .settings import SamplerSettings, check_cancel
from .tiling import to_uint8, window_profile

_PREVIEW = threading.local()  # .callback: this thread's preview_scope callback


@contextlib.contextmanager
def preview_scope(callback: Any):
    """Within the block, every model call of lazy mode made by this thread reports its early
    x0 estimate: ``callback(model, rects, x0)``, ``rects`` the absolute latent rectangles
    ``(y, x, h, w)`` of the windows' kept parts, ``x0`` ``(n, C, h, w)`` float32 on the CPU
    (a copy). A viewer uses it to show a provisional picture of a chunk long before it is
    finished. Reporting never changes a pixel; ``None`` reports nothing."""
    previous = getattr(_PREVIEW, "callback", None)
    _PREVIEW.callback = callback
    try:
        yield
    finally:
        _PREVIEW.callback = previous


@runtime_checkable
class PhaseCache(Protocol):
    """Where lazy mode keeps phase states. Keys are tuples ``(phase, cell_y, cell_x)`` of ints.

    A cache belongs to one (model, :class:`LazySpec`); use ``spec.fingerprint()`` to check.
    Values are CPU float32 tensors ``(C, W, W)``; ``put`` must store them losslessly.
    """

    def get(self, key: tuple[int, int, int]) -> torch.Tensor | None: ...

    def put(self, key: tuple[int, int, int], tensor: torch.Tensor) -> None: ...


class MemoryPhaseCache:
    """A thread-safe in-memory :class:`PhaseCache` (a dict); ``clear()`` empties it."""

    def __init__(self) -> None:
        self._data: dict[tuple[int, int, int], torch.Tensor] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[int, int, int]) -> torch.Tensor | None:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self.hits += 1
            return value

    def put(self, key: tuple[int, int, int], tensor: torch.Tensor) -> None:
        with self._lock:
            self._data[key] = tensor.detach().to("cpu", torch.float32).contiguous()

    def __contains__(self, key: tuple[int, int, int]) -> bool:
        with self._lock:
            return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


#: ``LazySpec.batch`` when not given: windows per model call (per tile phase for a tuple).
#: Under bfloat16 autocast larger batches cost less per window (embedded model, 2-core CPU:
#: 12.0 / 8.5 / 7.6 ms per window at 4 / 8 / 16), but the later phases of a cone have fewer
#: cells, so they use 8 (less padding); in float32 the first chunk of a view comes as soon
#: with 4 (``benchmarks/viewport.py``; docs/sampling.md, "Lazy mode: cost of a fresh view").
BATCH_DEFAULT = 4
BATCH_BF16 = (16, 8, 8)


@dataclass(frozen=True)
class LazySpec:
    """What, besides the core settings, fixes the pixels of a lazily rendered slide.

    Parameters
    ----------
    settings: the core :class:`SamplerSettings` (sampler, steps, seed, window, guidance,
        precision); its region, decode and inpaint configs are not read in lazy mode.
    chunk_px: output chunk side in pixels; a multiple of the model's latent factor.
    phase_times: protocol times (decreasing, in (0, 1)) where a tile phase ends and the next,
        shifted lattice begins. ``()`` = a single tile phase.
    blend_steps: number of final steps run on overlapping windows that are cross-faded.
    blend_overlap: overlap fraction of the blend-phase windows (stride ``W (1 - overlap)``).
    context_latent: tile phases evaluate each ``W``-latent window but keep only its centre
        ``W - 2 m`` (overlap-save); the rest is context the denoiser sees but whose update is
        discarded. Costs ``(W / (W - 2 m))^2``. One int for all tile phases or one per phase
        (the last value repeats).
    batch: windows per model call, always exactly this many (the last call of a phase is
        padded with zeros) so that the batch a window is evaluated in cannot change its result.
        A tuple gives one size per tile phase (the last repeats). ``None``:
        :data:`BATCH_BF16` under ``autocast="bfloat16"``, else :data:`BATCH_DEFAULT`. Slots that
        would be padding may compute windows of chunks wanted next (:func:`prepare_chunks`).
    decode_halo_latent, decode_blend_latent: halo and border cross-fade of the chunk decode, in
        latents.
    """

    settings: SamplerSettings = field(default_factory=SamplerSettings)
    chunk_px: int = 512
    phase_times: tuple[float, ...] = (0.7, 0.4)
    blend_steps: int = 0
    blend_overlap: float = 0.5
    context_latent: int | tuple[int, ...] = (2, 2, 1)
    batch: int | tuple[int, ...] | None = None
    decode_halo_latent: int = 4
    decode_blend_latent: int = 2

    def __post_init__(self) -> None:
        if not isinstance(self.settings, SamplerSettings):
            raise TypeError(f"settings must be a SamplerSettings, got {type(self.settings)}")
        pt = tuple(float(v) for v in self.phase_times)
        object.__setattr__(self, "phase_times", pt)
        if any(not 0.0 < v < 1.0 for v in pt) or any(a <= b for a, b in itertools.pairwise(pt)):
            raise ValueError(f"phase_times must be decreasing values in (0, 1), got {pt!r}")
        if not isinstance(self.chunk_px, int) or self.chunk_px < 8:
            raise ValueError(f"chunk_px must be an integer >= 8, got {self.chunk_px!r}")
        if not 0 <= self.blend_steps < self.settings.steps:
            raise ValueError(
                f"blend_steps must be in [0, steps) = [0, {self.settings.steps}), "
                f"got {self.blend_steps!r}"
            )
        if not 0.0 <= self.blend_overlap < 1.0:
            raise ValueError(f"blend_overlap must be in [0, 1), got {self.blend_overlap!r}")
        ctx = self.context_latent
        ctx = (ctx,) if isinstance(ctx, int) else tuple(ctx)
        if not ctx or any(not isinstance(v, int) or v < 0 for v in ctx):
            raise ValueError(
                "context_latent must be an integer >= 0 or a tuple of them (one per tile phase), "
                f"got {self.context_latent!r}"
            )
        object.__setattr__(self, "context_latent", ctx[0] if len(ctx) == 1 else ctx)
        if self.batch is None:
            bf16 = self.settings.autocast == "bfloat16"
            object.__setattr__(self, "batch", BATCH_BF16 if bf16 else BATCH_DEFAULT)
        batch = self.batch if isinstance(self.batch, list | tuple) else (self.batch,)
        if not batch or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in batch):
            raise ValueError(
                f"batch must be an integer >= 1 or a tuple of them (windows per call, one per "
                f"tile phase), got {self.batch!r}"
            )
        object.__setattr__(self, "batch", batch[0] if len(batch) == 1 else tuple(batch))
        for name in ("decode_halo_latent", "decode_blend_latent"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}")

    def batch_of(self, phase: int) -> int:
        """Windows per model call in phase ``phase``."""
        b = self.batch
        return b if isinstance(b, int) else b[min(phase, len(b) - 1)]

    def to_dict(self) -> dict[str, Any]:
        """The lazy fields as a JSON-serialisable dict (the core settings are not in it: a
        recipe stores them once, see :mod:`.recipe`); inverse :meth:`from_dict`."""
        return {
            "chunk_px": self.chunk_px,
            "phase_times": list(self.phase_times),
            "blend_steps": self.blend_steps,
            "blend_overlap": self.blend_overlap,
            "context_latent": (
                self.context_latent
                if isinstance(self.context_latent, int)
                else list(self.context_latent)
            ),
            "batch": self.batch if isinstance(self.batch, int) else list(self.batch),
            "decode_halo_latent": self.decode_halo_latent,
            "decode_blend_latent": self.decode_blend_latent,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], settings: SamplerSettings) -> LazySpec:
        """Inverse of :meth:`to_dict`, with the core ``settings``; every field must be there
        and no other (a missing or unknown field would change pixels)."""
        fields = set(cls.__dataclass_fields__) - {"settings"}
        if set(d) != fields:
            raise ValueError(
                f"a stored lazy spec has the fields {sorted(fields)}; missing "
                f"{sorted(fields - set(d))}, unknown {sorted(set(d) - fields)}"
            )
        kw = dict(d)
        for name in ("phase_times", "batch", "context_latent"):
            if isinstance(kw[name], list):
                kw[name] = tuple(kw[name])
        return cls(settings=settings, **kw)

    def fingerprint(self) -> str:
        """Short hash of the core settings and the lazy fields, to tie a phase cache to them."""
        text = json.dumps(
            {"core": self.settings.core_dict(), "lazy": self.to_dict()}, sort_keys=True
        )
        return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


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
        self._sampler = get_sampler(st.sampler)
        self.autocast = resolve_autocast(st.autocast, model)
        self._denoise = model_denoiser(
            model, st.guidance, st.guidance_interval, cond, self.autocast
        )
        self._prof = window_profile(w, "tent").float()
        self._lock = threading.Lock()

    # -- geometry ---------------------------------------------------------------------------
    def _cell_range(self, phase: _Phase, axis: int, lo: int, hi: int) -> range:
        o, s, e = phase.offset[axis], phase.stride, phase.extent
        first = math.floor((lo - o - e) / s) + 1
        last = math.ceil((hi - o) / s) - 1
        return range(first, last + 1)

    def _origin(self, phase: _Phase, i: int, j: int) -> tuple[int, int]:
        """Absolute latent position of cell ``(i, j)``'s stored state."""
        return phase.offset[0] + i * phase.stride, phase.offset[1] + j * phase.stride

    def _gather(self, p: int, y: int, x: int, h: int, w: int) -> torch.Tensor:
        """Stored states of (non-blend) phase ``p`` cropped to an absolute rectangle."""
        ph = self.phases[p]
        out = torch.empty((self.model.latent_channels, h, w), dtype=torch.float32)
        e = ph.extent
        for i in self._cell_range(ph, 0, y, y + h):
            for j in self._cell_range(ph, 1, x, x + w):
                oy, ox = self._origin(ph, i, j)
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
        self._prepare(p, {(i, j)})
        got = self.cache.get((p, i, j))
        if got is not None:
            return got
        # A cache that drops entries at once (a full LRU): compute this one directly.
        return self._run_batch(self.phases[p], [(i, j)])[0]

    def _cached(self, key: tuple[int, int, int]) -> bool:
        contains = getattr(self.cache, "__contains__", None)
        if contains is not None:
            return contains(key)
        return self.cache.get(key) is not None

    def _covering(self, p: int, y: int, x: int, h: int, w: int) -> set[tuple[int, int]]:
        """Cells of phase ``p`` whose stored state overlaps an absolute latent rectangle."""
        ph = self.phases[p]
        return {
            (i, j)
            for i in self._cell_range(ph, 0, y, y + h)
            for j in self._cell_range(ph, 1, x, x + w)
        }

    def _deps(self, q: int, i: int, j: int) -> set[tuple[int, int]]:
        """Cells of phase ``q - 1`` that the window of cell ``(i, j)`` of phase ``q`` reads."""
        oy, ox = self._origin(self.phases[q], i, j)
        m = self.phases[q].context
        return self._covering(q - 1, oy - m, ox - m, self.window, self.window)

    def _cone(self, p: int, cells: set[tuple[int, int]]) -> list[list[tuple[int, int]]]:
        """Missing cells, per phase, that computing ``cells`` of phase ``p`` needs (top-down
        walk: a cached state needs nothing below it)."""
        missing: list[list[tuple[int, int]]] = [[] for _ in self.phases]
        todo = cells
        for q in range(p, -1, -1):
            below: set[tuple[int, int]] = set()
            for i, j in sorted(todo):
                if self._cached((q, i, j)):
                    continue
                missing[q].append((i, j))
                if q > 0:
                    below |= self._deps(q, i, j)
            todo = below
        return missing

    def _prepare(
        self,
        p: int,
        cells: set[tuple[int, int]],
        then: list[set[tuple[int, int]]] | None = None,
    ) -> None:
        """Compute every missing state that the given cells of phase ``p`` depend on, and them.

        Each phase's missing cells are evaluated bottom-up, ``spec.batch`` windows per model
        call. ``then``: cells of phase ``p`` wanted next, most urgent first; the last, partly
        empty batch of each phase is filled with their work instead of zeros (a window's result
        does not depend on its batch partners): first whole cones that fit in every phase, then
        cells of their cones whose inputs are ready.
        """
        missing = self._cone(p, cells)
        sizes = [self.spec.batch_of(q) for q in range(len(self.phases))]
        if then and any(len(m) % b for m, b in zip(missing, sizes, strict=True)):
            self._fill_with_cones(p, missing, then)
        wish: list[list[tuple[int, int]]] = [[] for _ in self.phases]
        for later in then or ():
            if all(len(m) % b == 0 for m, b in zip(missing, sizes, strict=True)):
                break
            for q, cone_q in enumerate(self._cone(p, later)):
                wish[q].extend(cone_q)
        for q, todo_q in enumerate(missing):
            b = sizes[q]
            short = -len(todo_q) % b
            if short and wish[q]:
                taken = set(todo_q)
                for cell in wish[q]:
                    if short == 0:
                        break
                    if cell in taken or self._cached((q, *cell)):
                        continue
                    if q > 0 and not all(self._cached((q - 1, *d)) for d in self._deps(q, *cell)):
                        continue
                    todo_q.append(cell)
                    taken.add(cell)
                    short -= 1
            for k in range(0, len(todo_q), b):
                members = todo_q[k : k + b]
                outs = self._run_batch(self.phases[q], members)
                for key, out in zip(members, outs, strict=True):
                    self.cache.put((q, *key), out)

    def _fill_with_cones(
        self,
        p: int,
        missing: list[list[tuple[int, int]]],
        then: list[set[tuple[int, int]]],
    ) -> None:
        """Add to ``missing`` whole dependency cones of wanted cells of phase ``p`` (most urgent
        first) wherever one fits in the free slots of every phase's last batch: a cone spans
        the phases, so its cells become computable in this pass (bottom-up)."""
        free = [-len(m) % self.spec.batch_of(q) for q, m in enumerate(missing)]
        taken = [set(m) for m in missing]
        for later in then:
            for cell in sorted(later):
                if not any(free):
                    return
                if cell in taken[p]:
                    continue
                extra = [
                    [c for c in cone_q if c not in taken[q]]
                    for q, cone_q in enumerate(self._cone(p, {cell}))
                ]
                if not any(extra) or any(len(e) > f for e, f in zip(extra, free, strict=True)):
                    continue
                for q, e in enumerate(extra):
                    missing[q].extend(e)
                    taken[q].update(e)
                    free[q] -= len(e)

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
            cells |= self._covering(last, *r)
        later = []
        for group in then:
            wanted: set[tuple[int, int]] = set()
            for r in group:
                wanted |= self._covering(last, *r)
            later.append(wanted)
        self._prepare(last, cells, later)

    def input_field(self, p: int, y: int, x: int, h: int, w: int) -> torch.Tensor:
        """Latents ``(C, h, w)`` at the START of phase ``p`` over an absolute rectangle."""
        if p == 0:
            _, s1 = alpha_sigma(self.model.interpolant, 1.0)
            c = self.model.latent_channels
            return s1 * noise_field(self.spec.settings.seed, "init", y, x, h, w, c)
        if self.phases[p - 1].blend:
            raise RuntimeError("the blend phase is always the last one")
        return self._gather(p - 1, y, x, h, w)

    def _run_batch(self, phase: _Phase, members: list[tuple[int, int]]) -> list[torch.Tensor]:
        """Evolve the windows of ``members`` through ``phase`` in one batch (padded to
        ``spec.batch`` windows) and return their kept centres."""
        check_cancel(self.cancel)
        w, m, e = self.window, phase.context, phase.extent
        origins = [(oy - m, ox - m) for oy, ox in (self._origin(phase, i, j) for i, j in members)]
        pad = max(0, self.spec.batch_of(phase.index) - len(origins))
        c = self.model.latent_channels
        x = torch.stack([self.input_field(phase.index, oy, ox, w, w) for oy, ox in origins])
        if pad:
            x = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))])
        ts = self.ts[phase.first_step : phase.last_step + 1]
        noise = None
        if self.spec.settings.stochastic:

            def noise(i: int) -> torch.Tensor:
                z = torch.stack(
                    [
                        noise_field(self.spec.settings.seed, f"step{i}", oy, ox, w, w, c)
                        for oy, ox in origins
                    ]
                )
                return torch.cat([z, z.new_zeros((pad, *z.shape[1:]))]) if pad else z

        real = len(origins)
        # Padded slots repeat the last window's rectangle: a per-window condition needs one.
        rects = [(oy, ox, w, w) for oy, ox in origins] + [(*origins[-1], w, w)] * pad

        preview = getattr(_PREVIEW, "callback", None)
        cores = [(*self._origin(phase, i, j), e, e) for i, j in members]

        def counted(z: torch.Tensor, t: float) -> torch.Tensor:
            check_cancel(self.cancel)  # between model calls: Cancel acts within one call
            with self._lock:
                self.evaluations += real
                self.padded_evaluations += z.shape[0] - real
            if getattr(self._denoise, "per_window", False):
                x0 = self._denoise(z, t, rects)
            else:
                x0 = self._denoise(z, t)
            if preview is not None:
                preview(self.model, cores, x0[:real, :, m : m + e, m : m + e].float().cpu())
            return x0

        counted.model_dtype = self._denoise.model_dtype

        out = self._sampler(
            counted, x, ts, self.model.interpolant, noise=noise, step_offset=phase.first_step
        )
        return [o[:, m : m + e, m : m + e].contiguous() for o in out[:real]]

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
                oy, ox = self._origin(last, i, j)
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
    return _LazyRenderer(model, spec, cache, cancel, cond).chunk(chunk_y, chunk_x)


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
    _LazyRenderer(model, spec, cache, cancel, cond).prepare(chunks, upcoming)


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
    def __init__(
        self,
        model: Any,
        spec: LazySpec,
        cache: PhaseCache,
        cancel: Any = None,
        cond: Any = None,
    ):
        f = model.latent_factor
        if spec.chunk_px % f:
            raise ValueError(
                f"chunk_px={spec.chunk_px} must be a multiple of the model's latent factor {f}"
            )
        self.plan = LazyPlan(model, spec, cache, cancel, cond)
        self.model = model
        self.spec = spec
        self.cancel = cancel
        # border decodes are shared between renderers of one spec AND one condition
        self._fingerprint = spec.fingerprint() + cond_fingerprint(cond)

    def _latent_rect(self, cy: int, cx: int) -> tuple[int, int, int, int]:
        """Absolute latent rectangle ``(y, x, h, w)`` whose final latents chunk ``(cy, cx)``'s
        decode reads: the chunk plus halo and border cross-fade on every side."""
        n = self.spec.chunk_px // self.model.latent_factor
        r = self.spec.decode_halo_latent + min(self.spec.decode_blend_latent, n // 2)
        return cy * n - r, cx * n - r, n + 2 * r, n + 2 * r

    def prepare(self, chunks: list[tuple[int, int]], upcoming: list[tuple[int, int]] = ()) -> None:
        self.plan.prepare_rects(
            [self._latent_rect(cy, cx) for cy, cx in chunks],
            [[self._latent_rect(cy, cx)] for cy, cx in upcoming],
        )

    def _decode(self, y: int, x: int, h: int, w: int) -> torch.Tensor:
        """Decode the final latents of an absolute latent rectangle (no cropping)."""
        z = self.plan.final_latents(y, x, h, w)
        check_cancel(self.cancel)
        return precision.decode(self.model, z.unsqueeze(0), self.plan.autocast)[0]

    def chunk(self, cy: int, cx: int) -> np.ndarray:
        """Decode chunk ``(cy, cx)``: its own crop plus, with blending, its borders and corners.

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
        b = min(self.spec.decode_blend_latent, n // 2)
        y0, x0 = cy * n, cx * n
        # Every latent the crops below need, planned at once: fuller model batches.
        self.plan.prepare(*self._latent_rect(cy, cx))
        own = self._decode(y0 - halo, x0 - halo, n + 2 * halo, n + 2 * halo)
        a = halo * f
        px = self.spec.chunk_px
        rgb = own[:, a : a + px, a : a + px]
        if b == 0:
            return to_uint8(rgb)
        # 1-D partition of unity along a chunk side: low border, interior, high border.
        u = (torch.arange(px, dtype=torch.float32) + 0.5) / (b * f)
        lo = (1.0 - u).clamp(min=0.0)
        hi = lo.flip(0)
        mid = 1.0 - lo - hi
        prof = {-1: lo, 0: mid, 1: hi}
        e = b + halo  # half-size of a border crop, in latents
        out = rgb * (mid[:, None] * mid[None, :])
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
                key = (self._fingerprint, ry, rx, rh, rw)
                dec = BORDER_DECODES.get(self.model, key)
                if dec is None:
                    dec = self._decode(ry, rx, rh, rw)
                    BORDER_DECODES.put(self.model, key, dec)
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
    renderer = _LazyRenderer(model, spec, cache, cancel, cond)
    c = spec.chunk_px
    cy0, cy1 = y_px // c, (y_px + h_px - 1) // c
    cx0, cx1 = x_px // c, (x_px + w_px - 1) // c
    out = np.empty((h_px, w_px, 3), dtype=np.uint8)
    total = (cy1 - cy0 + 1) * (cx1 - cx0 + 1)
    done = 0
    # Plan bands of >= 32 chunks at once: full model batches (padding only at the end of each
    # phase of a band, not of every chunk), while progress still moves band by band.
    band = max(1, -(-32 // (cx1 - cx0 + 1)))
    for cy in range(cy0, cy1 + 1):
        if (cy - cy0) % band == 0:
            rows = range(cy, min(cy + band, cy1 + 1))
            renderer.prepare([(r, cx) for r in rows for cx in range(cx0, cx1 + 1)])
        for cx in range(cx0, cx1 + 1):
            check_cancel(cancel)
            tile = renderer.chunk(cy, cx)
            ya, yb = max(y_px, cy * c), min(y_px + h_px, (cy + 1) * c)
            xa, xb = max(x_px, cx * c), min(x_px + w_px, (cx + 1) * c)
            out[ya - y_px : yb - y_px, xa - x_px : xb - x_px] = tile[
                ya - cy * c : yb - cy * c, xa - cx * c : xb - cx * c
            ]
            done += 1
            if progress is not None:
                progress(done, total)
    return out
