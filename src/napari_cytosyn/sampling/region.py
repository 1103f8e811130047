"""Coherent region mode: one sampler over a whole canvas whose denoiser is tiled and fused."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .counter_noise import noise_field
from .samplers import CALLS_PER_STEP, alpha_sigma, get_sampler, model_denoiser
from .schedules import time_grid
from .settings import SamplerSettings, check_cancel, counting_progress
from .tiling import aligned_span, count_windows, decode_tiled, fused_denoiser, to_uint8


def window_of(model: Any, settings: SamplerSettings) -> int:
    """Window side in latents: ``settings.window_latent`` or the model's native tile."""
    if settings.window_latent is not None:
        return settings.window_latent
    return max(2, model.tile_px // model.latent_factor)


def stride_of(window: int, overlap: float) -> int:
    """Lattice stride for a window and an overlap fraction (>= 1)."""
    return max(1, round(window * (1.0 - overlap)))


@dataclass(frozen=True)
class Canvas:
    """A latent canvas: absolute origin and size in latents."""

    y: int
    x: int
    h: int
    w: int


def region_canvas(
    model: Any, settings: SamplerSettings, y_px: int, x_px: int, h_px: int, w_px: int
) -> tuple[Canvas, tuple[int, int, int, int]]:
    """The lattice-aligned latent canvas for a pixel region, and the latents to decode.

    The canvas is the union of lattice windows (stride from ``settings.overlap``) that cover the
    region's latents plus the decode halo. Returns ``(canvas, (y, x, h, w))`` where the second
    item is the decoded latent rectangle relative to the canvas.
    """
    f = model.latent_factor
    win = window_of(model, settings)
    stride = stride_of(win, settings.overlap)
    ya, yb = math.floor(y_px / f), math.ceil((y_px + h_px) / f)
    xa, xb = math.floor(x_px / f), math.ceil((x_px + w_px) / f)
    halo = settings.decode_halo_latent
    cy0, cy1 = aligned_span(ya - halo, yb + halo, win, stride)
    cx0, cx1 = aligned_span(xa - halo, xb + halo, win, stride)
    canvas = Canvas(cy0, cx0, cy1 - cy0, cx1 - cx0)
    return canvas, (ya - cy0, xa - cx0, yb - ya, xb - xa)


def initial_latent(model: Any, seed: int, canvas: Canvas) -> torch.Tensor:
    """``sigma(1) * eps`` over the canvas, ``(1, C, h, w)``; eps from the lattice noise field."""
    _, s1 = alpha_sigma(model.interpolant, 1.0)
    eps = noise_field(seed, "init", canvas.y, canvas.x, canvas.h, canvas.w, model.latent_channels)
    return (s1 * eps).unsqueeze(0)


def step_noise_fn(model: Any, seed: int, canvas: Canvas):
    """Fresh noise of absolute step ``i`` over the canvas, ``(1, C, h, w)``, lattice-anchored."""

    def fn(i: int) -> torch.Tensor:
        return noise_field(
            seed, f"step{i}", canvas.y, canvas.x, canvas.h, canvas.w, model.latent_channels
        ).unsqueeze(0)

    return fn


def sample_canvas(
    model: Any,
    settings: SamplerSettings,
    canvas: Canvas,
    x: torch.Tensor | None = None,
    ts: list[float] | None = None,
    step_offset: int = 0,
    progress=None,
    cancel: Any = None,
    cond: Any = None,
) -> torch.Tensor:
    """Run the sampler over ``canvas`` with the fused window denoiser; returns ``(1, C, h, w)``.

    ``x`` defaults to the seeded initial noise, ``ts`` to the full time grid.
    """
    win = window_of(model, settings)
    stride = stride_of(win, settings.overlap)
    if x is None:
        x = initial_latent(model, settings.seed, canvas)
    if ts is None:
        ts = time_grid(settings.steps, settings.time_shift, settings.sampler)
    nwin = count_windows(canvas.h, canvas.w, (canvas.y, canvas.x), win, stride)
    nbatch = math.ceil(nwin / settings.batch_size)
    tick = counting_progress(progress, CALLS_PER_STEP[settings.sampler] * (len(ts) - 1) * nbatch)
    base = model_denoiser(
        model, settings.guidance, settings.guidance_interval, cond, settings.autocast
    )
    denoise = fused_denoiser(
        base,
        (canvas.y, canvas.x),
        win,
        stride,
        settings.weights,
        settings.batch_size,
        seed=settings.seed if settings.shift_lattice else None,
        progress=tick,
        cancel=cancel,
    )
    sampler = get_sampler(settings.sampler)
    noise = step_noise_fn(model, settings.seed, canvas) if settings.stochastic else None
    return sampler(denoise, x, ts, model.interpolant, noise=noise, step_offset=step_offset)


def generate_region(
    model: Any,
    settings: SamplerSettings,
    y_px: int,
    x_px: int,
    h_px: int,
    w_px: int,
    progress=None,
    cancel: Any = None,
    cond: Any = None,
) -> np.ndarray:
    """Generate a coherent region; returns ``(h_px, w_px, 3)`` uint8.

    Coordinates are model-resolution pixels anchored at the slide origin (any integers; the
    region need not be a multiple of the window or of the latent factor). Windows lie on a
    lattice anchored at the origin in latents; their x0 predictions are fused with
    ``settings.weights`` inside the denoiser, and the sampler steps the whole canvas. Initial
    (and SDE) noise comes from the origin-anchored noise field, so overlapping regions share
    noise. Decoding is tiled with a halo. ``progress(done, total)`` is called after each
    window batch; ``cancel.is_set()`` is checked before each batch (raises ``Cancelled``).
    """
    if h_px < 1 or w_px < 1:
        raise ValueError(f"region size must be positive, got {h_px}x{w_px} px")
    check_cancel(cancel)
    canvas, rect = region_canvas(model, settings, y_px, x_px, h_px, w_px)
    z = sample_canvas(model, settings, canvas, progress=progress, cancel=cancel, cond=cond)
    rgb = decode_tiled(
        model,
        z[0],
        rect,
        settings.decode_tile_latent,
        settings.decode_halo_latent,
        cancel,
        settings.decode_blend_latent,
        settings.autocast,
    )
    f = model.latent_factor
    oy = y_px - (canvas.y + rect[0]) * f
    ox = x_px - (canvas.x + rect[1]) * f
    return to_uint8(rgb[:, oy : oy + h_px, ox : ox + w_px])
