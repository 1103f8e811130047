"""Coherent region mode: one sampler over a whole canvas whose denoiser is tiled and fused."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from .counter_noise import noise_field
from .sampler_table import sampler_info
from .samplers import alpha_sigma, get_sampler, model_denoiser
from .schedules import time_grid
from .settings import SamplerSettings, check_cancel, counting_progress
from .tiling import aligned_span, count_windows, decode_tiled, fused_denoiser, on_cpu, to_uint8


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

    The canvas is the union of lattice windows (stride from ``settings.region.overlap``) that
    cover the region's latents plus the decode halo. Returns ``(canvas, (y, x, h, w))`` where the
    second item is the decoded latent rectangle relative to the canvas.
    """
    f = model.latent_factor
    win = window_of(model, settings)
    stride = stride_of(win, settings.region.overlap)
    ya, yb = math.floor(y_px / f), math.ceil((y_px + h_px) / f)
    xa, xb = math.floor(x_px / f), math.ceil((x_px + w_px) / f)
    halo = settings.decode.halo_latent
    cy0, cy1 = aligned_span(ya - halo, yb + halo, win, stride)
    cx0, cx1 = aligned_span(xa - halo, xb + halo, win, stride)
    canvas = Canvas(cy0, cx0, cy1 - cy0, cx1 - cx0)
    return canvas, (ya - cy0, xa - cx0, yb - ya, xb - xa)


def canvas_noise(model: Any, seed: int, stream: str, canvas: Canvas) -> torch.Tensor:
    """The lattice-anchored noise field ``stream`` over the canvas, ``(1, C, h, w)``."""
    c = model.latent_channels
    return noise_field(seed, stream, canvas.y, canvas.x, canvas.h, canvas.w, c).unsqueeze(0)


class Projection(Protocol):
    """What turns region mode into inpainting: a constraint re-imposed at every step.

    ``start()``: the initial state ``(1, C, h, w)``; ``x0(t, x0)``: the denoiser's estimate with the
    constraint applied; ``state(i, t_next, x)``: the state after step ``i``.
    """

    def start(self) -> torch.Tensor: ...

    def x0(self, t: float, x0: torch.Tensor) -> torch.Tensor: ...

    def state(self, i: int, t_next: float, x: torch.Tensor) -> torch.Tensor: ...


def resample_segments(settings: SamplerSettings) -> list[tuple[int, int, int]]:
    """RePaint's schedule: ``(first_step, end_step, passes)`` per segment of the time grid
    (Lugmayr et al. 2022); one pass over the whole grid without resampling."""
    st = settings
    jumps = st.inpaint.resample_jumps if st.inpaint.resample_n > 1 else 0
    if not jumps:
        return [(0, st.steps, 1)]
    bounds = [(i, min(i + jumps, st.steps)) for i in range(0, st.steps, jumps)]
    return [
        (a, b, st.inpaint.resample_n if n < len(bounds) - 1 else 1)
        for n, (a, b) in enumerate(bounds)
    ]


def sample_canvas(
    model: Any,
    settings: SamplerSettings,
    canvas: Canvas,
    progress=None,
    cancel: Any = None,
    cond: Any = None,
    projection: Projection | None = None,
) -> torch.Tensor:
    """Run the sampler over ``canvas`` with the fused window denoiser; returns ``(1, C, h, w)``.

    A ``projection`` (inpainting) constrains the denoiser's estimate and the state after every
    step, and brings RePaint resampling (:func:`resample_segments`): a segment's later passes start
    from its end state re-noised back to its start with fresh seeded noise.
    """
    st = settings
    win = window_of(model, st)
    stride = stride_of(win, st.region.overlap)
    ts = time_grid(st.steps, st.time_shift, st.sampler)
    segments = resample_segments(st) if projection is not None else [(0, st.steps, 1)]
    steps = sum((b - a) * n for a, b, n in segments)
    nwin = count_windows(canvas.h, canvas.w, (canvas.y, canvas.x), win, stride)
    nbatch = math.ceil(nwin / st.region.batch_size)
    tick = counting_progress(progress, steps * sampler_info(st.sampler).calls_per_step * nbatch)
    base = model_denoiser(model, st.guidance, st.guidance_interval, cond, st.autocast)
    denoise = fused_denoiser(
        base,
        (canvas.y, canvas.x),
        win,
        stride,
        st.region.weights,
        st.region.batch_size,
        seed=st.seed if st.region.shift_lattice else None,
        progress=tick,
        cancel=cancel,
        cpu=on_cpu(model),
    )
    sampler = get_sampler(st.sampler)
    noise = (lambda i: canvas_noise(model, st.seed, f"step{i}", canvas)) if st.stochastic else None
    if projection is None:
        x = alpha_sigma(model.interpolant, 1.0)[1] * canvas_noise(model, st.seed, "init", canvas)
        return sampler(denoise, x, ts, model.interpolant, noise=noise)

    fused = denoise

    def denoise(x: torch.Tensor, t: float) -> torch.Tensor:
        return projection.x0(t, fused(x, t))

    denoise.model_dtype = fused.model_dtype
    x = projection.start()
    for a, b, passes in segments:
        start = x
        for r in range(passes):
            if r > 0:
                z = canvas_noise(model, st.seed, f"repaint{b}_{r}", canvas)
                renoised = renoise(x, model.interpolant, ts[b], ts[a], z)
                start = projection.state(a - 1, ts[a], renoised)
            x = sampler(
                denoise,
                start,
                ts[a : b + 1],
                model.interpolant,
                noise=noise,
                step_offset=a,
                project=projection.state,
            )
    return x


def renoise(
    x: torch.Tensor, interp: Any, t_from: float, t_to: float, z: torch.Tensor
) -> torch.Tensor:
    """Forward-noise ``x_{t_from}`` to ``t_to > t_from`` with standard normal ``z``."""
    a, s = alpha_sigma(interp, t_from)
    a2, s2 = alpha_sigma(interp, t_to)
    r = a2 / a
    return r * x + math.sqrt(max(0.0, s2 * s2 - (r * s) ** 2)) * z


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

    Coordinates are model-resolution pixels anchored at the slide origin (any integers). Windows
    lie on an origin-anchored latent lattice and are fused inside the denoiser; noise comes from the
    origin-anchored field, so overlapping regions share it. ``progress(done, total)`` after each
    window batch; ``cancel.is_set()`` before each (raises ``Cancelled``).
    """
    if h_px < 1 or w_px < 1:
        raise ValueError(f"region size must be positive, got {h_px}x{w_px} px")
    check_cancel(cancel)
    canvas, rect = region_canvas(model, settings, y_px, x_px, h_px, w_px)
    z = sample_canvas(model, settings, canvas, progress=progress, cancel=cancel, cond=cond)
    rgb = decode_tiled(model, z[0], rect, settings.decode, settings.autocast, cancel)
    f = model.latent_factor
    oy = y_px - (canvas.y + rect[0]) * f
    ox = x_px - (canvas.x + rect[1]) * f
    return to_uint8(rgb[:, oy : oy + h_px, ox : ox + w_px])
