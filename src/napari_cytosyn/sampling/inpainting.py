"""Inpainting: generate inside a mask, leave every pixel outside it bit-identical.

1. Encode the known image (tiled, with halo).
2. Sample over the whole canvas with the fused window denoiser; after every step the known
   latents, noised to the current level along the same noise as the initial state, replace the
   state outside the (latent-dilated) mask (Blended Latent Diffusion, Avrahami et al. 2023), and
   the denoiser's x0 there is the known latent. A band of ``release_band_latent`` latents along
   the inside of the dilated mask is released gradually: ring ``d`` (counted inwards) is
   generated only once ``t <= d / (B + 1)`` (differential diffusion, Levin & Fried 2024), so the
   border keeps the real tissue's layout and only its fine detail is regenerated.
3. Optional RePaint resampling (Lugmayr et al. 2022): every ``resample_jumps`` steps the state is
   re-noised back that many steps with fresh seeded noise and resampled, ``resample_n`` passes.
4. Decode (tiled, with halo) and composite in PIXEL space with an alpha that is 0 outside the
   user's mask and ramps up to 1 over ``feather_px`` pixels INSIDE it, so every pixel outside
   the mask is returned unchanged, bit for bit.

The caller passes the region to edit WITH a halo of real tissue around the mask (at least one
model window, ``tile_px``, on every side is recommended): the model sees that context through
the known latents, and the feather ramp needs room inside the mask, not outside.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .counter_noise import noise_field
from .region import stride_of, window_of
from .samplers import CALLS_PER_STEP, alpha_sigma, get_sampler, model_denoiser
from .schedules import time_grid
from .settings import SamplerSettings, check_cancel, counting_progress
from .tiling import count_windows, decode_tiled, encode_tiled, fused_denoiser, to_float


def _dilate(m: torch.Tensor, r: int) -> torch.Tensor:
    """Chessboard dilation of a ``(h, w)`` float {0,1} map by ``r``."""
    if r <= 0:
        return m
    return F.max_pool2d(m[None, None], 2 * r + 1, stride=1, padding=r)[0, 0]


def latent_release_times(mask: np.ndarray, f: int, dilate: int, band: int) -> torch.Tensor:
    """Per latent, the time below which it is generated (differential diffusion's change map).

    The pixel mask is max-pooled to latents and dilated by ``dilate``. Inside that latent mask,
    ring ``d`` counted inwards from its border (``d = 1`` on the border) is released at
    ``t = d / (band + 1)`` and deeper latents at ``t = 1`` (always generated); latents outside
    get ``-1`` (never generated: always the known image). The border therefore changes only at
    low noise (fine detail), the centre becomes entirely new, and the transition the feather
    ramp crosses stays close to the real tissue. ``mask``: ``(H, W)`` bool, H, W multiples of
    ``f``; returns ``(H/f, W/f)`` float64.
    """
    m = torch.from_numpy(mask.astype(np.float32))
    core = _dilate(F.max_pool2d(m[None, None], f)[0, 0], dilate)
    release = torch.where(core > 0, 1.0, -1.0).to(torch.float64)
    outside = 1.0 - core
    for d in range(1, band + 1):
        # Latents of the mask within chessboard distance d of the outside form rings 1..d.
        near = _dilate(outside, d) * core
        ring = (near > 0) & (release == 1.0)
        release = torch.where(ring, d / (band + 1), release)
    return release


def feather_alpha(mask: np.ndarray, feather_px: int) -> np.ndarray:
    """Alpha ``(H, W)`` float32: 0 outside ``mask``, ``min(d, F) / F`` inside, where d is the
    chessboard distance (>= 1) to the nearest pixel outside the mask. ``F = 0`` gives the mask."""
    m = torch.from_numpy(mask.astype(np.float32))
    if feather_px <= 0:
        return m.numpy()
    acc = torch.zeros_like(m)
    cur = m
    for _ in range(feather_px):
        acc += cur
        # Pixels beyond the image border count as inside (the mask may touch the edge).
        cur = -F.max_pool2d(-cur[None, None], 3, stride=1, padding=1)[0, 0] * m
    return (acc / feather_px).numpy()


def _renoise(x: torch.Tensor, interp, t_from: float, t_to: float, z: torch.Tensor) -> torch.Tensor:
    """Forward-noise ``x_{t_from}`` to ``t_to > t_from`` with standard normal ``z``."""
    a, s = alpha_sigma(interp, t_from)
    a2, s2 = alpha_sigma(interp, t_to)
    r = a2 / a
    return r * x + math.sqrt(max(0.0, s2 * s2 - (r * s) ** 2)) * z


def inpaint(
    model: Any,
    image: np.ndarray,
    mask: np.ndarray,
    settings: SamplerSettings,
    progress=None,
    cancel: Any = None,
    cond: Any = None,
) -> np.ndarray:
    """Fill ``mask`` of ``image`` with generated tissue; returns ``(H, W, 3)`` uint8.

    ``image``: ``(H, W, 3)`` uint8 at model resolution, the edited region plus a halo of real
    context (see module doc). ``mask``: ``(H, W)`` bool, True = generate. Every pixel where
    ``mask`` is False is bit-identical to ``image``. Any H, W >= 1 work (the canvas is padded by
    reflection to a multiple of the latent factor). ``progress(done, total)`` after each window
    batch; ``cancel.is_set()`` checked before each batch (raises ``Cancelled``). ``cond``: the
    model's condition, or a per-window one (``for_windows(rects)``, rectangles in the image's
    latents) such as a reference field built on the real tissue around the mask
    (:func:`~.conditioning.surround_field`).
    """
    image = np.asarray(image)
    mask = np.asarray(mask)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"image must be (H, W, 3) uint8, got {image.shape} {image.dtype}; convert RGBA/float "
            "images to RGB uint8 first"
        )
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image {image.shape[:2]}")
    if mask.dtype != np.bool_:
        raise ValueError(f"mask must be a boolean array, got {mask.dtype}")
    if not mask.any():
        return image.copy()
    check_cancel(cancel)
    f = model.latent_factor
    h_px, w_px = mask.shape
    hp, wp = -(-h_px // f) * f, -(-w_px // f) * f
    pad = ((0, hp - h_px), (0, wp - w_px))
    img_p = np.pad(image, (*pad, (0, 0)), mode="reflect" if min(h_px, w_px) > 1 else "edge")
    mask_p = np.pad(mask, pad, mode="edge")

    st = settings
    known = encode_tiled(
        model,
        to_float(img_p),
        st.decode_tile_latent,
        st.decode_halo_latent,
        autocast=st.autocast,
    )
    c, h, w = known.shape
    release = latent_release_times(mask_p, f, st.mask_dilate_latent, st.release_band_latent)
    interp = model.interpolant
    eps = noise_field(st.seed, "init", 0, 0, h, w, c)

    def known_at(t: float) -> torch.Tensor:
        a, s = alpha_sigma(interp, t)
        return (a * known + s * eps).unsqueeze(0)

    def free_at(t: float) -> torch.Tensor:
        return (release >= t - 1e-9).to(torch.float32)[None, None]

    ts = time_grid(st.steps, st.time_shift, st.sampler)
    jumps = st.resample_jumps if st.resample_n > 1 else 0
    segments = [(i, min(i + jumps, st.steps)) for i in range(0, st.steps, jumps)] if jumps else []
    extra = sum(b - a for a, b in segments[:-1]) * (st.resample_n - 1)
    win = window_of(model, st)
    nb = math.ceil(count_windows(h, w, (0, 0), win, stride_of(win, st.overlap)) / st.batch_size)
    tick = counting_progress(progress, (st.steps + extra) * CALLS_PER_STEP[st.sampler] * nb)

    base = model_denoiser(model, st.guidance, st.guidance_interval, cond, st.autocast)
    fused = fused_denoiser(
        base,
        (0, 0),
        win,
        stride_of(win, st.overlap),
        st.weights,
        st.batch_size,
        seed=st.seed if st.shift_lattice else None,
        progress=tick,
        cancel=cancel,
    )

    def denoise(x: torch.Tensor, t: float) -> torch.Tensor:
        free = free_at(t)
        return free * fused(x, t) + (1.0 - free) * known.unsqueeze(0)

    denoise.model_dtype = fused.model_dtype

    def project(i: int, t_next: float, x: torch.Tensor) -> torch.Tensor:
        free = free_at(t_next)
        return free * x + (1.0 - free) * known_at(t_next)

    sampler = get_sampler(st.sampler)

    def step_noise(i: int) -> torch.Tensor:
        return noise_field(st.seed, f"step{i}", 0, 0, h, w, c).unsqueeze(0)

    noise = step_noise if st.stochastic else None
    x = known_at(1.0)
    if not segments:
        segments = [(0, st.steps)]
    for n_seg, (a, b) in enumerate(segments):
        passes = st.resample_n if (jumps and n_seg < len(segments) - 1) else 1
        start = x
        for r in range(passes):
            if r > 0:
                z = noise_field(st.seed, f"repaint{b}_{r}", 0, 0, h, w, c).unsqueeze(0)
                start = project(a - 1, ts[a], _renoise(x, interp, ts[b], ts[a], z))
            x = sampler(
                denoise, start, ts[a : b + 1], interp, noise=noise, step_offset=a, project=project
            )
    rgb = decode_tiled(
        model,
        x[0],
        None,
        st.decode_tile_latent,
        st.decode_halo_latent,
        cancel,
        st.decode_blend_latent,
        st.autocast,
    )
    gen = rgb[:, :h_px, :w_px].permute(1, 2, 0).numpy()
    alpha = feather_alpha(mask, st.feather_px)[..., None]
    orig = image.astype(np.float32) / 127.5 - 1.0
    blended = alpha * gen + (1.0 - alpha) * orig
    out_f = np.clip(np.round((blended + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return np.where(mask[..., None], out_f, image)
