"""A generic latent diffusion model: an autoencoder plus a network, adapted to the x0 protocol.

Backends (embedded default, CytoSyn, PixCell, any diffusers folder) build one of these from their
parts; nothing above this module knows what the network predicts natively.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .protocol import Interpolant, Target, prediction_to_x0

# net(z_t, t, cond) -> native prediction; ``t`` is the protocol's time in [0, 1] (B,).
NetworkFn = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]


class NonFiniteOutputError(FloatingPointError):
    """A model produced NaN or inf; carries where it happened."""


@dataclass
class LatentScaling:
    """``z_model = (z_vae - shift) * scale``, per channel when given as sequences."""

    scale: float | tuple[float, ...] = 1.0
    shift: float | tuple[float, ...] = 0.0

    def _as(self, value, z: torch.Tensor) -> torch.Tensor:
        v = torch.as_tensor(value, dtype=z.dtype, device=z.device)
        return v.reshape(1, -1, 1, 1) if v.ndim == 1 else v

    def to_model(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self._as(self.shift, z)) * self._as(self.scale, z)

    def to_vae(self, z: torch.Tensor) -> torch.Tensor:
        return z / self._as(self.scale, z) + self._as(self.shift, z)


@dataclass
class LatentDiffusion:
    """Adapter from (VAE, network) to :class:`~.protocol.LatentDiffusionModel`.

    ``vae``: diffusers ``AutoencoderKL``-like (``encode(x).latent_dist``, ``decode(z).sample``);
    ``net(z_t, t, cond)`` predicts ``target`` (``flow``, ``epsilon``, ``v`` or ``x0``); ``uncond``:
    ``cond`` of guidance's unconditional branch (``None``: guidance is refused when conditioned).
    """

    name: str
    vae: Any
    net: NetworkFn
    interpolant: Interpolant
    target: Target
    mpp: float = 0.5
    tile_px: int = 224
    latent_factor: int = 8
    latent_channels: int = 4
    scaling: LatentScaling = field(default_factory=LatentScaling)
    dtype: torch.dtype = torch.float32
    uncond: Any = None
    info: dict[str, Any] = field(default_factory=dict)

    #: Its networks may run under ``torch.autocast`` (``SamplerSettings.autocast``).
    supports_autocast = True

    @property
    def device(self) -> torch.device:
        params = getattr(self.vae, "parameters", None)
        if params is not None:
            for p in params():
                return p.device
        return torch.device("cpu")

    @torch.no_grad()
    def encode(self, rgb: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [-1, 1] -> scaled latent (posterior mean, deterministic)."""
        x = rgb.to(self.device, self.dtype)
        z = self.vae.encode(x).latent_dist.mean
        return self.scaling.to_model(z.float())

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latent -> ``(B, 3, H, W)`` float32 in [-1, 1]."""
        zv = self.scaling.to_vae(z.to(self.device, torch.float32)).to(self.dtype)
        return self.vae.decode(zv).sample.float().clamp(-1.0, 1.0)

    @torch.no_grad()
    def denoise(
        self,
        z_t: torch.Tensor,
        t: torch.Tensor,
        cond: Any = None,
        guidance: float = 1.0,
    ) -> torch.Tensor:
        """x0 estimate; classifier-free guidance when ``guidance != 1`` and ``cond`` is given."""
        # x0 is formed in float32 on the model's device, from the caller's float32 z_t (not
        # from its reduced-precision copy given to the network)
        z32 = z_t.to(self.device, torch.float32)
        z = z32.to(self.dtype)
        tt = t.to(self.device, torch.float32)
        if guidance != 1.0 and cond is not None:
            if self.uncond is None:
                raise ValueError(f"model {self.name!r} has no unconditional branch for guidance")
            pred_c = self.net(z, tt, cond).float()
            pred_u = self.net(z, tt, self.uncond).float()
            pred = pred_u + guidance * (pred_c - pred_u)
        else:
            pred = self.net(z, tt, cond).float()
        x0 = prediction_to_x0(pred, z32, tt, self.interpolant, self.target)
        if not torch.isfinite(x0).all():
            if torch.is_autocast_enabled(self.device.type):
                hint = "under bfloat16 autocast; try autocast 'off'"
            else:
                hint = f"in {self.dtype}; try dtype float32"
            raise NonFiniteOutputError(
                f"model {self.name!r} returned non-finite values at t={float(t.max()):.4f} {hint}"
            )
        return x0

    def provenance(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "target": self.target,
            "interpolant": self.interpolant.name,
            "mpp": self.mpp,
            "tile_px": self.tile_px,
            "latent_factor": self.latent_factor,
            "latent_channels": self.latent_channels,
            **self.info,
        }
