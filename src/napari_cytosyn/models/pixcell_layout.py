"""PixCell's published module layouts, built from their ``config.json`` and loaded strictly:
the transformer (diffusers' ``PixArtTransformer2DModel`` plus
``caption_projection.uncond_embedding`` and, for several UNI tokens, ``y_pos_embed.y_pos_embed``)
and the ControlNet (the same body with ``n_controlnet_blocks`` blocks, ``cond_pos_embed`` and
``controlnet_blocks``; its forward is in :mod:`.pixcell_controlnet`). Both build on the meta
device and are checked key by key in ``tests/models/test_reference_layouts.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .hub import read_json
from .sit import load_strict, read_safetensors, to_dtype

#: config.json keys of the published transformer that are not constructor arguments
_LEGACY_CONFIG_KEYS = (
    "double_self_attention",
    "num_vector_embeds",
    "only_cross_attention",
    "use_linear_projection",
)


def build_pixcell_transformer(config: dict[str, Any]):
    """PixCell's transformer from its ``config.json`` values: diffusers'
    ``PixArtTransformer2DModel`` plus the persistent buffers ``caption_projection.uncond_embedding``
    ``(N, caption_channels)`` and, when ``caption_num_tokens`` N > 1, ``y_pos_embed.y_pos_embed``
    ``(1, N, caption_channels)``: exactly the published state-dict keys. Works on the meta
    device. ``interpolation_scale`` (positions of the non-persistent ``pos_embed`` table) comes
    from the config, as in the published class."""
    from diffusers import PixArtTransformer2DModel

    config = {k: v for k, v in config.items() if not k.startswith("_")}
    n_tokens = int(config.pop("caption_num_tokens", 1))
    for key in _LEGACY_CONFIG_KEYS:
        config.pop(key, None)
    model = PixArtTransformer2DModel.from_config(config)
    width = int(config["caption_channels"])
    model.caption_projection.register_buffer("uncond_embedding", torch.zeros(n_tokens, width))
    if n_tokens > 1:
        model.y_pos_embed = nn.Module()
        model.y_pos_embed.register_buffer("y_pos_embed", torch.zeros(1, n_tokens, width))
    return model


def load_pixcell_transformer(folder: Path, dtype: torch.dtype):
    """PixCell transformer as ``(PixArtTransformer2DModel, uncond (N, D), positions or None)``,
    loaded strictly from ``folder`` (errors name the wrong keys and shapes)."""
    model = build_pixcell_transformer(read_json(Path(folder) / "config.json"))
    load_strict(model, read_safetensors(folder), f"{folder} (PixCell transformer)")
    uncond = model.caption_projection.uncond_embedding.float()
    y_pos = getattr(model, "y_pos_embed", None)
    token_pos = y_pos.y_pos_embed.float() if y_pos is not None else None
    return to_dtype(model, dtype), uncond, token_pos


def build_pixcell_controlnet(config: dict[str, Any]):
    """The ControlNet from its ``config.json`` (``PixCellControlNet`` arguments); meta-safe."""
    from diffusers.models.embeddings import PatchEmbed

    config = {k: v for k, v in config.items() if not k.startswith("_")}
    n_blocks = config.pop("n_controlnet_blocks", None) or config.get("num_layers", 28)
    body = build_pixcell_transformer({**config, "num_layers": int(n_blocks)})
    c = body.config
    inner = c.num_attention_heads * c.attention_head_dim
    interpolation = c.interpolation_scale or max(c.sample_size // 64, 1)
    body.cond_pos_embed = PatchEmbed(
        height=c.sample_size,
        width=c.sample_size,
        patch_size=c.patch_size,
        in_channels=c.in_channels,
        embed_dim=inner,
        interpolation_scale=interpolation,
    )
    body.controlnet_blocks = nn.ModuleList(nn.Linear(inner, inner) for _ in range(int(n_blocks)))
    return body


def load_pixcell_controlnet(folder: Path, dtype: torch.dtype):
    """The ControlNet of ``folder`` (``config.json`` + safetensors), loaded strictly."""
    model = build_pixcell_controlnet(read_json(Path(folder) / "config.json"))
    load_strict(model, read_safetensors(folder), f"{folder} (PixCell ControlNet)")
    return to_dtype(model, dtype)
