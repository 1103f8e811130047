"""Time grids for the samplers (protocol time: t = 1 noise, t = 0 clean)."""

from __future__ import annotations


def shift_time(t: float, shift: float) -> float:
    """SD3 time shift ``s t / (1 + (s - 1) t)``; ``shift > 1`` moves steps towards noise."""
    return shift * t / (1.0 + (shift - 1.0) * t)


def time_grid(steps: int, shift: float = 1.0) -> list[float]:
    """``steps + 1`` decreasing times from exactly 1.0 to exactly 0.0 (python floats).

    Uniform in ``t`` before the optional :func:`shift_time`.
    """
    if steps < 1:
        raise ValueError(f"a time grid needs steps >= 1, got {steps}")
    grid = [shift_time(1.0 - i / steps, shift) for i in range(steps + 1)]
    grid[0], grid[-1] = 1.0, 0.0
    return grid
