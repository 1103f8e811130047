"""PixCell (Stony Brook CVLab): PixArt-Sigma DiT-XL/2 on the SD3.5 VAE, conditioned on UNI2-h.

From the public PixCell code (``PixCellTransformer2DModel``): the network is diffusers'
``PixArtTransformer2DModel`` plus two tensors,
- ``caption_projection.uncond_embedding`` ``(N, 1536)``: the learned "no reference" tokens used for
  classifier-free guidance, and
- ``y_pos_embed.y_pos_embed`` ``(1, N, 1536)`` (only when ``caption_num_tokens`` N > 1, i.e.
  PixCell-1024's 4 x 4 grid): sine-cosine positions added to the UNI2-h tokens *before* the caption
  projection.
So the weights load into diffusers' own class (no code from the repository runs) and this adapter
adds the two tensors itself. PixArt conventions: DDPM schedule of 1000 steps, epsilon target with
learned variance (the output's second half is dropped), discrete timestep input ``t * 999``.
The SD3.5 VAE has 16 channels; latents are ``(z - 0.0609) * 1.5305`` (its shift/scale factors).

Verified only against same-structure random models (no real weights on the build machines).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .backend import UNCOND, BackendModel
from .diffusers_generic import (
    component_spec,
    diffusers_class,
    fetch_pipeline,
    load_module,
    load_schedule,
    vae_factor,
)
from .encoders import UNI2_H, TimmReferenceEncoder, grid_embedder
from .hub import (
    HubOptions,
    ModelAccessError,
    check_safetensors,
    read_json,
    snapshot_commit,
)
from .latent import LatentScaling
from .registry import ModelInfo

log = logging.getLogger(__name__)

SD35_VAE_SCALE = 1.5305
SD35_VAE_SHIFT = 0.0609
_EXTRA_KEYS = ("caption_projection.uncond_embedding", "y_pos_embed.y_pos_embed")


class PixCellNet(nn.Module):
    """``(z_t, t, cond) -> epsilon`` for a PixArt transformer with PixCell's UNI conditioning.

    ``cond``: UNI2-h tokens ``(B, N, D)`` (or ``(N, D)`` / ``(B, D)`` when N = 1), or
    ``None``/``UNCOND`` for the learned unconditional tokens.
    """

    def __init__(
        self,
        transformer: nn.Module,
        uncond_tokens: torch.Tensor,
        token_pos: torch.Tensor | None,
        timestep_scale: float,
        tile_px: int,
    ):
        super().__init__()
        self.transformer = transformer
        self.register_buffer("uncond_tokens", uncond_tokens)
        self.register_buffer("token_pos", token_pos)
        self.timestep_scale = timestep_scale
        self.tile_px = tile_px

    def _tokens(self, cond: Any, batch: int, like: torch.Tensor) -> torch.Tensor:
        n, d = self.uncond_tokens.shape
        if cond is None or isinstance(cond, str):
            tokens = self.uncond_tokens[None].expand(batch, n, d)
        else:
            tokens = torch.as_tensor(cond, device=like.device)
            if tokens.ndim == 2 and tokens.shape == (n, d) and n > 1:
                tokens = tokens[None]
            elif tokens.ndim == 2:
                tokens = tokens[:, None]
            if tokens.ndim != 3 or tokens.shape[1:] != (n, d):
                raise ValueError(
                    f"PixCell expects UNI2-h tokens of shape (B, {n}, {d}), got "
                    f"{tuple(tokens.shape)}"
                )
            tokens = tokens.expand(batch, n, d) if tokens.shape[0] == 1 else tokens
        tokens = tokens.to(like.dtype)
        if self.token_pos is not None:
            tokens = tokens + self.token_pos.to(like.dtype)
        return tokens

    def forward(self, z: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        b = z.shape[0]
        added = {"resolution": None, "aspect_ratio": None}
        if getattr(self.transformer, "use_additional_conditions", False):
            h, w = z.shape[-2] * 8, z.shape[-1] * 8
            added = {
                "resolution": torch.tensor([[h, w]], device=z.device, dtype=z.dtype).expand(b, 2),
                "aspect_ratio": torch.full((b, 1), h / w, device=z.device, dtype=z.dtype),
            }
        out = self.transformer(
            z,
            encoder_hidden_states=self._tokens(cond, b, z),
            timestep=t * self.timestep_scale,
            added_cond_kwargs=added,
            return_dict=False,
        )[0]
        return out[:, : z.shape[1]]


def _load_state(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for path in sorted(folder.glob("*.safetensors")):
        state.update(load_file(path))
    return state


def load_pixcell_transformer(folder: Path, dtype: torch.dtype):
    """PixCell transformer as ``(PixArtTransformer2DModel, uncond (N, D), positions or None)``."""
    from diffusers import PixArtTransformer2DModel

    config = read_json(folder / "config.json")
    n_tokens = int(config.pop("caption_num_tokens", 1))
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    model = PixArtTransformer2DModel.from_config(config)
    state = _load_state(folder)
    uncond = state.pop(_EXTRA_KEYS[0], None)
    token_pos = state.pop(_EXTRA_KEYS[1], None)
    if uncond is None:
        raise ModelAccessError(
            f"{folder}: no '{_EXTRA_KEYS[0]}' in the weights; is this a PixCell transformer?"
        )
    if uncond.shape[0] != n_tokens or (n_tokens > 1 and token_pos is None):
        raise ModelAccessError(
            f"{folder}: caption_num_tokens={n_tokens} but the weights have uncond tokens of shape "
            f"{tuple(uncond.shape)} and {'no' if token_pos is None else 'some'} token positions"
        )
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelAccessError(
            f"{folder}: weights do not fit PixArtTransformer2DModel (missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}); this PixCell revision is not supported natively"
        )
    token_pos = token_pos.reshape(1, n_tokens, -1) if token_pos is not None else None
    return model.to(dtype).eval(), uncond.float(), token_pos


def load_pixcell(
    info: ModelInfo,
    source: str,
    options: HubOptions,
    device: torch.device,
    dtype: torch.dtype,
    embedder: Any = None,
) -> BackendModel:
    """Load PixCell-256/-1024 from a hub id or a local copy of the repository folder."""
    folder, index = fetch_pipeline(source, options, info)
    vae_spec = component_spec(index, "vae")
    check_safetensors(folder, ["transformer", "vae"])
    interpolant, target, timestep_scale = load_schedule(folder, index)
    if target == "flow":
        raise ModelAccessError(f"{source}: PixCell uses a DDPM schedule, found a flow scheduler")
    transformer, uncond, token_pos = load_pixcell_transformer(folder / "transformer", dtype)
    vae = load_module(folder, "vae", diffusers_class(vae_spec, "vae"), dtype)
    factor = vae_factor(vae)
    scale = getattr(vae.config, "scaling_factor", None) or SD35_VAE_SCALE
    shift = getattr(vae.config, "shift_factor", None)
    shift = SD35_VAE_SHIFT if shift is None else shift
    tile_px = int(transformer.config.sample_size) * factor
    n_tokens = uncond.shape[0]
    grid = round(n_tokens**0.5)
    net = PixCellNet(transformer, uncond, token_pos, timestep_scale, tile_px).to(device)
    vae.to(device)
    ref = embedder
    if ref is None:
        ref = TimmReferenceEncoder(UNI2_H, device)
    if grid > 1:
        ref = grid_embedder(ref, grid)
    else:
        base = ref
        ref = lambda rgb: base(rgb)[:, None]  # noqa: E731 - one token per tile
    return BackendModel(
        name=info.name,
        vae=vae,
        net=net,
        interpolant=interpolant,
        target=target,
        mpp=info.mpp,
        tile_px=tile_px,
        latent_factor=factor,
        latent_channels=int(vae.config.latent_channels),
        scaling=LatentScaling(scale=float(scale), shift=float(shift)),
        dtype=dtype,
        uncond=UNCOND,
        embedder=ref,
        info={
            "source": str(source),
            "revision": options.revision,
            "commit": snapshot_commit(folder),
            "backend": "pixcell",
            "uni_tokens": n_tokens,
            "recommended": dict(info.defaults),
        },
    )
