"""The one small contract every model backend fulfils, and the interpolants samplers work on.

Every model, whatever it predicts natively (flow velocity, epsilon, v), is exposed as an x0
denoiser over an interpolant ``z_t = alpha(t) * z_0 + sigma(t) * eps`` with ``t`` in ``[0, 1]``,
``t = 0`` clean and ``t = 1`` pure noise (Karras et al. 2022; k-diffusion's wrappers). Samplers in
:mod:`napari_cytosyn.sampling` only ever see this protocol.

Conventions for tensors:
- images: float32 ``(B, 3, H, W)`` in ``[-1, 1]``;
- latents: float ``(B, latent_channels, H / latent_factor, W / latent_factor)``, already scaled the
  way the model's diffusion was trained (VAE scaling/shift applied inside ``encode``/``decode``);
- ``t``: float ``(B,)`` in ``[0, 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch

Target = Literal["flow", "epsilon", "v", "x0"]


class Interpolant(Protocol):
    """Noise path ``z_t = alpha(t) z_0 + sigma(t) eps``; ``t`` in ``[0, 1]``, 1 = noise."""

    name: str

    def alpha(self, t: torch.Tensor) -> torch.Tensor: ...

    def sigma(self, t: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class FlowInterpolant:
    """Rectified flow / SiT linear path: ``alpha = 1 - t``, ``sigma = t``."""

    name: str = "flow"

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return 1.0 - t

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return t


class VPInterpolant:
    """Variance-preserving path of a discrete DDPM schedule.

    ``alphas_cumprod`` (length T) is interpolated log-linearly in ``t = timestep / (T - 1)``,
    so ``alpha(t)^2 + sigma(t)^2 = 1`` and ``t`` maps back to a native timestep with
    :meth:`timestep`.
    """

    name = "vp"

    def __init__(self, alphas_cumprod: torch.Tensor):
        import torch

        ac = torch.as_tensor(alphas_cumprod, dtype=torch.float64).clamp(1e-12, 1.0)
        if ac.ndim != 1 or ac.numel() < 2:
            raise ValueError(
                f"alphas_cumprod must be a 1-D schedule of >= 2 steps, got shape {tuple(ac.shape)}"
            )
        self.alphas_cumprod = ac
        self.num_train_timesteps = int(ac.numel())
        self._log_ac = ac.log()

    def _ac(self, t: torch.Tensor) -> torch.Tensor:
        import torch

        # on the CPU, where the table is, in float64 (which MPS lacks); t is one value per row
        pos = t.detach().to("cpu", torch.float64).clamp(0.0, 1.0) * (self.num_train_timesteps - 1)
        lo = pos.floor().long().clamp(max=self.num_train_timesteps - 2)
        frac = pos - lo.to(torch.float64)
        log_ac = torch.lerp(self._log_ac[lo], self._log_ac[lo + 1], frac)
        return log_ac.exp().to(t.device, t.dtype)

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return self._ac(t).sqrt()

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return (1.0 - self._ac(t)).clamp(min=0.0).sqrt()

    def timestep(self, t: torch.Tensor) -> torch.Tensor:
        """Native (continuous) DDPM timestep for ``t``."""
        return t * (self.num_train_timesteps - 1)


def prediction_to_x0(
    pred: torch.Tensor,
    z_t: torch.Tensor,
    t: torch.Tensor,
    interpolant: Interpolant,
    target: Target,
) -> torch.Tensor:
    """Convert a network's native prediction into an x0 estimate.

    - ``flow``: velocity ``v = d z_t / d t = alpha'(t) z_0 + sigma'(t) eps``; for the linear path
      (``alpha = 1 - t``, ``sigma = t``) ``v = eps - z_0`` and ``z_0 = z_t - t v``.
    - ``epsilon``: ``z_0 = (z_t - sigma eps) / alpha``.
    - ``v`` (Salimans & Ho 2022, VP only): ``z_0 = alpha z_t - sigma v``.
    - ``x0``: returned unchanged.
    """
    shape = (-1,) + (1,) * (z_t.ndim - 1)
    a = interpolant.alpha(t).reshape(shape).to(z_t.dtype)
    s = interpolant.sigma(t).reshape(shape).to(z_t.dtype)
    if target == "x0":
        return pred
    if target == "epsilon":
        return (z_t - s * pred) / a.clamp(min=1e-6)
    if target == "v":
        return a * z_t - s * pred
    if target == "flow":
        if interpolant.name != "flow":
            raise ValueError("a flow-velocity target needs the linear flow interpolant")
        return z_t - t.reshape(shape).to(z_t.dtype) * pred
    raise ValueError(f"unknown prediction target {target!r}; expected flow, epsilon, v or x0")


@runtime_checkable
class LatentDiffusionModel(Protocol):
    """What the samplers need from a model: an x0 denoiser on latents, and the autoencoder.

    ``name`` (for provenance), ``mpp`` (um/px of the training data, a float: models generate square
    pixels), ``tile_px`` (native tile), ``latent_factor`` (px per latent), ``latent_channels``,
    ``interpolant``; ``device``/``dtype``: where ``denoise`` runs.
    """

    name: str
    mpp: float
    tile_px: int
    latent_factor: int
    latent_channels: int
    interpolant: Interpolant

    @property
    def device(self) -> torch.device: ...

    def encode(self, rgb: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` float in [-1, 1] -> scaled latent ``(B, C, H/f, W/f)``."""
        ...

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latent ``(B, C, h, w)`` -> ``(B, 3, h*f, w*f)`` float in [-1, 1]."""
        ...

    def denoise(
        self,
        z_t: torch.Tensor,
        t: torch.Tensor,
        cond: Any = None,
        guidance: float = 1.0,
    ) -> torch.Tensor:
        """x0 estimate for noisy latents ``z_t`` ``(B, C, h, w)`` at times ``t`` ``(B,)``.

        ``cond`` is model specific (e.g. reference embeddings); ``guidance`` > 1 applies
        classifier-free guidance where the model supports it.
        """
        ...

    def provenance(self) -> dict[str, Any]:
        """JSON-serialisable description (name, source, revision, ...) for export metadata."""
        ...
