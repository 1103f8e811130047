"""REPA-E's end-to-end tuned SD-VAE (f8d4) loaded into diffusers' ``AutoencoderKL``.

REPA-E keeps the CompVis/LDM parameter names, which map one to one onto diffusers' with two
twists: the decoder's up levels are numbered the other way round, and the mid-block attention
projections are 1x1 convolutions in LDM and linear layers in diffusers. The rules below were
checked against all 248 keys of the SD-VAE f8d4 (``tests/models/test_reference_layouts.py``).
"""

from __future__ import annotations

import re
from typing import Any

import torch

#: diffusers ``AutoencoderKL`` config that matches REPA-E's ``vae_models['f8d4']`` (SD-VAE).
SD_VAE_F8D4_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 256,
    "use_quant_conv": True,
    "use_post_quant_conv": True,
    "mid_block_add_attention": True,
}

_ATTN = {"q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0", "norm": "group_norm"}


def is_repae_vae_state(state: dict[str, Any]) -> bool:
    """True for a state dict in REPA-E/LDM naming (``encoder.down.0.block.0...``)."""
    return any(k.startswith(("encoder.down.", "decoder.up.", "encoder.mid.")) for k in state)


def repae_key_to_diffusers(key: str, n_levels: int) -> str:
    """The diffusers ``AutoencoderKL`` name of one REPA-E VAE parameter.

    ``n_levels``: resolution levels of the decoder (4 for the SD-VAE), to reverse ``up.{i}``.
    """
    key = key.replace(".nin_shortcut.", ".conv_shortcut.")
    key = re.sub(r"^(encoder|decoder)\.norm_out\.", r"\1.conv_norm_out.", key)
    m = re.match(r"^encoder\.down\.(\d+)\.block\.(\d+)\.(.*)$", key)
    if m:
        return f"encoder.down_blocks.{m[1]}.resnets.{m[2]}.{m[3]}"
    m = re.match(r"^encoder\.down\.(\d+)\.downsample\.conv\.(.*)$", key)
    if m:
        return f"encoder.down_blocks.{m[1]}.downsamplers.0.conv.{m[2]}"
    m = re.match(r"^decoder\.up\.(\d+)\.block\.(\d+)\.(.*)$", key)
    if m:
        return f"decoder.up_blocks.{n_levels - 1 - int(m[1])}.resnets.{m[2]}.{m[3]}"
    m = re.match(r"^decoder\.up\.(\d+)\.upsample\.conv\.(.*)$", key)
    if m:
        return f"decoder.up_blocks.{n_levels - 1 - int(m[1])}.upsamplers.0.conv.{m[2]}"
    m = re.match(r"^(encoder|decoder)\.mid\.block_([12])\.(.*)$", key)
    if m:
        return f"{m[1]}.mid_block.resnets.{int(m[2]) - 1}.{m[3]}"
    m = re.match(r"^(encoder|decoder)\.mid\.attn_1\.(q|k|v|proj_out|norm)\.(.*)$", key)
    if m:
        return f"{m[1]}.mid_block.attentions.0.{_ATTN[m[2]]}.{m[3]}"
    return key


def repae_to_diffusers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a REPA-E VAE state dict to diffusers' names and reshape the attention weights."""
    ups = {int(m[1]) for k in state if (m := re.match(r"^decoder\.up\.(\d+)\.", k))}
    n_levels = max(ups) + 1 if ups else 0
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = repae_key_to_diffusers(key, n_levels)
        if ".mid_block.attentions.0.to_" in new and new.endswith(".weight") and value.ndim == 4:
            value = value.reshape(value.shape[0], value.shape[1])
        out[new] = value
    return out
