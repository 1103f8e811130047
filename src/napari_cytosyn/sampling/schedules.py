"""Time grids for the samplers (protocol time: t = 1 noise, t = 0 clean)."""

from __future__ import annotations

from .sampler_table import SDE_LAST_T, sampler_info


def shift_time(t: float, shift: float) -> float:
    """SD3 time shift ``s t / (1 + (s - 1) t)``; ``shift > 1`` moves steps towards noise."""
    return shift * t / (1.0 + (shift - 1.0) * t)


def time_grid(steps: int, shift: float = 1.0, sampler: str = "euler") -> list[float]:
    """``steps + 1`` decreasing times from exactly 1.0 to exactly 0.0 (python floats).

    The sampler's grid (:mod:`.sampler_table`): ``uniform`` in ``t``, or REPA-E's SDE grid
    ``linspace(1, 0.04, steps)`` followed by 0; then the optional :func:`shift_time`.
    """
    if steps < 1:
        raise ValueError(f"a time grid needs steps >= 1, got {steps}")
    if sampler_info(sampler).grid == "repa_sde":
        if steps == 1:
            base = [1.0, 0.0]
        else:
            base = [1.0 - (1.0 - SDE_LAST_T) * i / (steps - 1) for i in range(steps)] + [0.0]
    else:
        base = [1.0 - i / steps for i in range(steps + 1)]
    grid = [shift_time(t, shift) for t in base]
    grid[0], grid[-1] = 1.0, 0.0
    return grid
