"""Evaluating a lazy plan's missing states in model batches of a fixed size.

The states a request needs are computed phase by phase, bottom-up, ``spec.batch`` windows
per model call; the last, partly empty batch of a phase is filled with work for cells
wanted next (whole dependency cones first) instead of zeros, since a window's result does
not depend on its batch partners, only on the batch size. Each phase's cells are taken
nearest the request's centre first. :func:`preview_scope` lets a viewer see every batch's
early x0 estimate, and :func:`soon_scope` get the first one as soon as possible.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from ..counter_noise import noise_field
from ..settings import ThreadValue, check_cancel
from ..threads import model_workers, parallel_calls

_PREVIEW = ThreadValue()  # this thread's preview_scope callback
_SOON = ThreadValue()  # this thread's soon_scope flag


def preview_scope(callback: Any) -> contextlib.AbstractContextManager[None]:
    """Within the block, every model call of lazy mode made by this thread reports its early
    x0 estimate: ``callback(model, rects, x0)``, ``rects`` the absolute latent rectangles
    ``(y, x, h, w)`` of the windows' kept parts, ``x0`` ``(n, C, h, w)`` float32 on the CPU
    (a copy). A viewer uses it to show a provisional picture of a chunk long before it is
    finished. Reporting never changes a pixel; ``None`` reports nothing."""
    return _PREVIEW.scope(callback)


def soon_scope() -> contextlib.AbstractContextManager[None]:
    """Within the block, a lazy pass of this thread that reports previews
    (:func:`preview_scope`) first reports a quick estimate: the x0 of the window nearest the
    request's centre, from a model call of that one window (a third of a padded batch's cost
    on a CPU), before the batches run. The estimate is only shown, never stored: the window
    is evaluated again in its fixed-size batch, so no pixel changes."""
    return _SOON.scope(True)


def prepare_cells(
    plan: Any,
    p: int,
    cells: set[tuple[int, int]],
    then: list[set[tuple[int, int]]] | None = None,
) -> None:
    """Compute every missing state that the given cells of phase ``p`` depend on, and them.

    Each phase's missing cells are evaluated bottom-up, ``spec.batch`` windows per model
    call. ``then``: cells of phase ``p`` wanted next, most urgent first; the last, partly
    empty batch of each phase is filled with their work instead of zeros (a window's result
    does not depend on its batch partners): first whole cones that fit in every phase, then
    cells of their cones whose inputs are ready; and so are the batches that would leave one
    of the :func:`~..threads.model_workers` idle at the end of a phase.
    """
    known: dict[tuple[int, int, int], bool] = {}  # cached() answers until a batch runs
    missing = plan.cone(p, cells, known)
    centre = _centre(plan, p, cells)
    for q, m in enumerate(missing):
        m.sort(key=lambda c, q=q: _distance2(plan, q, c, centre))
    preview = _PREVIEW.get()  # the pool's threads do not see this thread's scope
    if _SOON.get() and preview is not None:
        q = next((q for q, m in enumerate(missing) if m), None)
        if q is not None:
            estimate_one(plan, q, missing[q][0], preview)
    sizes = [plan.spec.batch_of(q) for q in range(len(plan.phases))]
    if then and any(len(m) % b for m, b in zip(missing, sizes, strict=True)):
        fill_with_cones(plan, p, missing, then, known)
    # A phase's batches run side by side: wished work also fills the batches that would
    # leave a worker idle at the phase's end (no wall time on an idle machine).
    workers = model_workers() if plan.on_cpu else 1
    wish: list[list[tuple[int, int]]] = [[] for _ in plan.phases]
    for later in then or ():
        if all(len(m) % (b * workers) == 0 for m, b in zip(missing, sizes, strict=True)):
            break
        for q, cone_q in enumerate(plan.cone(p, later, known)):
            wish[q].extend(cone_q)

    def evolve(job: tuple[int, list[tuple[int, int]]]) -> None:
        q, members = job
        outs = run_batch(plan, plan.phases[q], members, preview)
        for key, out in zip(members, outs, strict=True):
            plan.cache.put((q, *key), out)

    for q, todo_q in enumerate(missing):
        b = sizes[q]
        short = -len(todo_q) % (b * workers)
        if short and wish[q]:
            taken = set(todo_q)
            for cell in wish[q]:
                if short == 0:
                    break
                if cell in taken or plan.cached((q, *cell)):
                    continue
                if q > 0 and not all(plan.cached((q - 1, *d)) for d in plan.deps(q, *cell)):
                    continue
                todo_q.append(cell)
                taken.add(cell)
                short -= 1
        # The batches of a phase are independent: side by side on the cores.
        jobs = [(q, todo_q[k : k + b]) for k in range(0, len(todo_q), b)]
        parallel_calls(evolve, jobs, plan.on_cpu)


def _centre(plan: Any, p: int, cells: set[tuple[int, int]]) -> tuple[float, float]:
    """Absolute latent position of the centre of phase ``p``'s ``cells`` (their mean)."""
    ph = plan.phases[p]
    ys, xs = zip(*(plan.origin(ph, i, j) for i, j in cells), strict=True)
    return sum(ys) / len(ys) + ph.extent / 2, sum(xs) / len(xs) + ph.extent / 2


def _distance2(plan: Any, q: int, cell: tuple[int, int], centre: tuple[float, float]) -> float:
    ph = plan.phases[q]
    y, x = plan.origin(ph, *cell)
    return (y + ph.extent / 2 - centre[0]) ** 2 + (x + ph.extent / 2 - centre[1]) ** 2


def fill_with_cones(
    plan: Any,
    p: int,
    missing: list[list[tuple[int, int]]],
    then: list[set[tuple[int, int]]],
    known: dict[tuple[int, int, int], bool] | None = None,
) -> None:
    """Add to ``missing`` whole dependency cones of wanted cells of phase ``p`` (most urgent
    first) wherever one fits in the free slots of every phase's last batch: a cone spans
    the phases, so its cells become computable in this pass (bottom-up). ``known``: as in
    :meth:`~.plan.LazyPlan.cone`."""
    free = [-len(m) % plan.spec.batch_of(q) for q, m in enumerate(missing)]
    taken = [set(m) for m in missing]
    for later in then:
        for cell in sorted(later):
            if not any(free):
                return
            if cell in taken[p]:
                continue
            extra = [
                [c for c in cone_q if c not in taken[q]]
                for q, cone_q in enumerate(plan.cone(p, {cell}, known))
            ]
            if not any(extra) or any(len(e) > f for e, f in zip(extra, free, strict=True)):
                continue
            for q, e in enumerate(extra):
                missing[q].extend(e)
                taken[q].update(e)
                free[q] -= len(e)


def estimate_one(plan: Any, q: int, cell: tuple[int, int], preview: Any) -> None:
    """Report to ``preview`` the x0 estimate of cell ``(q, *cell)``'s window at the start of
    phase ``q`` (its inputs must be cached), from a model call of that window alone. Its bits
    may differ from the fixed-size batch's in the last place: it is shown, never stored."""
    check_cancel(plan.cancel)
    phase = plan.phases[q]
    w, m, e = plan.window, phase.context, phase.extent
    oy, ox = plan.origin(phase, *cell)
    x = plan.input_field(q, oy - m, ox - m, w, w)[None]
    t = plan.ts[phase.first_step]
    if getattr(plan.denoise, "per_window", False):
        x0 = plan.denoise(x, t, [(oy - m, ox - m, w, w)])
    else:
        x0 = plan.denoise(x, t)
    preview(plan.model, [(oy, ox, e, e)], x0[:, :, m : m + e, m : m + e].float().cpu())


def run_batch(
    plan: Any, phase: Any, members: list[tuple[int, int]], preview: Any = None
) -> list[torch.Tensor]:
    """Evolve the windows of ``members`` through ``phase`` in one batch (padded to
    ``spec.batch`` windows) and return their kept centres; ``preview``: the
    :func:`preview_scope` callback of the thread that asked (``None``: this thread's)."""
    check_cancel(plan.cancel)
    w, m, e = plan.window, phase.context, phase.extent
    origins = [(oy - m, ox - m) for oy, ox in (plan.origin(phase, i, j) for i, j in members)]
    pad = max(0, plan.spec.batch_of(phase.index) - len(origins))
    c = plan.model.latent_channels
    x = torch.stack([plan.input_field(phase.index, oy, ox, w, w) for oy, ox in origins])
    if pad:
        x = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))])
    ts = plan.ts[phase.first_step : phase.last_step + 1]
    noise = None
    if plan.spec.settings.stochastic:

        def noise(i: int) -> torch.Tensor:
            z = torch.stack(
                [
                    noise_field(plan.spec.settings.seed, f"step{i}", oy, ox, w, w, c)
                    for oy, ox in origins
                ]
            )
            return torch.cat([z, z.new_zeros((pad, *z.shape[1:]))]) if pad else z

    real = len(origins)
    # Padded slots repeat the last window's rectangle: a per-window condition needs one.
    rects = [(oy, ox, w, w) for oy, ox in origins] + [(*origins[-1], w, w)] * pad

    preview = preview or _PREVIEW.get()
    cores = [(*plan.origin(phase, i, j), e, e) for i, j in members]

    def counted(z: torch.Tensor, t: float) -> torch.Tensor:
        check_cancel(plan.cancel)  # between model calls: Cancel acts within one call
        with plan._lock:
            plan.evaluations += real
            plan.padded_evaluations += z.shape[0] - real
        if getattr(plan.denoise, "per_window", False):
            x0 = plan.denoise(z, t, rects)
        else:
            x0 = plan.denoise(z, t)
        if preview is not None:
            preview(plan.model, cores, x0[:real, :, m : m + e, m : m + e].float().cpu())
        return x0

    counted.model_dtype = plan.denoise.model_dtype

    out = plan.sampler(
        counted, x, ts, plan.model.interpolant, noise=noise, step_offset=phase.first_step
    )
    return [o[:, m : m + e, m : m + e].contiguous() for o in out[:real]]
