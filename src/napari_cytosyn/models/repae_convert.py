"""Convert a REPA-E training checkpoint (``torch.save`` ``.pt``) into a native CytoSyn folder.

The loader never unpickles model files, so this is a separate, explicit step: the checkpoint
(``{"model", "ema", "vae", "args", ...}``) is read with ``torch.load(weights_only=True)`` (tensors
and plain containers only) and written as what :func:`~napari_cytosyn.models.load_model` loads
natively: ``model_index.json`` naming :class:`~.sit.SiTTransformer`, ``transformer/`` (config
inferred from the shapes, the EMA weights without projectors), ``vae/`` when the checkpoint has
one, and ``scheduler/``. Latent statistics travel as the SiT's ``bn.*`` buffers or, from a
``*-latents-stats.pt`` beside the checkpoint, as ``latents_stats.safetensors``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from .repae_vae import SD_VAE_F8D4_CONFIG, repae_to_diffusers
from .sit import unwrap_checkpoint

#: Attention heads of the SiT sizes (not recoverable from the weights' shapes).
SIT_HEADS = {"S": 6, "B": 12, "L": 16, "XL": 16}


def _sit_config(state: dict[str, torch.Tensor], args: dict[str, Any], heads: int | None) -> dict:
    proj = state["x_embedder.proj.weight"]
    hidden, channels, patch = int(proj.shape[0]), int(proj.shape[1]), int(proj.shape[2])
    depth = 1 + max(int(m[1]) for k in state if (m := re.match(r"blocks\.(\d+)\.", k)))
    tokens = int(state["pos_embed"].shape[1])
    if heads is None:
        size = str(args.get("model", "")).removeprefix("SiT-").split("/")[0]
        if size not in SIT_HEADS:
            raise ValueError(
                f"cannot tell the number of attention heads (args model {args.get('model')!r}); "
                "pass num_heads"
            )
        heads = SIT_HEADS[size]
    rows = int(state["y_embedder.embedding_table.weight"].shape[0])
    dropout = float(args.get("cfg_prob", 0.1))
    out = int(state["final_layer.linear.weight"].shape[0])
    return {
        "sample_size": round(tokens**0.5) * patch,
        "patch_size": patch,
        "in_channels": channels,
        "hidden_size": hidden,
        "depth": depth,
        "num_heads": heads,
        "mlp_ratio": int(state["blocks.0.mlp.fc1.weight"].shape[0]) / hidden,
        "num_classes": rows - 1 if dropout > 0 else rows,
        "class_dropout_prob": dropout,
        "cond_dim": None,
        "learn_sigma": out == 2 * patch * patch * channels,
    }


def _vae_config(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    levels = sorted({int(m[1]) for k in state if (m := re.match(r"encoder\.down\.(\d+)\.", k))})
    blocks = {int(m[1]) for k in state if (m := re.match(r"encoder\.down\.0\.block\.(\d+)\.", k))}
    return {
        **SD_VAE_F8D4_CONFIG,
        "block_out_channels": [
            int(state[f"encoder.down.{i}.block.0.conv2.weight"].shape[0]) for i in levels
        ],
        "down_block_types": ["DownEncoderBlock2D"] * len(levels),
        "up_block_types": ["UpDecoderBlock2D"] * len(levels),
        "layers_per_block": len(blocks),
        "latent_channels": int(state["post_quant_conv.weight"].shape[0]),
    }


def _save_component(folder: Path, class_name: str, config: dict, state: dict) -> None:
    """A diffusers component folder: ``config.json`` and the safetensors of ``state``."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps({"_class_name": class_name, **config}, indent=2))
    tensors = {k: v.contiguous() for k, v in state.items()}
    save_file(tensors, folder / "diffusion_pytorch_model.safetensors")


def convert_repae_checkpoint(
    checkpoint: Path, out: Path, *, num_heads: int | None = None, norm_num_groups: int = 32
) -> Path:
    """Write ``out`` (a native CytoSyn folder) from a REPA-E ``.pt`` checkpoint; see the module
    docstring. Returns ``out``."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from safetensors.torch import save_file

    checkpoint, out = Path(checkpoint), Path(out)
    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or not ({"ema", "model"} & set(ckpt)):
        raise ValueError(f"{checkpoint} is not a REPA-E checkpoint (no 'ema' or 'model' entry)")
    args = ckpt.get("args") or {}
    args = args if isinstance(args, dict) else vars(args)
    sit_state = unwrap_checkpoint(ckpt["ema"] if "ema" in ckpt else ckpt["model"])
    config = _sit_config(sit_state, args, num_heads)
    _save_component(out / "transformer", "SiTTransformer", config, sit_state)
    index: dict[str, Any] = {
        "_class_name": "DiffusionPipeline",
        "transformer": ["napari_cytosyn.models.sit", "SiTTransformer"],
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    }
    if isinstance(ckpt.get("vae"), dict):
        vae_config = {**_vae_config(ckpt["vae"]), "norm_num_groups": norm_num_groups}
        _save_component(out / "vae", "AutoencoderKL", vae_config, repae_to_diffusers(ckpt["vae"]))
        index["vae"] = ["diffusers", "AutoencoderKL"]
    stats = checkpoint.with_name(checkpoint.stem + "-latents-stats.pt")
    if stats.is_file():
        values = torch.load(stats, map_location="cpu", weights_only=True)
        save_file(
            {k: values[k].contiguous() for k in ("latents_scale", "latents_bias")},
            out / "latents_stats.safetensors",
        )
    FlowMatchEulerDiscreteScheduler().save_pretrained(out / "scheduler")
    (out / "model_index.json").write_text(json.dumps(index, indent=2))
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m napari_cytosyn.models.repae_convert CKPT.pt OUT [--num-heads N]``."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--num-heads", type=int, help="attention heads (default: from args)")
    parser.add_argument("--norm-num-groups", type=int, default=32)
    ns = parser.parse_args(argv)
    convert_repae_checkpoint(
        ns.checkpoint, ns.out, num_heads=ns.num_heads, norm_num_groups=ns.norm_num_groups
    )
    print(f"wrote {ns.out}; load it with load_model('cytosyn:{ns.out}')")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
