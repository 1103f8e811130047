"""PixCell (Stony Brook CVLab): PixArt-Sigma DiT-XL/2 on the SD3.5 VAE, conditioned on UNI2-h.

The network is diffusers' ``PixArtTransformer2DModel`` plus two tensors of PixCell's own class:
``caption_projection.uncond_embedding`` ``(N, 1536)`` (the "no reference" tokens of guidance) and,
for N > 1 tokens (PixCell-1024's 4 x 4 grid), ``y_pos_embed.y_pos_embed`` added to the UNI2-h
tokens before the projection. So the weights load strictly into diffusers' class with those two
buffers attached and no repository code runs. PixArt conventions: 1000-step DDPM schedule,
epsilon with learned variance (the first 16 of 32 channels), timestep input ``t * 999``;
latents ``(z - 0.0609) * 1.5305``. The repositories hold no VAE weights: the VAE comes from
``load_model(..., vae=...)`` or ``stabilityai/stable-diffusion-3.5-large`` (gated).
Verified against same-structure random models only (no real weights on the build machines).
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
    fetch_pipeline,
    load_schedule,
    vae_factor,
)
from .encoders import UNI2_H, TimmReferenceEncoder, grid_embedder
from .hub import (
    HubOptions,
    ModelAccessError,
    check_safetensors,
    weights_origin,
)
from .latent import LatentScaling
from .pixcell_layout import load_pixcell_transformer
from .registry import ModelInfo

log = logging.getLogger(__name__)

SD35_VAE_SCALE = 1.5305
SD35_VAE_SHIFT = 0.0609


class PixCellNet(nn.Module):
    """``(z_t, t, cond) -> epsilon`` for a PixArt transformer with PixCell's UNI conditioning.

    ``cond``: UNI2-h tokens ``(B, N, D)`` (or ``(N, D)`` / ``(B, D)`` when N = 1), or
    ``None``/``UNCOND`` for the learned unconditional tokens; with a ControlNet also a dict
    ``{"mask": (B, 1, H_px, W_px), "uni": tokens or None}`` (see :mod:`.pixcell_controlnet`).
    """

    def __init__(
        self,
        transformer: nn.Module,
        uncond_tokens: torch.Tensor,
        token_pos: torch.Tensor | None,
        timestep_scale: float,
        tile_px: int,
        controlnet: nn.Module | None = None,
        mask_encoder: Any = None,
        conditioning_scale: float = 1.0,
    ):
        super().__init__()
        self.transformer = transformer
        self.register_buffer("uncond_tokens", uncond_tokens)
        self.register_buffer("token_pos", token_pos)
        self.timestep_scale = timestep_scale
        self.tile_px = tile_px
        self.controlnet = controlnet
        self.mask_encoder = mask_encoder
        self.conditioning_scale = conditioning_scale

    def _tokens(self, cond: Any, batch: int, like: torch.Tensor) -> torch.Tensor:
        """Raw UNI tokens ``(B, N, D)`` (positions not yet added)."""
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
        return tokens.to(like.dtype)

    def _mask_latent(self, mask: Any, z: torch.Tensor) -> torch.Tensor:
        if self.controlnet is None:
            raise ValueError(
                "this PixCell model takes no mask; the mask-guided one is "
                "pixcell-256-cell-controlnet"
            )
        b, _, h, w = z.shape
        f = self.tile_px // int(self.transformer.config.sample_size)
        mask = torch.as_tensor(mask, device=z.device)
        if mask.ndim != 4 or mask.shape[1] != 1 or tuple(mask.shape[2:]) != (h * f, w * f):
            raise ValueError(
                f"cond['mask'] must be (B, 1, {h * f}, {w * f}) for latents {tuple(z.shape)}, "
                f"got {tuple(mask.shape)}"
            )
        mask = mask.expand(b, -1, -1, -1) if mask.shape[0] == 1 else mask
        return self.mask_encoder(mask).to(z.device, z.dtype)

    def forward(self, z: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        from .pixcell_controlnet import added_after_blocks, control_residuals

        b = z.shape[0]
        uni, mask = cond, None
        if isinstance(cond, dict):
            unknown = sorted(set(cond) - {"uni", "mask"})
            if unknown:
                raise ValueError(f"PixCell cond keys are 'uni' and 'mask', got {unknown}")
            uni, mask = cond.get("uni"), cond.get("mask")
        tokens = self._tokens(uni, b, z)
        timestep = t * self.timestep_scale
        added = {"resolution": None, "aspect_ratio": None}
        if getattr(self.transformer, "use_additional_conditions", False):
            h, w = z.shape[-2] * 8, z.shape[-1] * 8
            added = {
                "resolution": torch.tensor([[h, w]], device=z.device, dtype=z.dtype).expand(b, 2),
                "aspect_ratio": torch.full((b, 1), h / w, device=z.device, dtype=z.dtype),
            }
        residuals = []
        if mask is not None:
            residuals = control_residuals(
                self.controlnet,
                z,
                self._mask_latent(mask, z),
                tokens,
                timestep,
                self.conditioning_scale,
            )
        if self.token_pos is not None:
            tokens = tokens + self.token_pos.to(z.dtype)
        with added_after_blocks(self.transformer, residuals):
            out = self.transformer(
                z,
                encoder_hidden_states=tokens,
                timestep=timestep,
                added_cond_kwargs=added,
                return_dict=False,
            )[0]
        return out[:, : z.shape[1]]


def load_pixcell_vae(folder: Path, vae: str | None, options: HubOptions, info: ModelInfo):
    """The VAE: ``vae`` when given, else the repository's ``vae/`` when it holds weights, else
    the SD3.5-large VAE the model cards load (gated at Stability AI)."""
    from .vae import SD35_VAE_REPO, has_weights, resolve_vae_folder

    how = (
        f"{info.name} was trained with the SD3.5 VAE, which its repository does not host: accept "
        f"the licence of {SD35_VAE_REPO} (gated) at https://huggingface.co/{SD35_VAE_REPO} and "
        "log in (HF_TOKEN or `hf auth login`), or pass a local copy with "
        f"load_model({info.name!r}, vae='<folder with config.json + safetensors, or its "
        "parent with vae/>') (CLI --vae)."
    )
    if vae is not None:
        return resolve_vae_folder(vae, options, how), str(vae)
    if has_weights(folder / "vae"):
        return folder / "vae", "vae/"
    log.info("%s/vae holds no weights; loading the VAE from %s", folder, SD35_VAE_REPO)
    return resolve_vae_folder(SD35_VAE_REPO, options, how), SD35_VAE_REPO


def load_pixcell(
    info: ModelInfo,
    source: str,
    options: HubOptions,
    device: torch.device,
    dtype: torch.dtype,
    embedder: Any = None,
    vae: str | None = None,
) -> BackendModel:
    """Load PixCell-256/-1024 from a hub id or a local copy of the repository folder.

    ``vae``: hub id or folder of the SD3.5 VAE (default: the repository's ``vae/`` when it has
    weights, else ``stabilityai/stable-diffusion-3.5-large``).
    """
    from .vae import load_autoencoder

    folder, index = fetch_pipeline(source, options, info)
    check_safetensors(folder, ["transformer"])
    interpolant, target, timestep_scale = load_schedule(folder, index)
    if target == "flow":
        raise ModelAccessError(f"{source}: PixCell uses a DDPM schedule, found a flow scheduler")
    transformer, uncond, token_pos = load_pixcell_transformer(folder / "transformer", dtype)
    vae_folder, vae_source = load_pixcell_vae(folder, vae, options, info)
    vae, _ = load_autoencoder(vae_folder, dtype)
    factor = vae_factor(vae)
    scale = getattr(vae.config, "scaling_factor", None) or SD35_VAE_SCALE
    shift = getattr(vae.config, "shift_factor", None)
    shift = SD35_VAE_SHIFT if shift is None else shift
    tile_px = int(transformer.config.sample_size) * factor
    n_tokens = uncond.shape[0]
    grid = round(n_tokens**0.5)
    scaling = LatentScaling(scale=float(scale), shift=float(shift))
    controlnet, mask_encoder = None, None
    if component_spec(index, "controlnet") is not None:
        from .pixcell_controlnet import MaskEncoder
        from .pixcell_layout import load_pixcell_controlnet

        check_safetensors(folder, ["controlnet"])
        controlnet = load_pixcell_controlnet(folder / "controlnet", dtype).to(device)

        def encode_mask(rgb: torch.Tensor) -> torch.Tensor:
            z = vae.encode(rgb.to(device, next(vae.parameters()).dtype)).latent_dist.mean
            return scaling.to_model(z.float())

        mask_encoder = MaskEncoder(encode_mask)
    net = PixCellNet(
        transformer, uncond, token_pos, timestep_scale, tile_px, controlnet, mask_encoder
    ).to(device)
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
        scaling=scaling,
        dtype=dtype,
        uncond=UNCOND,
        embedder=ref,
        info={
            **weights_origin(source, options, folder),
            "backend": "pixcell",
            "uni_tokens": n_tokens,
            "controlnet": controlnet is not None,
            "vae_source": vae_source,
            "recommended": dict(info.defaults),
        },
    )
