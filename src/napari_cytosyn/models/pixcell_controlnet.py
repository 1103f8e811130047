"""The mask-guided PixCell ControlNet (``StonyBrook-CVLab/PixCell-256-Cell-ControlNet``), native.

Its published code imports ``diffusers.models.controlnet`` (removed in diffusers 0.37), so the
ControlNet is built from its key layout (:mod:`.pixcell_layout`) and run here: a PixCell body of
``n_controlnet_blocks`` blocks, a ``cond_pos_embed`` patch embedding of the mask latent added to
the image tokens, and ``controlnet_blocks.{i}`` (times ``conditioning_scale``) added to the
transformer's hidden states after its block ``i``.

The mask enters as the VAE latent of the cell-mask image (white cells on black). ``cond =
{"mask": (B, 1, H_px, W_px)}`` (shared with ``cytosyn-tiny-cells``), optionally with ``"uni"``
tokens; without a mask the transformer runs alone (guidance's unconditional branch drops both).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterator

import torch
from torch import nn


def control_residuals(
    controlnet: nn.Module,
    z: torch.Tensor,
    mask_latent: torch.Tensor,
    tokens: torch.Tensor,
    timestep: torch.Tensor,
    scale: float = 1.0,
) -> list[torch.Tensor]:
    """Per-block residuals ``(B, N, hidden)`` of the ControlNet for latents ``z`` ``(B, C, h, w)``,
    the scaled mask latent (same shape), raw UNI tokens ``(B, T, D)`` and DDPM timesteps."""
    b = z.shape[0]
    hidden = controlnet.pos_embed(z) + controlnet.cond_pos_embed(mask_latent)
    added = {"resolution": None, "aspect_ratio": None}
    temb, _ = controlnet.adaln_single(timestep, added, batch_size=b, hidden_dtype=hidden.dtype)
    y_pos = getattr(controlnet, "y_pos_embed", None)
    if y_pos is not None:
        tokens = tokens + y_pos.y_pos_embed.to(tokens.dtype)
    context = controlnet.caption_projection(tokens).view(b, -1, hidden.shape[-1])
    out = []
    for block, proj in zip(
        controlnet.transformer_blocks, controlnet.controlnet_blocks, strict=True
    ):
        hidden = block(hidden, encoder_hidden_states=context, timestep=temb)
        out.append(proj(hidden) * scale)
    return out


@contextlib.contextmanager
def added_after_blocks(transformer: nn.Module, residuals: list[torch.Tensor]) -> Iterator[None]:
    """While active, ``transformer``'s block ``i`` returns its output plus ``residuals[i]``
    (PixCell's ControlNet transformer adds them after each of its first blocks)."""
    handles = []
    for block, res in zip(transformer.transformer_blocks, residuals, strict=False):
        handles.append(block.register_forward_hook(lambda _m, _a, out, r=res: out + r))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class MaskEncoder:
    """Cell mask ``(B, 1, H, W)`` in [0, 1] -> scaled VAE latent ``(B, C, H/f, W/f)``, cached by
    content (the same window's mask recurs at every sampler step)."""

    def __init__(self, encode: Callable[[torch.Tensor], torch.Tensor], size: int = 256):
        self.encode = encode
        self.size = size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    def __call__(self, mask: torch.Tensor) -> torch.Tensor:
        key = hashlib.blake2b(
            mask.detach().float().cpu().numpy().tobytes() + str(tuple(mask.shape)).encode(),
            digest_size=16,
        ).hexdigest()
        hit = self._cache.get(key)
        if hit is None:
            rgb = mask.float().expand(-1, 3, -1, -1) * 2.0 - 1.0
            hit = self.encode(rgb)
            self._cache[key] = hit
            if len(self._cache) > self.size:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return hit
