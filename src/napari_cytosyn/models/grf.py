"""Gaussian-random-field test model: an exact denoiser, no training, every protocol path.

The latent prior is a stationary Gaussian random field (4 independent channels, separable
Matérn-3/2 covariance, unit variance), so the exact posterior mean of ``z_t = alpha z0 + sigma
eps`` is the Wiener filter ``alpha C (alpha^2 C + sigma^2 I)^-1 z_t``. :meth:`GRFModel.denoise`
computes it from the window it is given alone, as an ideal network trained on crops of that size
would: called window by window it makes the honest boundary error of a denoiser that cannot see
past its window, so seams and blending are measured exactly and fast. ``boundary="periodic"``
uses the FFT filter with wrap-around instead (harsher errors, a stress test).

The "autoencoder" is linear with ``latent_factor = 8``: bilinear 8x upsampling and a fixed 3x4
colour matrix (one latent direction invisible, like a VAE's null space) plus an H&E base colour;
encode inverts it. Bilinear decoding needs a 1-latent halo, so tiled decoding is exercised.
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


def _matern32(lag: torch.Tensor, length: float) -> torch.Tensor:
    """Matérn-3/2 correlation ``(1 + √3 d / ℓ) exp(-√3 d / ℓ)`` (unit at lag 0)."""
    r = math.sqrt(3.0) * lag.abs() / length
    return (1.0 + r) * torch.exp(-r)


def _matern32_power(freq: torch.Tensor, length: float) -> torch.Tensor:
    """Its spectral density (up to a constant), ``(3 / ℓ² + (2π k)²)^-2``."""
    return (3.0 / length**2 + (2.0 * math.pi * freq) ** 2) ** -2


@dataclass
class GRFModel:
    """Stationary GRF latent prior with its exact denoiser (see module doc).

    ``lengths_latent``: correlation length per channel, in latents; ``tile_px``: the native window
    (224 like CytoSyn); ``boundary``: ``exact`` (the posterior mean given only the window) or
    ``periodic`` (FFT Wiener filter with wrap-around, harsher, for stress tests).
    """

    name: str = "grf"
    mpp: float = 0.5
    tile_px: int = 224
    latent_factor: int = 8
    latent_channels: int = 4
    lengths_latent: tuple[float, ...] = (1.5, 2.5, 4.0, 2.0)
    boundary: str = "exact"
    interpolant: Interpolant = field(default_factory=FlowInterpolant)
    calls: int = 0
    windows: int = 0
    _eig: dict = field(default_factory=dict, repr=False)
    _spec: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if len(self.lengths_latent) != self.latent_channels:
            raise ValueError(
                f"lengths_latent needs one length per channel ({self.latent_channels}), "
                f"got {len(self.lengths_latent)}"
            )
        if self.boundary not in ("exact", "periodic"):
            raise ValueError(f"boundary must be 'exact' or 'periodic', got {self.boundary!r}")

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def _eigen1d(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per channel eigen-decomposition of the 1-D n x n correlation matrix."""
        if n not in self._eig:
            idx = torch.arange(n, dtype=torch.float64)
            lag = idx[:, None] - idx[None, :]
            cov = torch.stack([_matern32(lag, ell) for ell in self.lengths_latent])
            vals, vecs = torch.linalg.eigh(cov)
            self._eig[n] = (vals.clamp(min=0.0), vecs)
        return self._eig[n]

    def _periodic1d(self, n: int) -> torch.Tensor:
        """Per channel 1-D spectrum on the n-point FFT grid, normalised to unit variance."""
        if n not in self._spec:
            fine = torch.fft.fftfreq(4096, dtype=torch.float64)
            f = torch.fft.fftfreq(n, dtype=torch.float64)
            self._spec[n] = torch.stack(
                [
                    _matern32_power(f, ell) / _matern32_power(fine, ell).mean()
                    for ell in self.lengths_latent
                ]
            )
        return self._spec[n]

    def sample_prior(self, h: int, w: int, generator: torch.Generator) -> torch.Tensor:
        """An exact prior sample ``(C, h, w)`` float32 (for tests)."""
        (vy, uy), (vx, ux) = self._eigen1d(h), self._eigen1d(w)
        white = torch.randn((self.latent_channels, h, w), generator=generator, dtype=torch.float64)
        coef = white * (vy[:, :, None] * vx[:, None, :]).sqrt()
        return torch.einsum("cij,cjk,clk->cil", uy, coef, ux).float()

    def denoise(
        self, z_t: torch.Tensor, t: torch.Tensor, cond: Any = None, guidance: float = 1.0
    ) -> torch.Tensor:
        """Posterior mean ``E[z0 | z_t]`` given only each window ``(B, C, h, w)``; ``t`` ``(B,)``.

        The covariance is separable, ``C = C_y ⊗ C_x``, so the exact filter
        ``alpha C (alpha² C + sigma² I)^-1`` is applied in the product eigenbasis; ``guidance``
        and ``cond`` are ignored (the prior is unconditional).
        """
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
        z = z_t.to(torch.float64)
        if self.boundary == "periodic":
            lam = self._periodic1d(h)[:, :, None] * self._periodic1d(w)[:, None, :]
            gain = a * lam / (a * a * lam + s * s)
            return torch.fft.ifft2(torch.fft.fft2(z) * gain).real.to(torch.float32)
        (vy, uy), (vx, ux) = self._eigen1d(h), self._eigen1d(w)
        lam = vy[:, :, None] * vx[:, None, :]
        gain = a * lam / (a * a * lam + s * s)
        coef = torch.einsum("cji,bcjk,ckl->bcil", uy, z, ux) * gain
        return torch.einsum("cij,bcjk,clk->bcil", uy, coef, ux).to(torch.float32)

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
            "covariance": "separable Matern-3/2",
            "boundary": self.boundary,
            "tile_px": self.tile_px,
            "latent_factor": self.latent_factor,
            "latent_channels": self.latent_channels,
            "mpp": self.mpp,
        }


@dataclass
class ConditionalGRFModel(GRFModel):
    """The GRF model with a reference condition: the prior mean of the latent.

    ``embed(rgb)`` is the spatial mean of the encoded latent ``(B, C)`` (a reference's "kind of
    tissue" is its mean colour); ``denoise`` is exact for the prior ``z0 = mu + GRF``,
    ``E[z0 | z_t] = mu + W (z_t - alpha mu)`` with ``mu = cond`` (``None`` or the unconditional
    string: 0) and guidance ``x0_u + g (x0_c - x0_u)``. Generated tissue takes the reference's mean
    colour exactly, so conditioning paths are checked on values.
    """

    name: str = "grf-conditional"

    @property
    def conditional(self) -> bool:
        return True

    def embed(self, rgb: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [-1, 1] (H, W multiples of 8) -> ``(B, C)`` float32."""
        return self.encode(rgb).mean(dim=(2, 3))

    def denoise(
        self, z_t: torch.Tensor, t: torch.Tensor, cond: Any = None, guidance: float = 1.0
    ) -> torch.Tensor:
        """Posterior mean under the prior mean ``cond`` (see class doc)."""
        x0_u = super().denoise(z_t, t)
        if cond is None or isinstance(cond, str):
            return x0_u
        b, c = z_t.shape[:2]
        mu = torch.as_tensor(cond, dtype=torch.float32).reshape(-1, c)
        if mu.shape[0] not in (1, b):
            raise ValueError(f"cond has {mu.shape[0]} rows for a batch of {b} windows")
        mu = mu.expand(b, c)[:, :, None, None]
        tt = torch.as_tensor(t, dtype=torch.float32).reshape(-1).expand(b)
        a = self.interpolant.alpha(tt).reshape(b, 1, 1, 1)
        self.calls -= 1  # the shifted call below is the same model evaluation
        self.windows -= b
        x0_c = mu + super().denoise(z_t - a * mu, t)
        return x0_u + guidance * (x0_c - x0_u)

    def provenance(self) -> dict[str, Any]:
        return {**super().provenance(), "kind": "conditional gaussian-random-field test model"}
