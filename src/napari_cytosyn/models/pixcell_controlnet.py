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
import functools
import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

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


_CALL = threading.local()  # the residuals of the forward pass running in this thread


@contextlib.contextmanager
def added_after_blocks(transformer: nn.Module, residuals: list[torch.Tensor]) -> Iterator[None]:
    """While active in this thread, ``transformer``'s block ``i`` returns its output plus
    ``residuals[i]`` (PixCell's ControlNet transformer adds them after each of its first blocks).

    The hooks are installed once per transformer and read the calling thread's residuals: network
    calls run side by side in threads (:func:`~napari_cytosyn.sampling.threads.parallel_calls`),
    and hooks added per call would apply one call's residuals to the other's forward pass.
    """
    if not getattr(transformer, "_cytosyn_control_hooks", False):
        for i, block in enumerate(transformer.transformer_blocks):
            block.register_forward_hook(functools.partial(_add_residual, i))
        transformer._cytosyn_control_hooks = True
    outer = getattr(_CALL, "residuals", None)
    _CALL.residuals = residuals
    try:
        yield
    finally:
        _CALL.residuals = outer


def _add_residual(i: int, _module: nn.Module, _args: Any, out: torch.Tensor) -> torch.Tensor:
    residuals = getattr(_CALL, "residuals", None)
    return out + residuals[i] if residuals is not None and i < len(residuals) else out


class MaskEncoder:
    """Cell mask ``(B, 1, H, W)`` in [0, 1] -> scaled VAE latent ``(B, C, H/f, W/f)``, cached by
    content (the same window's mask recurs at every sampler step)."""

    def __init__(self, encode: Callable[[torch.Tensor], torch.Tensor], size: int = 256):
        self.encode = encode
        self.size = size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()  # calls run side by side in threads

    def __call__(self, mask: torch.Tensor) -> torch.Tensor:
        key = hashlib.blake2b(
            mask.detach().float().cpu().numpy().tobytes() + str(tuple(mask.shape)).encode(),
            digest_size=16,
        ).hexdigest()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        # encoded outside the lock (two threads may encode the same mask: same result)
        hit = self.encode(mask.float().expand(-1, 3, -1, -1) * 2.0 - 1.0)
        with self._lock:
            self._cache[key] = hit
            if len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return hit
