"""Gaussian-random-field test model: an exact denoiser, no training, every protocol path.

The latent prior is a stationary Gaussian random field, each of the 4 channels independent with
a Matérn-like power spectrum ``P(k) ∝ (1 + (2π |k| ℓ)^2)^-(ν + 1)`` normalised to unit variance.
For ``z_t = alpha z0 + sigma eps`` the exact posterior mean is the Wiener filter
``Z0(k) = alpha P(k) / (alpha^2 P(k) + sigma^2) Z_t(k)``. :meth:`GRFModel.denoise` applies it
with an FFT over whatever window it is given, i.e. with periodic boundaries: called window by
window it makes boundary errors at window edges the way a real network does, so seams and
blending can be measured exactly and fast.

The "autoencoder" is linear, ``latent_factor = 8``: decode = bilinear 8x upsampling followed
by a fixed 3x4 colour matrix (one latent direction is invisible, like a VAE's null space) plus
an H&E-like base colour; encode = 8x8 average pooling and the pseudo-inverse of the matrix.
Bilinear decoding needs a 1-latent halo, so tiled decoding is exercised for real.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from .protocol import FlowInterpolant, Interpolant

# Colour matrix: latent channels -> RGB in [-1, 1] units (haematoxylin-ish, eosin-ish, light).
_MIX = torch.tensor(
    [
        [-0.10, 0.20, 0.12, 0.05],
        [-0.18, -0.12, 0.12, 0.05],
        [0.06, 0.10, 0.12, -0.05],
    ],
    dtype=torch.float32,
)
_BASE = torch.tensor([0.55, 0.05, 0.45], dtype=torch.float32)


def _power(freq_y: torch.Tensor, freq_x: torch.Tensor, length: float, nu: float) -> torch.Tensor:
    k2 = freq_y[:, None] ** 2 + freq_x[None, :] ** 2
    return (1.0 + (2.0 * math.pi) ** 2 * length**2 * k2) ** (-(nu + 1.0))


@dataclass
class GRFModel:
    """Stationary GRF latent prior with its exact Wiener-filter denoiser (see module doc).

    Parameters
    ----------
    lengths_latent: correlation length of each latent channel, in latents.
    nu: smoothness of the Matérn spectrum.
    tile_px: the native "tile" (window) of the model in pixels; 224 like CytoSyn.
    """

    name: str = "grf"
    mpp: float = 0.5
    tile_px: int = 224
    latent_factor: int = 8
    latent_channels: int = 4
    lengths_latent: tuple[float, ...] = (1.5, 2.5, 4.0, 2.0)
    nu: float = 1.0
    interpolant: Interpolant = field(default_factory=FlowInterpolant)
    calls: int = 0
    windows: int = 0
    _norm: list[float] = field(default_factory=list, repr=False)
    _gains: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if len(self.lengths_latent) != self.latent_channels:
            raise ValueError(
                f"lengths_latent needs one length per channel ({self.latent_channels}), "
                f"got {len(self.lengths_latent)}"
            )
        # Normalise each spectrum so the field has unit variance per latent (mean of P over a
        # fine frequency grid = variance of the field on the infinite lattice).
        f = torch.fft.fftfreq(512, dtype=torch.float64)
        self._norm = [float(_power(f, f, ell, self.nu).mean()) for ell in self.lengths_latent]

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def power(self, h: int, w: int) -> torch.Tensor:
        """Power spectrum ``(C, h, w // 2 + 1)`` float64 on the rfft2 grid of an h x w window."""
        fy = torch.fft.fftfreq(h, dtype=torch.float64)
        fx = torch.fft.rfftfreq(w, dtype=torch.float64)
        return torch.stack(
            [
                _power(fy, fx, ell, self.nu) / n
                for ell, n in zip(self.lengths_latent, self._norm, strict=True)
            ]
        )

    def sample_prior(self, h: int, w: int, generator: torch.Generator) -> torch.Tensor:
        """An exact periodic prior sample ``(C, h, w)`` float32 (for tests)."""
        white = torch.randn((self.latent_channels, h, w), generator=generator, dtype=torch.float64)
        spec = torch.fft.rfft2(white) * self.power(h, w).sqrt()
        return torch.fft.irfft2(spec, s=(h, w)).float()

    def denoise(
        self, z_t: torch.Tensor, t: torch.Tensor, cond: Any = None, guidance: float = 1.0
    ) -> torch.Tensor:
        """Exact periodic-GRF x0 for each window of ``z_t`` ``(B, C, h, w)``; ``t`` ``(B,)``."""
        if z_t.ndim != 4 or z_t.shape[1] != self.latent_channels:
            raise ValueError(
                f"GRFModel.denoise expects (B, {self.latent_channels}, h, w), "
                f"got {tuple(z_t.shape)}"
            )
        b, _, h, w = z_t.shape
        self.calls += 1
        self.windows += b
        tt = torch.as_tensor(t, dtype=torch.float64).reshape(-1).expand(b)
        a = self.interpolant.alpha(tt).reshape(b, 1, 1, 1)
        s = self.interpolant.sigma(tt).reshape(b, 1, 1, 1)
        key = (h, w)
        if key not in self._gains:
            self._gains[key] = self.power(h, w)
        p = self._gains[key].unsqueeze(0)
        gain = a * p / (a * a * p + s * s)
        spec = torch.fft.rfft2(z_t.to(torch.float64)) * gain
        return torch.fft.irfft2(spec, s=(h, w)).to(torch.float32)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, 4, h, w)`` latent -> ``(B, 3, 8h, 8w)`` float32 RGB in [-1, 1]."""
        up = F.interpolate(
            z.float(), scale_factor=self.latent_factor, mode="bilinear", align_corners=False
        )
        rgb = torch.einsum("rc,bchw->brhw", _MIX, up) + _BASE.reshape(1, 3, 1, 1)
        return rgb.clamp(-1.0, 1.0)

    def encode(self, rgb: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [-1, 1] (H, W multiples of 8) -> ``(B, 4, H/8, W/8)`` latent."""
        f = self.latent_factor
        if rgb.shape[-1] % f or rgb.shape[-2] % f:
            raise ValueError(
                f"GRFModel.encode needs H and W divisible by {f}, got {tuple(rgb.shape)}"
            )
        pooled = F.avg_pool2d(rgb.float(), f) - _BASE.reshape(1, 3, 1, 1)
        return torch.einsum("cr,brhw->bchw", torch.linalg.pinv(_MIX), pooled)

    def provenance(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "gaussian-random-field test model",
            "lengths_latent": list(self.lengths_latent),
            "nu": self.nu,
            "tile_px": self.tile_px,
            "latent_factor": self.latent_factor,
            "latent_channels": self.latent_channels,
            "mpp": self.mpp,
        }
