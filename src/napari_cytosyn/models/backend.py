"""The model every backend returns: a `LatentDiffusion` with a NaN guard and ``embed``.

The guard: when a bf16/fp16 ``denoise`` or ``decode`` gives NaN or inf, the model moves to
float32, warns once (:class:`PrecisionFallbackWarning`) and retries. ``embed(rgb)``: the reference
encoder (H0-mini, UNI2-h) turning a region the user picked into the ``cond`` ``denoise`` takes.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch

from .latent import LatentDiffusion, NonFiniteOutputError

log = logging.getLogger(__name__)

# ``cond`` value meaning "no reference": backends map it to their learned null embedding.
UNCOND = "uncond"


class PrecisionFallbackWarning(RuntimeWarning):
    """A model switched to float32 after producing non-finite values in lower precision."""


@dataclass
class BackendModel(LatentDiffusion):
    """:class:`LatentDiffusion` with a float32 fallback and an optional reference encoder.

    embedder: ``rgb (B, 3, H, W) float in [-1, 1] -> cond`` or ``None`` (unconditional model).
    embed_error: message raised by :meth:`embed` when the model takes no reference.
    modules: extra ``nn.Module`` parts (beyond ``vae`` and ``net``) to cast on fallback.
    """

    embedder: Callable[[torch.Tensor], Any] | None = None
    embed_error: str = "this model takes no reference conditioning"
    modules: tuple[Any, ...] = ()

    @classmethod
    def wrap(cls, model: LatentDiffusion, **extra: Any) -> BackendModel:
        """Guard an existing :class:`LatentDiffusion` (shares its parts)."""
        if isinstance(model, cls) and not extra:
            return model
        base = {f.name: getattr(model, f.name) for f in fields(LatentDiffusion)}
        return cls(**base, **extra)

    def embed(self, rgb: torch.Tensor) -> Any:
        """Reference conditioning for ``rgb`` ``(B, 3, H, W)`` float in [-1, 1].

        Returns what ``denoise(..., cond=...)`` takes: CytoSyn ``(B, 768)`` H0-mini features,
        PixCell ``(B, N, 1536)`` UNI2-h tokens (N = 1 at 256 px, 16 at 1024 px).
        """
        if self.embedder is None:
            raise ValueError(f"{self.name}: {self.embed_error}")
        with torch.no_grad():
            return self.embedder(rgb)

    def _to_float32(self, reason: str) -> None:
        message = (
            f"model {self.name!r} produced non-finite values in {self.dtype} ({reason}); "
            "switching it to float32 and retrying (slower, uses more memory)"
        )
        warnings.warn(message, PrecisionFallbackWarning, stacklevel=3)
        log.warning(message)
        for part in (self.vae, self.net, *self.modules):
            # a plain-callable net (not an nn.Module) is cast through the modules it holds
            held = [part] if isinstance(part, torch.nn.Module) else list(vars(part).values())
            for module in held:
                if isinstance(module, torch.nn.Module):
                    module.to(torch.float32)
        self.dtype = torch.float32
        self.info["precision_fallback"] = "float32"

    def denoise(self, z_t, t, cond=None, guidance=1.0):
        """x0 estimate (see :meth:`LatentDiffusion.denoise`); NaN/inf in bf16 -> retry in fp32."""
        try:
            return super().denoise(z_t, t, cond=cond, guidance=guidance)
        except NonFiniteOutputError as err:
            if self.dtype == torch.float32:
                raise
            self._to_float32(str(err))
            return super().denoise(z_t, t, cond=cond, guidance=guidance)

    def decode(self, z):
        """Scaled latent -> ``(B, 3, H, W)`` float32 in [-1, 1]; NaN/inf in bf16 -> fp32."""
        rgb = super().decode(z)
        if self.dtype != torch.float32 and not torch.isfinite(rgb).all():
            self._to_float32("in the VAE decoder")
            rgb = super().decode(z)
        return rgb
