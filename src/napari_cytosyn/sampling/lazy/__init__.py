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

Modules: :mod:`.spec` (``LazySpec``, the phase-cache protocol), :mod:`.plan` (``LazyPlan``:
phases, lattices, dependency cones, cached states, final latents), :mod:`.batching` (missing
states evaluated in fixed-size model batches, padded slots filled with work wanted next;
``preview_scope``, ``soon_scope``) and :mod:`.decode` (chunks decoded with halo and
cross-faded borders, or locally; ``render_chunk``, ``prepare_chunks``, ``render_region_lazy``).
"""

from .batching import preview_scope, soon_scope
from .decode import (
    BORDER_DECODES,
    final_latents,
    lazy_defaults,
    prepare_chunks,
    render_chunk,
    render_region_lazy,
)
from .plan import LazyPlan
from .spec import BATCH_BF16, BATCH_DEFAULT, LazySpec, MemoryPhaseCache, PhaseCache

__all__ = [
    "BATCH_BF16",
    "BATCH_DEFAULT",
    "BORDER_DECODES",
    "LazyPlan",
    "LazySpec",
    "MemoryPhaseCache",
    "PhaseCache",
    "final_latents",
    "lazy_defaults",
    "prepare_chunks",
    "preview_scope",
    "render_chunk",
    "render_region_lazy",
    "soon_scope",
]
