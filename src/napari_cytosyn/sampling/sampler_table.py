"""The one table of samplers: name, model calls per step, noise use, time grid (no torch here).

:mod:`.samplers` implements ``sample_<name>`` for each row; settings validate against
:data:`SAMPLERS`; :func:`.schedules.time_grid` builds the grid a row names:
- ``uniform``: ``steps + 1`` times evenly from 1 to 0 (optionally shifted);
- ``repa_sde``: REPA-E's Euler-Maruyama grid, ``steps`` times evenly from 1 to
  :data:`SDE_LAST_T` then 0 (the last step is a deterministic drift step).
"""

from __future__ import annotations

from dataclasses import dataclass

#: REPA-E's SDE sampler integrates stochastically down to this time, then steps to 0.
SDE_LAST_T = 0.04


@dataclass(frozen=True)
class SamplerInfo:
    """One sampler. ``calls_per_step``: model evaluations per step (cost accounting)."""

    name: str
    calls_per_step: int
    stochastic: bool
    grid: str
    description: str


SAMPLER_TABLE: dict[str, SamplerInfo] = {
    s.name: s
    for s in (
        SamplerInfo(
            "euler", 1, False, "uniform", "Euler on the probability-flow ODE (DDIM for VP models)"
        ),
        SamplerInfo(
            "euler_maruyama",
            1,
            True,
            "repa_sde",
            "Euler-Maruyama on the reverse SDE, w(t) = 2t, REPA-E's time grid and last step",
        ),
        SamplerInfo("ancestral", 1, True, "uniform", "DDPM ancestral (DDIM eta = 1)"),
        SamplerInfo("heun", 2, False, "uniform", "Heun, 2nd order (EDM Alg. 1)"),
        SamplerInfo("dpmpp_2m", 1, False, "uniform", "DPM-Solver++(2M), PixCell's sampler"),
    )
}

SAMPLERS: tuple[str, ...] = tuple(SAMPLER_TABLE)
STOCHASTIC_SAMPLERS: tuple[str, ...] = tuple(n for n, s in SAMPLER_TABLE.items() if s.stochastic)


def sampler_info(name: str) -> SamplerInfo:
    """The row for ``name``; ``ValueError`` naming the choices."""
    try:
        return SAMPLER_TABLE[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLERS)}") from None
