"""Inpainting: region mode plus a projection; every pixel outside the mask stays bit-identical.

1. Encode the known image (tiled, with halo).
2. Sample the canvas (:func:`~.region.sample_canvas`) with :class:`KnownLatents`: after every step
   the known latents, noised along the initial noise, replace the state outside the dilated
   latent mask, and the denoiser's x0 there is the known latent (Blended Latent Diffusion,
   Avrahami et al. 2023). Ring ``d`` of a ``release_band_latent`` band inside the mask is
   generated only once ``t <= d / (B + 1)`` (differential diffusion, Levin & Fried 2024), so the
   border keeps the real tissue's layout and only its fine detail is new. Optional RePaint
   resampling (Lugmayr et al. 2022).
3. Decode and composite in PIXEL space with an alpha that is 0 outside the user's mask and ramps
   to 1 over ``feather_px`` INSIDE it.

The caller passes the region WITH a halo of real tissue (a model window, ``tile_px``, on every
side is recommended): the model sees that context through the known latents.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .counter_noise import noise_field
from .region import Canvas, sample_canvas
from .samplers import alpha_sigma
from .settings import SamplerSettings, check_cancel
from .tiling import decode_tiled, encode_tiled, to_float


def _dilate(m: torch.Tensor, r: int) -> torch.Tensor:
    """Chessboard dilation of a ``(h, w)`` float {0,1} map by ``r``."""
    if r <= 0:
        return m
    return F.max_pool2d(m[None, None], 2 * r + 1, stride=1, padding=r)[0, 0]


def latent_release_times(mask: np.ndarray, f: int, dilate: int, band: int) -> torch.Tensor:
    """Per latent, the time below which it is generated (differential diffusion's change map).

    ``mask`` ``(H, W)`` bool (H, W multiples of ``f``) is max-pooled to latents and dilated by
    ``dilate``; inside, ring ``d`` counted inwards from the border is released at
    ``t = d / (band + 1)`` and deeper latents at 1; outside is ``-1`` (never generated). Returns
    ``(H/f, W/f)`` float64.
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


class KnownLatents:
    """Inpainting's projection: where a latent is not free (:func:`latent_release_times`), the
    denoiser's estimate is the known latent ``known`` ``(C, h, w)`` and the state is it noised
    to the step's time along the initial noise ``eps`` (Blended Latent Diffusion).
    """

    def __init__(
        self, known: torch.Tensor, eps: torch.Tensor, release: torch.Tensor, interpolant: Any
    ) -> None:
        self.known, self.eps, self.release, self.interpolant = known, eps, release, interpolant

    def _at(self, t: float) -> torch.Tensor:
        a, s = alpha_sigma(self.interpolant, t)
        return (a * self.known + s * self.eps).unsqueeze(0)

    def _free(self, t: float) -> torch.Tensor:
        return (self.release >= t - 1e-9).to(torch.float32)[None, None]

    def start(self) -> torch.Tensor:
        return self._at(1.0)

    def x0(self, t: float, x0: torch.Tensor) -> torch.Tensor:
        free = self._free(t)
        return free * x0 + (1.0 - free) * self.known.unsqueeze(0)

    def state(self, i: int, t_next: float, x: torch.Tensor) -> torch.Tensor:
        free = self._free(t_next)
        return free * x + (1.0 - free) * self._at(t_next)


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

    ``image``: ``(H, W, 3)`` uint8 at model resolution, the region plus a halo of real context.
    ``mask``: ``(H, W)`` bool, True = generate; every other pixel stays bit-identical. Any H, W >= 1
    (padded by reflection to the latent factor). ``progress``/``cancel`` as in region mode.
    ``cond``: the model's condition, or a per-window one such as a reference field on the real
    tissue around the mask (:func:`~.conditioning.surround_field`).
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
    known = encode_tiled(model, to_float(img_p), st.decode, st.autocast, cancel)
    c, h, w = known.shape
    release = latent_release_times(
        mask_p, f, st.inpaint.mask_dilate_latent, st.inpaint.release_band_latent
    )
    eps = noise_field(st.seed, "init", 0, 0, h, w, c)
    projection = KnownLatents(known, eps, release, model.interpolant)
    x = sample_canvas(model, st, Canvas(0, 0, h, w), progress, cancel, cond, projection)
    rgb = decode_tiled(model, x[0], None, st.decode, st.autocast, cancel)
    gen = rgb[:, :h_px, :w_px].permute(1, 2, 0).numpy()
    alpha = feather_alpha(mask, st.inpaint.feather_px)[..., None]
    orig = image.astype(np.float32) / 127.5 - 1.0
    blended = alpha * gen + (1.0 - alpha) * orig
    out_f = np.clip(np.round((blended + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return np.where(mask[..., None], out_f, image)
