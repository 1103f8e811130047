"""CytoSyn (Owkin & Bioptimus): REPA-E SiT-XL/2 on an SD-VAE f8d4, 224 px tiles at 0.5 um/px.

The Hugging Face repository is a diffusers folder with a custom pipeline (its own Python code).
Two ways in:

- native: when ``model_index.json`` names :class:`napari_cytosyn.models.sit.SiTTransformer` as the
  transformer, it is built from our own code, and nothing from the folder runs;
- remote code (the published repository): with ``trust_remote_code=True`` the repository's
  pipeline is instantiated through ``DiffusionPipeline.from_pretrained(custom_pipeline=...)`` and
  its transformer, VAE and latent statistics are taken out of it. Without the opt-in the load is
  refused, naming the files that would run.

The network predicts the SiT velocity ``eps - x`` on ``x_t = (1 - t) x + t eps`` with time fed in
``[0, 1]`` (as in REPA's sampler, which integrates from ``t = 1`` to ``0``); the adapter turns it
into ``x0 = x_t - t v``. Latents are normalised per channel with the REPA-E batch-norm running
statistics. Reference conditioning: H0-mini class-token features (768-d); the null embedding is
the unconditional branch for classifier-free guidance, which public wrappers apply with scale
2.5 on the interval t in [0, 0.75].

Verified only against same-structure random models: the real repository's class names, forward
signature and where it keeps the latent statistics could not be inspected (gated). The remote-code
path therefore finds them by name and signature, and fails with a message saying what it found.
"""

from __future__ import annotations

import inspect
import logging
import warnings
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
    vae_factor,
    vae_scaling,
)
from .encoders import H0_MINI, TimmReferenceEncoder
from .hub import (
    HubOptions,
    ModelAccessError,
    check_safetensors,
    python_files,
    require_remote_code,
    snapshot_commit,
)
from .latent import LatentScaling
from .protocol import FlowInterpolant
from .registry import ModelInfo

log = logging.getLogger(__name__)

NATIVE_LIBRARIES = ("napari_cytosyn", "napari_cytosyn.models.sit")
_COND_KWARGS = ("h0_mini_embeds", "cond", "y", "encoder_hidden_states", "class_labels")


class SiTVelocityNet(nn.Module):
    """``(z_t, t, cond) -> velocity`` for a SiT transformer, native or from the repository.

    ``cond`` is ``(B, D)`` reference features, or ``None``/``UNCOND`` for the null embedding.
    """

    def __init__(self, transformer: nn.Module):
        super().__init__()
        self.transformer = transformer
        params = inspect.signature(transformer.forward).parameters
        self.cond_kwarg = next((k for k in _COND_KWARGS if k in params), None)

    def forward(self, z: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        if isinstance(cond, str):
            cond = None
        if cond is not None:
            cond = torch.as_tensor(cond, device=z.device).to(z.dtype)
            cond = cond.expand(z.shape[0], -1) if cond.ndim == 1 else cond
            if cond.shape[0] == 1 and z.shape[0] > 1:
                cond = cond.expand(z.shape[0], -1)
        kwargs = {self.cond_kwarg: cond} if self.cond_kwarg else {}
        if cond is not None and self.cond_kwarg is None:
            raise ValueError("this CytoSyn transformer's forward takes no reference argument")
        out = self.transformer(z, t.to(z.dtype), **kwargs)
        if isinstance(out, tuple | list):
            out = out[0]
        out = getattr(out, "sample", out)
        return out[:, : z.shape[1]]


def latent_scaling_of(transformer: nn.Module, pipe: Any, vae) -> tuple[LatentScaling, str]:
    """REPA-E per-channel latent normalisation, wherever the checkpoint keeps it.

    Order: ``latent_stats()`` (ours), a non-affine ``bn`` batch-norm (REPA-E's training code),
    ``latents_mean``/``latents_std`` on the pipeline, then the VAE's scaling/shift factors.
    """
    if hasattr(transformer, "latent_stats"):
        mean, std = transformer.latent_stats()
        return LatentScaling(tuple((1.0 / std).tolist()), tuple(mean.tolist())), "latent_norm"
    bn = getattr(transformer, "bn", None)
    if isinstance(bn, nn.BatchNorm2d) and bn.running_var is not None:
        std = bn.running_var.float().sqrt().cpu()
        return LatentScaling(
            tuple((1 / std).tolist()), tuple(bn.running_mean.float().tolist())
        ), "bn"
    mean = getattr(pipe, "latents_mean", None)
    std = getattr(pipe, "latents_std", None)
    if mean is not None and std is not None:
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        return LatentScaling(tuple((1 / std_t).tolist()), tuple(mean_t.tolist())), "pipeline"
    log.warning("no REPA-E latent statistics found; using the VAE scaling factor")
    return vae_scaling(vae), "vae_config"


def _native_parts(folder: Path, index: dict[str, Any], dtype: torch.dtype):
    from .sit import SiTTransformer

    check_safetensors(folder, ["transformer", "vae"])
    transformer = load_module(folder, "transformer", SiTTransformer, dtype)
    vae = load_module(folder, "vae", diffusers_class(component_spec(index, "vae"), "vae"), dtype)
    return transformer, vae, None


def _remote_parts(folder: Path, label: str, options: HubOptions, dtype: torch.dtype):
    from diffusers import DiffusionPipeline

    check_safetensors(folder, [n for n in ("transformer", "vae") if (folder / n).is_dir()])
    require_remote_code(folder, label, options, python_files(folder))
    pipeline_file = folder / "pipeline.py"
    with warnings.catch_warnings():  # newer diffusers renamed torch_dtype; both still work
        warnings.simplefilter("ignore", FutureWarning)
        pipe = DiffusionPipeline.from_pretrained(
            folder,
            custom_pipeline=str(pipeline_file) if pipeline_file.is_file() else None,
            trust_remote_code=True,
            use_safetensors=True,
            torch_dtype=dtype,
            local_files_only=True,
        )
    modules = {k: v for k, v in pipe.components.items() if isinstance(v, nn.Module)}
    vae = modules.get("vae")
    transformer = next(
        (modules[k] for k in ("transformer", "sit", "model", "denoiser") if k in modules), None
    )
    if vae is None or transformer is None:
        raise ModelAccessError(
            f"{label}: the pipeline's components are {sorted(pipe.components)}; expected a 'vae' "
            "and a 'transformer' (or 'sit'/'model')"
        )
    return transformer.eval(), vae.eval(), pipe


def load_cytosyn(
    info: ModelInfo,
    source: str,
    options: HubOptions,
    device: torch.device,
    dtype: torch.dtype,
    embedder: Any = None,
) -> BackendModel:
    """Load CytoSyn from its hub id or a local copy of the repository folder."""
    folder, index = fetch_pipeline(source, options, info)
    spec = component_spec(index, "transformer")
    if spec[0] in NATIVE_LIBRARIES and spec[1] == "SiTTransformer":
        transformer, vae, pipe = _native_parts(folder, index, dtype)
        route = "native"
    else:
        transformer, vae, pipe = _remote_parts(folder, str(source), options, dtype)
        route = "remote_code"
    ref = embedder
    cond_dim = getattr(getattr(transformer, "config", None), "cond_dim", 768)
    if ref is None and cond_dim is not None:
        ref = TimmReferenceEncoder(H0_MINI, device)
    provenance = {
        "source": str(source),
        "revision": options.revision,
        "commit": snapshot_commit(folder),
        "load_route": route,
    }
    return assemble_cytosyn(info, transformer, vae, device, dtype, ref, pipe, provenance)


def assemble_cytosyn(
    info: ModelInfo,
    transformer: nn.Module,
    vae: nn.Module,
    device: torch.device,
    dtype: torch.dtype,
    embedder: Any = None,
    pipe: Any = None,
    provenance: dict[str, Any] | None = None,
) -> BackendModel:
    """Wrap a SiT velocity network and an SD-VAE into the protocol model (used by the loader
    and by benchmarks that build a randomly initialised CytoSyn-shaped model in memory)."""
    scaling, scaling_from = latent_scaling_of(transformer, pipe, vae)
    transformer.to(device, dtype).eval()
    vae.to(device, dtype).eval()
    factor = vae_factor(vae)
    cond_dim = getattr(getattr(transformer, "config", None), "cond_dim", 768)
    sample_size = getattr(
        getattr(transformer, "config", None), "sample_size", info.tile_px // factor
    )
    return BackendModel(
        name=info.name,
        vae=vae,
        net=SiTVelocityNet(transformer),
        interpolant=FlowInterpolant(),
        target="flow",
        mpp=info.mpp,
        tile_px=int(sample_size) * factor,
        latent_factor=factor,
        latent_channels=int(vae.config.latent_channels),
        scaling=scaling,
        dtype=dtype,
        uncond=UNCOND if cond_dim is not None else None,
        embedder=embedder,
        embed_error="this checkpoint was built without reference conditioning",
        info={
            **(provenance or {}),
            "backend": "cytosyn",
            "latent_scaling_from": scaling_from,
            "recommended": dict(info.defaults),
        },
    )
