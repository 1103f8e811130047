"""``diffusers:<hub id or folder>``: any unconditional latent diffusion folder, plus shared helpers.

The folder's ``model_index.json`` must name a network (``unet`` or a 2-D ``transformer`` that runs
without text) predicting epsilon, v or x0 (DDPM-family scheduler) or a flow velocity
(``FlowMatch*``), a ``vae`` (``AutoencoderKL``, whose scaling/shift factors scale the latents)
and a ``scheduler``. Components are built from diffusers' own classes only, so no code from the
folder runs; text-conditioned networks are refused (there is no prompt in this tool).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .backend import BackendModel
from .hub import (
    HubOptions,
    ModelAccessError,
    check_safetensors,
    fetch,
    read_json,
    weights_origin,
)
from .latent import LatentScaling
from .protocol import FlowInterpolant, VPInterpolant
from .registry import ModelInfo

log = logging.getLogger(__name__)

# Networks that need a prompt or labels this tool does not have, and what they need.
_CONDITIONED = {
    "UNet2DConditionModel": "text",
    "SD3Transformer2DModel": "text",
    "FluxTransformer2DModel": "text",
    "PixArtTransformer2DModel": "text (for PixCell use the pixcell-256/-1024 names)",
    "DiTTransformer2DModel": "class labels",
    "Transformer2DModel": "class labels or text",
}


def component_spec(index: dict[str, Any], name: str) -> tuple[str, str] | None:
    """``(library, class)`` for a component of ``model_index.json``, ``None`` when absent."""
    spec = index.get(name)
    if not isinstance(spec, list | tuple) or len(spec) != 2 or spec[1] is None:
        return None
    return str(spec[0]), str(spec[1])


def fetch_pipeline(source: str, options: HubOptions, info: ModelInfo) -> tuple[Path, dict]:
    """Fetch a registered model's repository folder; returns it and its ``model_index.json``.

    Refuses a folder whose index lacks a ``transformer`` or a ``vae`` component.
    """
    folder = fetch(source, options, gated=info.gated, licence=info.licence)
    index = read_json(folder / "model_index.json")
    if component_spec(index, "transformer") is None or component_spec(index, "vae") is None:
        raise ModelAccessError(f"{source}: model_index.json needs a 'transformer' and a 'vae'")
    return folder, index


def diffusers_class(spec: tuple[str, str], where: str):
    """The diffusers class named by ``spec``; anything outside diffusers is refused."""
    import diffusers

    library, cls_name = spec
    cls = getattr(diffusers, cls_name, None) if library == "diffusers" else None
    if cls is None:
        raise ModelAccessError(
            f"{where} is {library}.{cls_name}, not a diffusers class; this loader only builds "
            "diffusers' own classes (no code from the model folder runs)"
        )
    return cls


def load_module(folder: Path, name: str, cls, dtype: torch.dtype) -> nn.Module:
    """``cls.from_pretrained(folder/name)`` with safetensors only and no network."""
    with warnings.catch_warnings():  # newer diffusers renamed torch_dtype; both still work
        warnings.simplefilter("ignore", FutureWarning)
        return cls.from_pretrained(
            folder / name, torch_dtype=dtype, use_safetensors=True, local_files_only=True
        ).eval()


def vae_factor(vae) -> int:
    """Pixels per latent of an ``AutoencoderKL`` (2 ** number of downsampling blocks)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def vae_scaling(vae) -> LatentScaling:
    """``z_model = (z - shift_factor) * scaling_factor`` from the VAE config."""
    scale = getattr(vae.config, "scaling_factor", None) or 1.0
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return LatentScaling(scale=float(scale), shift=float(shift))


def load_schedule(folder: Path, index: dict[str, Any]):
    """``(interpolant, target, timestep_scale)`` from the scheduler config.

    Flow schedulers: linear path, velocity target, network time = ``t * num_train_timesteps``.
    DDPM family: VP path from ``alphas_cumprod``, target from ``prediction_type``, network time =
    ``t * (T - 1)``.
    """
    spec = component_spec(index, "scheduler")
    if spec is None:
        raise ModelAccessError(f"{folder}/model_index.json lists no scheduler")
    config = read_json(folder / "scheduler" / "scheduler_config.json")
    num_train = int(config.get("num_train_timesteps", 1000))
    if "FlowMatch" in spec[1]:
        return FlowInterpolant(), "flow", float(num_train)
    cls = diffusers_class(spec, "the scheduler")
    scheduler = cls.from_config(config)
    targets = {"epsilon": "epsilon", "v_prediction": "v", "sample": "x0"}
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in targets:
        raise ModelAccessError(f"unsupported prediction_type {prediction!r} in {folder}/scheduler")
    interpolant = VPInterpolant(scheduler.alphas_cumprod)
    return interpolant, targets[prediction], float(interpolant.num_train_timesteps - 1)


class DiffusersNet(nn.Module):
    """Calls an unconditional diffusers UNet/transformer with the protocol's ``(z_t, t, cond)``.

    Learned-variance outputs (``2 C`` channels) are cut to the first ``C`` (the mean target).
    """

    def __init__(self, net: nn.Module, timestep_scale: float):
        super().__init__()
        self.net = net
        self.timestep_scale = timestep_scale

    def forward(self, z: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        if cond is not None and not isinstance(cond, str):
            raise ValueError("this diffusers model is unconditional; pass cond=None")
        out = self.net(z, t * self.timestep_scale, return_dict=False)[0]
        return out[:, : z.shape[1]]


def load_diffusers(
    info: ModelInfo,
    source: str,
    options: HubOptions,
    device: torch.device,
    dtype: torch.dtype,
) -> BackendModel:
    """Build an unconditional latent diffusion model from a diffusers folder or hub id."""
    folder = fetch(source, options)
    index = read_json(folder / "model_index.json")
    net_name = "unet" if component_spec(index, "unet") else "transformer"
    net_spec = component_spec(index, net_name)
    vae_spec = component_spec(index, "vae")
    if net_spec is None or vae_spec is None:
        raise ModelAccessError(
            f"{source} is not a latent diffusion folder: model_index.json needs a 'unet' or "
            "'transformer' and a 'vae'"
        )
    if net_spec[1] in _CONDITIONED:
        raise ModelAccessError(
            f"{source}: its {net_spec[1]} is conditioned on {_CONDITIONED[net_spec[1]]}; the "
            "generic diffusers backend supports unconditional latent diffusion models only"
        )
    net_cls = diffusers_class(net_spec, f"the {net_name}")
    vae_cls = diffusers_class(vae_spec, "the vae")
    check_safetensors(folder, [net_name, "vae"])
    interpolant, target, timestep_scale = load_schedule(folder, index)
    net = load_module(folder, net_name, net_cls, dtype).to(device)
    if net.config.get("num_class_embeds") or net.config.get("class_embed_type"):
        raise ModelAccessError(
            f"{source}: its {net_spec[1]} is conditioned on class labels; the generic diffusers "
            "backend supports unconditional latent diffusion models only"
        )
    vae = load_module(folder, "vae", vae_cls, dtype).to(device)
    factor = vae_factor(vae)
    sample_size = net.config.get("sample_size") or 32
    if isinstance(sample_size, list | tuple):
        sample_size = sample_size[0]
    mpp = index.get("mpp")
    if mpp is None:
        log.warning(
            "%s does not state its um/px (no 'mpp' in model_index.json); assuming 0.5", source
        )
    return BackendModel(
        name=info.name,
        vae=vae,
        net=DiffusersNet(net, timestep_scale),
        interpolant=interpolant,
        target=target,
        mpp=float(mpp or 0.5),
        tile_px=int(sample_size) * factor,
        latent_factor=factor,
        latent_channels=int(vae.config.latent_channels),
        scaling=vae_scaling(vae),
        dtype=dtype,
        info={**weights_origin(source, options, folder), "backend": "diffusers"},
        embed_error="generic diffusers models are unconditional",
    )
