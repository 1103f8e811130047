"""Samplers as pure functions over an x0 denoiser (k-diffusion style).

``sample_x(denoise, x, ts, interpolant, *, noise=None, step_offset=0, project=None) -> x``
moves ``x`` along the decreasing times ``ts`` (t = 1 noise), where ``denoise(x, t) -> x0_hat``;
``noise(i)`` is the fresh standard normal noise of absolute step ``i`` (stochastic samplers;
tiling code gives lattice-anchored noise); ``step_offset`` is the absolute index of ``ts[0]``;
``project(i, t_next, x)`` maps the state after each step (inpainting re-imposes the known
latents).

Each sampler is written as one step (:func:`_sampler` runs the loop) and is a row of
:data:`.sampler_table.SAMPLER_TABLE`. Euler, Euler-Maruyama and DPM-Solver++(2M) follow REPA-E's
and PixCell's reference samplers (``tests/models/reference/samplers.json``). They work on any
interpolant ``x_t = alpha(t) x0 + sigma(t) eps``. Multistep state lives inside one call: a call
on a sub-range of the grid restarts with a first-order step, which is what lazy phases do.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ..models.latent import NonFiniteOutputError
from ..models.protocol import Interpolant
from .precision import network_scope, resolve_autocast
from .sampler_table import sampler_info

Denoiser = Callable[[torch.Tensor, float], torch.Tensor]
NoiseFn = Callable[[int], torch.Tensor]
ProjectFn = Callable[[int, float, torch.Tensor], torch.Tensor]


def alpha_sigma(interpolant: Interpolant, t: float) -> tuple[float, float]:
    """``(alpha(t), sigma(t))`` as python floats."""
    tt = torch.tensor([t], dtype=torch.float64)
    return float(interpolant.alpha(tt)[0]), float(interpolant.sigma(tt)[0])


def _derivatives(interpolant: Interpolant, t: float) -> tuple[float, float]:
    if interpolant.name == "flow":
        return -1.0, 1.0
    d = 1e-4
    lo, hi = max(0.0, t - d), min(1.0, t + d)
    a0, s0 = alpha_sigma(interpolant, lo)
    a1, s1 = alpha_sigma(interpolant, hi)
    return (a1 - a0) / (hi - lo), (s1 - s0) / (hi - lo)


def check_finite(
    x: torch.Tensor, what: str, step: int, t: float, t_next: float, dtype: Any = None
) -> None:
    """Raise :class:`NonFiniteOutputError` naming the step and dtype if ``x`` has NaN/inf.

    ``dtype`` is the dtype the model computed in (defaults to ``x.dtype``).
    """
    if not torch.isfinite(x).all():
        dtype = x.dtype if dtype is None else dtype
        bad = int((~torch.isfinite(x)).sum())
        hint = (
            "lower the guidance or try another sampler"
            if dtype in (torch.float32, torch.float64)
            else "run the model in float32 (dtype='float32')"
        )
        raise NonFiniteOutputError(
            f"{what} has {bad} non-finite values at step {step} (t={t:.4f} -> {t_next:.4f}) "
            f"in {dtype}; {hint}"
        )


def _eps(x: torch.Tensor, x0: torch.Tensor, a: float, s: float) -> torch.Tensor:
    return (x - a * x0) / s


def _denoise_checked(
    denoise: Denoiser, x: torch.Tensor, t: float, step: int, t_next: float
) -> torch.Tensor:
    try:
        x0 = denoise(x, t)
    except NonFiniteOutputError as err:
        raise NonFiniteOutputError(f"at step {step} (t={t:.4f} -> {t_next:.4f}): {err}") from err
    check_finite(x0, "denoiser output", step, t, t_next, getattr(denoise, "model_dtype", None))
    return x0


@dataclass(frozen=True)
class Step:
    """One step of a sampler call: absolute index ``i``, times ``t -> tn``, the interpolant's
    ``(a, s)`` at ``t`` and ``(an, sn)`` at ``tn``; ``last``: the last step of this call."""

    i: int
    t: float
    tn: float
    a: float
    s: float
    an: float
    sn: float
    last: bool


StepFn = Callable[[Denoiser, torch.Tensor, Step, Interpolant, "NoiseFn | None", dict], torch.Tensor]


def _sampler(step: StepFn) -> Callable[..., torch.Tensor]:
    """Make ``sample_<name>`` (the signature above) from its one step
    ``step(denoise, x, st, interpolant, noise, state) -> x``.

    The loop is shared: it runs the steps of ``ts`` and ends each with the NaN check, the
    projection; ``state`` is a dict the step may keep between steps of one call.
    """
    name = step.__name__.removeprefix("sample_")
    stochastic = sampler_info(name).stochastic

    def sample(
        denoise: Denoiser,
        x: torch.Tensor,
        ts: list[float],
        interpolant: Interpolant,
        *,
        noise: NoiseFn | None = None,
        step_offset: int = 0,
        project: ProjectFn | None = None,
    ) -> torch.Tensor:
        if stochastic and noise is None:
            raise ValueError(f"the {name} sampler needs a noise source")
        state: dict = {}
        for k in range(len(ts) - 1):
            t, tn = ts[k], ts[k + 1]
            st = Step(
                step_offset + k, t, tn, *alpha_sigma(interpolant, t),
                *alpha_sigma(interpolant, tn), k == len(ts) - 2,
            )  # fmt: skip
            x = step(denoise, x, st, interpolant, noise, state)
            check_finite(x, "sampler state", st.i, t, tn)
            if project is not None:
                x = project(st.i, tn, x)
        return x

    sample.__name__ = sample.__qualname__ = step.__name__
    sample.__doc__ = step.__doc__
    return sample


def _x0(denoise: Denoiser, x: torch.Tensor, st: Step, t: float | None = None) -> torch.Tensor:
    """``denoise(x, t)`` (``t`` defaults to the step's start) with the step named in errors."""
    return _denoise_checked(denoise, x, st.t if t is None else t, st.i, st.tn)


@_sampler
def sample_euler(denoise, x, st: Step, interpolant, noise, state) -> torch.Tensor:
    """Deterministic DDIM step ``x_s = a_s x0 + s_s eps_hat`` (Song et al. 2021, eq. 12, eta=0).

    For the linear flow path this is exactly REPA-E's Euler step on the probability-flow ODE,
    ``x_s = x_t + (s - t) v`` with ``v = eps_hat - x0``, ending at t = 0 with a plain step.
    """
    x0 = _x0(denoise, x, st)
    return x0 if st.sn == 0.0 else st.an * x0 + st.sn * _eps(x, x0, st.a, st.s)


@_sampler
def sample_ancestral(denoise, x, st: Step, interpolant, noise, state) -> torch.Tensor:
    """Ancestral step: sample the Gaussian posterior ``q(x_s | x_t, x0_hat)`` (DDPM; DDIM eta=1).

    ``c^2 = s_s^2 (1 - (a_t s_s)^2 / (a_s s_t)^2)``;
    ``x_s = a_s x0 + sqrt(s_s^2 - c^2) eps_hat + c z``.
    """
    a, s, an, sn = st.a, st.s, st.an, st.sn
    x0 = _x0(denoise, x, st)
    if sn == 0.0:
        return x0
    ratio = (a * sn) / (an * s) if an > 0 else 0.0
    c = sn * math.sqrt(max(0.0, 1.0 - ratio * ratio))
    return an * x0 + math.sqrt(max(0.0, sn * sn - c * c)) * _eps(x, x0, a, s) + c * noise(st.i)


def sde_drift(
    x: torch.Tensor, x0: torch.Tensor, t: float, interpolant: Interpolant
) -> torch.Tensor:
    """Reverse-SDE drift ``d = v - w(t)/2 * score`` with REPA-E's diffusion ``w(t) = 2 t``.

    ``v = alpha' x0 + sigma' eps_hat`` and ``score = -eps_hat / sigma``, so ``d = v + t eps_hat
    / sigma``; on the linear path (``sigma = t``) ``d = x + (2 - t) v`` as in REPA-E.
    """
    a, s = alpha_sigma(interpolant, t)
    da, ds = _derivatives(interpolant, t)
    eps = _eps(x, x0, a, s)
    return da * x0 + ds * eps + (t / s) * eps


@_sampler
def sample_euler_maruyama(denoise, x, st: Step, interpolant, noise, state) -> torch.Tensor:
    """Euler–Maruyama on the reverse SDE, as REPA-E's ``euler_maruyama_sampler``.

    ``x_s = x_t + d (s - t) + sqrt(w(t)) sqrt(t - s) z`` with :func:`sde_drift` ``d`` and
    ``w(t) = 2 t``; the step that ends at t = 0 is the deterministic drift step (no noise).
    Use it on its own grid, ``time_grid(steps, sampler="euler_maruyama")`` (1 -> 0.04, then 0).
    """
    x0 = _x0(denoise, x, st)
    dt = st.tn - st.t
    x = x + sde_drift(x, x0, st.t, interpolant) * dt
    if st.tn > 0.0:
        x = x + math.sqrt(2.0 * st.t * -dt) * noise(st.i)
    return x


@_sampler
def sample_heun(denoise, x, st: Step, interpolant, noise, state) -> torch.Tensor:
    """Heun's 2nd-order method (Karras et al. 2022, Alg. 1), Euler on the step to t = 0.

    Flow path: on ``dx/dt = (x - x0_hat) / t``. Other paths: on ``dy/dsigma' = eps_hat`` with
    ``y = x / alpha``, ``sigma' = sigma / alpha`` (EDM's variables). Two model calls per step.
    """
    t, tn, a, s, an, sn = st.t, st.tn, st.a, st.s, st.an, st.sn
    x0 = _x0(denoise, x, st)
    if sn == 0.0:
        return x0
    if interpolant.name == "flow":
        d1 = (x - x0) / t
        xp = x + (tn - t) * d1
        d2 = (xp - _x0(denoise, xp, st, tn)) / tn
        return x + (tn - t) * 0.5 * (d1 + d2)
    if a == 0.0:
        return an * x0 + sn * _eps(x, x0, a, s)
    sig, sig_n = s / a, sn / an
    y = x / a
    e1 = _eps(x, x0, a, s)
    xp = an * (y + (sig_n - sig) * e1)
    e2 = _eps(xp, _x0(denoise, xp, st, tn), an, sn)
    return an * (y + (sig_n - sig) * 0.5 * (e1 + e2))


def _lam(a: float, s: float) -> float:
    if a <= 0.0:
        return -math.inf
    if s <= 0.0:
        return math.inf
    return math.log(a) - math.log(s)


@_sampler
def sample_dpmpp_2m(denoise, x, st: Step, interpolant, noise, state) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2), data prediction, in ``lambda = log(a/s)``.

    ``x_s = (s_s/s_t) x - a_s (e^{-h} - 1) D`` with ``D = (1 + 1/(2r)) x0_t - 1/(2r) x0_prev``,
    ``r = h_prev / h``; the first step of a call and the step to t = 0 are first order, and so
    is the last step of a grid of fewer than 10 steps (``lower_order_final``, as PixCell's
    reference DPM-Solver). On a VP model the uniform grid is PixCell's ``time_uniform`` grid.
    """
    x0 = _x0(denoise, x, st)
    h = _lam(st.an, st.sn) - _lam(st.a, st.s)
    x0_prev, h_prev = state.get("x0"), state.get("h", math.inf)
    state["x0"], state["h"] = x0, h
    if st.sn == 0.0:
        return x0
    d = x0
    final_low = st.tn == 0.0 and st.last and st.i + 1 < 10
    if x0_prev is not None and math.isfinite(h_prev) and math.isfinite(h) and not final_low:
        r = h_prev / h
        d = (1.0 + 1.0 / (2.0 * r)) * x0 - (1.0 / (2.0 * r)) * x0_prev
    expm = -1.0 if math.isinf(h) else math.expm1(-h)
    return (st.sn / st.s) * x - st.an * expm * d


def get_sampler(name: str):
    """The sampler function ``sample_<name>`` of a :data:`.sampler_table.SAMPLER_TABLE` row;
    raises ``ValueError`` naming the choices."""
    return globals()[f"sample_{sampler_info(name).name}"]


#: A window rectangle ``(y, x, h, w)`` in absolute latents (slide origin at 0, 0).
WindowRect = tuple[int, int, int, int]


def model_denoiser(
    model, guidance: float = 1.0, guidance_interval=(0.0, 1.0), cond=None, autocast: str = "off"
):
    """Wrap ``model.denoise`` into ``denoise(x (B, C, h, w), t) -> x0``: one model call per batch,
    guidance on its interval, under the ``autocast`` mode resolved for ``model``.

    When ``cond`` has ``for_windows(rects) -> cond`` (a per-window condition, e.g. a layout mask
    cropped with each window), the wrapper is marked ``per_window`` and takes
    ``denoise(x, t, rects)`` with one absolute latent :data:`WindowRect` per batch row, as
    :func:`~.tiling.fused_denoiser` passes them.
    """
    lo, hi = guidance_interval
    mode = resolve_autocast(autocast, model)
    per_window = callable(getattr(cond, "for_windows", None))

    def denoise(x: torch.Tensor, t: float, rects: list[WindowRect] | None = None) -> torch.Tensor:
        g = guidance if lo <= t <= hi else 1.0
        tt = torch.full((x.shape[0],), t, dtype=torch.float32)
        c = cond
        if per_window:
            if rects is None or len(rects) != x.shape[0]:
                raise ValueError(
                    "a per-window condition needs one window rectangle per batch row; "
                    "run it through the tiled engine (fused_denoiser)"
                )
            c = cond.for_windows(rects)
        with network_scope(model, mode):
            return model.denoise(x, tt, cond=c, guidance=g).float().cpu()

    denoise.model_dtype = getattr(model, "dtype", None)
    denoise.per_window = per_window
    return denoise
