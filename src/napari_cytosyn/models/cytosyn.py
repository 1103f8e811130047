"""CytoSyn (Owkin & Bioptimus): REPA-E SiT-XL/2 on an SD-VAE f8d4, 224 px tiles at 0.5 um/px.

Its Hugging Face folder is a diffusers pipeline with custom Python code. Two ways in:
- native: ``model_index.json`` names :class:`~.sit.SiTTransformer`; it is built from our code
  (REPA-E's names, strict load after dropping ``projectors.*``, ``ema.*`` unwrapped) with
  diffusers' ``AutoencoderKL``; nothing from the folder runs;
- remote code: only with ``trust_remote_code=True``, after every module the folder could import
  was resolved inside it and named (:mod:`.remote_code`).

The network predicts the velocity ``eps - x`` on ``x_t = (1 - t) x + t eps``; the adapter returns
``x0 = x_t - t v``. Latents are ``(z - bias) * scale`` per channel, the statistics found (in this
order) in the SiT's ``bn`` running mean/var, ``latents_scale``/``latents_bias`` (or
``latents_mean``/``latents_std``) on the pipeline or transformer, a ``*latents_stats`` file, or
the VAE config; none found is an error listing where it looked (a scalar 0.18215 would give
wrong images).
"""

from __future__ import annotations

import inspect
import logging
import math
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn

from .backend import UNCOND, BackendModel
from .diffusers_generic import component_spec, fetch_pipeline
from .encoders import H0_MINI, TimmReferenceEncoder
from .hub import (
    HubOptions,
    ModelAccessError,
    check_safetensors,
    read_json,
    weights_origin,
)
from .latent import LatentScaling
from .protocol import FlowInterpolant
from .registry import ModelInfo
from .remote_code import require_remote_code_files
from .sit import STATS_FILE_TAGS

log = logging.getLogger(__name__)

NATIVE_LIBRARIES = ("napari_cytosyn", "napari_cytosyn.models.sit")
# keyword names under which custom transformers take reference features (``y`` is positional)
_COND_KWARGS = ("h0_mini_embeds", "cond", "encoder_hidden_states", "class_labels")


class LatentStatsNotFound(ModelAccessError):
    """No per-channel latent statistics anywhere a CytoSyn/REPA-E checkpoint may keep them."""


class SiTVelocityNet(nn.Module):
    """``(z_t, t, cond) -> velocity`` for a SiT transformer, native or from the repository.

    ``cond``: ``(B, D)`` reference features, or ``None``/``UNCOND`` for the null label.
    The call convention is read from the transformer's signature: REPA-E's
    ``inference(x, t, y)`` / ``forward(x, t, y)`` take ``y`` positionally; other custom classes
    a keyword from ``h0_mini_embeds``, ``cond``, ``encoder_hidden_states``, ``class_labels``.
    """

    def __init__(self, transformer: nn.Module, null: Any = None):
        super().__init__()
        self.transformer = transformer
        native = type(transformer).__module__.startswith("napari_cytosyn.")
        inference = getattr(transformer, "inference", None)
        self.call = inference if callable(inference) and not native else transformer
        target = self.call.forward if isinstance(self.call, nn.Module) else self.call
        params = list(inspect.signature(target).parameters.values())
        names = [p.name for p in params]
        self.cond_kwarg = next((k for k in _COND_KWARGS if k in names), None)
        self.positional_y = self.cond_kwarg is None and len(names) >= 3 and names[2] == "y"
        self.null = null

    def forward(self, z: torch.Tensor, t: torch.Tensor, cond: Any = None) -> torch.Tensor:
        b = z.shape[0]
        if cond is None or isinstance(cond, str):
            y = self.null
            if isinstance(y, torch.Tensor):
                y = y.to(z.device)
                y = y.expand(b, *y.shape[1:]) if y.shape[0] == 1 else y
        else:
            y = torch.as_tensor(cond, device=z.device).to(z.dtype)
            y = y[None] if y.ndim == 1 else y
            y = y.expand(b, -1) if y.shape[0] == 1 and b > 1 else y
        tt = t.to(z.dtype)
        if self.positional_y:
            out = self.call(z, tt, y)
        elif self.cond_kwarg is not None:
            out = self.call(z, tt, **{self.cond_kwarg: y})
        elif y is None:
            out = self.call(z, tt)
        else:
            raise ValueError("this CytoSyn transformer's forward takes no reference argument")
        if isinstance(out, tuple | list):
            out = out[0]
        out = getattr(out, "sample", out)
        return out[:, : z.shape[1]]


def null_label(transformer: nn.Module, pipe: Any = None) -> Any:
    """What a custom transformer takes as "no reference": the pipeline's or transformer's null
    embedding when it has one, else REPA-E's null label ``num_classes`` for a label table with
    a null row, else ``None``."""
    for owner in (pipe, transformer):
        for attr in ("null_embedding", "uncond_embedding", "null_cond"):
            value = getattr(owner, attr, None)
            if isinstance(value, torch.Tensor):
                return value.detach()
    y_embedder = getattr(transformer, "y_embedder", None)
    table = getattr(y_embedder, "embedding_table", None)
    num_classes = getattr(y_embedder, "num_classes", None)
    if num_classes is None:  # REPA-E keeps it on the model; diffusers models in their config
        config = getattr(transformer, "config", None)
        num_classes = getattr(config, "num_classes", vars(transformer).get("num_classes"))
    if (
        isinstance(table, nn.Embedding)
        and num_classes is not None
        and table.num_embeddings > int(num_classes)
    ):
        return torch.tensor([int(num_classes)], dtype=torch.long)
    return None


def _scaling(scale: Any, bias: Any) -> LatentScaling:
    s = torch.as_tensor(scale, dtype=torch.float32).reshape(-1)
    b = torch.as_tensor(bias, dtype=torch.float32).reshape(-1)
    if not torch.isfinite(s).all() or (s <= 0).any():
        raise ModelAccessError(f"latent statistics give a non-positive scale {s.tolist()}")
    return LatentScaling(tuple(s.tolist()), tuple(b.tolist()))


def _stats_files(folder: Path) -> list[Path]:
    found = []
    for where in (folder, folder / "transformer", folder / "vae"):
        if where.is_dir():
            found += [
                p
                for p in sorted(where.iterdir())
                if p.is_file() and any(n in p.name for n in STATS_FILE_TAGS)
            ]
    return found


def _read_stats_file(path: Path) -> LatentScaling | None:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        values = load_file(path)
    elif path.suffix == ".json":
        values = read_json(path)
    else:
        return None
    found = _named_stats(values.get)
    if found is not None:
        return found[0]
    raise ModelAccessError(
        f"{path} holds {sorted(values)}; expected latents_scale and latents_bias "
        "(or latents_mean and latents_std)"
    )


def _named_stats(get: Any) -> tuple[LatentScaling, str] | None:
    """``(scaling, first name)`` from ``latents_scale``/``latents_bias`` or
    ``latents_mean``/``latents_std`` as ``get(name)`` returns them, else ``None``."""
    for a, b in (("latents_scale", "latents_bias"), ("latents_mean", "latents_std")):
        va, vb = get(a), get(b)
        if va is not None and vb is not None:
            if a == "latents_mean":  # z_model = (z - mean) / std
                va, vb = 1.0 / torch.as_tensor(vb, dtype=torch.float32), va
            return _scaling(va, vb), a
    return None


def _has_stats(bn: Any) -> bool:
    """A REPA-E batch norm that has seen data (not its initial mean 0 / variance 1)."""
    if not isinstance(bn, nn.BatchNorm2d) or bn.running_var is None:
        return False
    tracked = bn.num_batches_tracked
    return bool(tracked is not None and int(tracked) > 0) or not (
        torch.all(bn.running_mean == 0) and torch.all(bn.running_var == 1)
    )


def find_latent_stats(
    folder: Path, transformer: nn.Module, vae: Any, *, bn_loaded: bool, pipe: Any = None
) -> tuple[LatentScaling, str]:
    """``(scaling, where)`` from the first of the documented places (module docstring) that
    holds latent statistics; raises :class:`LatentStatsNotFound` listing every place tried."""
    looked = []
    bn = getattr(transformer, "bn", None)
    if isinstance(bn, nn.BatchNorm2d) and (bn_loaded or _has_stats(bn)):
        var = bn.running_var.detach().float().cpu()
        return _scaling(var.rsqrt(), bn.running_mean.detach().float().cpu()), "bn"
    looked.append("bn.running_mean/bn.running_var in the transformer weights")
    for owner, what in ((pipe, "pipeline"), (transformer, "transformer")):
        if owner is None:
            continue
        found = _named_stats(lambda name, owner=owner: getattr(owner, name, None))
        if found is not None:
            return found[0], f"{what}.{found[1]}"
        looked.append(f"latents_scale/latents_bias (or latents_mean/latents_std) on the {what}")
    pickled = []
    for path in _stats_files(folder):
        scaling = _read_stats_file(path)
        if scaling is not None:
            return scaling, f"file:{path.relative_to(folder)}"
        pickled.append(path.name)
    looked.append(
        f"a stats file latents_stats.safetensors/.json or *latents-stats.safetensors in {folder},"
        f" {folder / 'transformer'} or {folder / 'vae'}"
        + (
            f" (found {', '.join(pickled)}: pickles are refused; save its latents_scale and "
            "latents_bias with safetensors.torch.save_file as latents_stats.safetensors)"
            if pickled
            else ""
        )
    )
    config = getattr(vae, "config", None)
    found = _named_stats(lambda name: getattr(config, name, None))
    if found is not None:
        return found[0], "vae_config"
    looked.append("latents_mean/latents_std in vae/config.json")
    raise LatentStatsNotFound(
        f"{folder}: no latent statistics found (a REPA-E model samples in normalised latents; "
        "the VAE's scalar scaling_factor would give wrong images). Looked for: " + "; ".join(looked)
    )


class ForeignVAE(nn.Module):
    """A VAE that is not a diffusers ``AutoencoderKL`` (e.g. REPA-E's own class), seen through
    the ``encode(x).latent_dist.mean`` / ``decode(z).sample`` surface the adapter uses.

    ``encode`` may return a posterior with ``mean`` (or ``mode()``), ``latent_dist``, or a tensor;
    ``decode`` an object with ``sample`` or a tensor. Geometry is probed on a 64 px image.
    """

    def __init__(self, vae: nn.Module):
        super().__init__()
        self.vae = vae
        param = next(vae.parameters())
        with torch.no_grad():
            z = self._mean(vae.encode(torch.zeros(1, 3, 64, 64, device=param.device)))
        levels = round(math.log2(64 / z.shape[-1])) + 1  # AutoencoderKL: 2 ** (levels - 1)
        self.config = SimpleNamespace(
            latent_channels=int(z.shape[1]), block_out_channels=[0] * levels
        )

    @staticmethod
    def _mean(out: Any) -> torch.Tensor:
        out = getattr(out, "latent_dist", out)
        if isinstance(out, tuple | list):
            out = out[0]
        if isinstance(out, torch.Tensor):
            return out
        mean = getattr(out, "mean", None)
        if isinstance(mean, torch.Tensor):
            return mean
        return out.mode()

    def encode(self, x: torch.Tensor) -> Any:
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=self._mean(self.vae.encode(x))))

    def decode(self, z: torch.Tensor) -> Any:
        out = self.vae.decode(z)
        return SimpleNamespace(sample=getattr(out, "sample", out))


def _native_parts(folder: Path, index: dict[str, Any], vae_folder: Path | None, dtype):
    from .sit import load_sit
    from .vae import load_autoencoder

    spec = component_spec(index, "vae")
    if vae_folder is None and spec != ("diffusers", "AutoencoderKL"):
        raise ModelAccessError(
            f"{folder}: the native route builds the VAE as diffusers AutoencoderKL, "
            f"model_index.json names {spec}"
        )
    check_safetensors(folder, ["transformer"] + ([] if vae_folder else ["vae"]))
    transformer, bn_loaded = load_sit(folder / "transformer", dtype)
    vae, naming = load_autoencoder(vae_folder or folder / "vae", dtype)
    return transformer, vae, None, bn_loaded, naming


def _remote_parts(folder: Path, label: str, index, options: HubOptions, vae_override, dtype):
    from diffusers import DiffusionPipeline

    check_safetensors(folder, [n for n in ("transformer", "vae") if (folder / n).is_dir()])
    pipeline_file = require_remote_code_files(folder, index, label, options)
    extra = {"vae": vae_override} if vae_override is not None else {}
    with warnings.catch_warnings():  # newer diffusers renamed torch_dtype; both still work
        warnings.simplefilter("ignore", FutureWarning)
        pipe = DiffusionPipeline.from_pretrained(
            folder,
            custom_pipeline=str(pipeline_file) if pipeline_file is not None else None,
            # reached with files to run only after the opt-in (require_remote_code_files)
            trust_remote_code=options.trust_remote_code,
            use_safetensors=True,
            torch_dtype=dtype,
            local_files_only=True,
            **extra,
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
    vae: str | None = None,
) -> BackendModel:
    """Load CytoSyn from its hub id or a local copy of the repository folder.

    ``vae``: another VAE (hub id or folder, diffusers or REPA-E naming) instead of ``vae/``.
    """
    from .vae import load_autoencoder, resolve_vae_folder

    folder, index = fetch_pipeline(source, options, info)
    vae_folder = None
    if vae is not None:
        vae_folder = resolve_vae_folder(
            vae, options, f"Pass vae=<hub id or folder> to {info.name}."
        )
    spec = component_spec(index, "transformer")
    if spec[0] in NATIVE_LIBRARIES and spec[1] == "SiTTransformer":
        transformer, vae_net, pipe, bn_loaded, naming = _native_parts(
            folder, index, vae_folder, dtype
        )
        route, null = "native", None
    else:
        override = load_autoencoder(vae_folder, dtype)[0] if vae_folder else None
        transformer, vae_net, pipe = _remote_parts(
            folder, str(source), index, options, override, dtype
        )
        route, bn_loaded, naming = "remote_code", False, "pipeline"
        null = null_label(transformer, pipe)
    scaling, scaling_from = find_latent_stats(
        folder, transformer, vae_net, bn_loaded=bn_loaded, pipe=pipe
    )
    cond_dim = getattr(getattr(transformer, "config", None), "cond_dim", 768)
    ref = embedder
    if ref is None and cond_dim is not None:
        ref = TimmReferenceEncoder(H0_MINI, device)
    provenance = {
        **weights_origin(source, options, folder),
        "load_route": route,
        "vae_source": str(vae) if vae is not None else "vae/",
        "vae_naming": naming,
    }
    return assemble_cytosyn(
        info, transformer, vae_net, device, dtype, scaling, scaling_from, ref, null, provenance
    )


def assemble_cytosyn(
    info: ModelInfo,
    transformer: nn.Module,
    vae: nn.Module,
    device: torch.device,
    dtype: torch.dtype,
    scaling: LatentScaling,
    scaling_from: str,
    embedder: Any = None,
    null: Any = None,
    provenance: dict[str, Any] | None = None,
) -> BackendModel:
    """Wrap a SiT velocity network and an SD-VAE into the protocol model (used by the loader
    and by benchmarks that build a randomly initialised CytoSyn-shaped model in memory).

    ``null``: what the transformer takes for "no reference" (``None`` for our SiT, whose
    ``forward`` maps ``y=None`` to its null label).
    """
    transformer.to(device, dtype).eval()
    vae.to(device, dtype).eval()
    if not type(vae).__module__.startswith("diffusers."):
        vae = ForeignVAE(vae)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    config = getattr(transformer, "config", None)
    cond_dim = getattr(config, "cond_dim", 768)
    sample_size = getattr(config, "sample_size", info.tile_px // factor)
    return BackendModel(
        name=info.name,
        vae=vae,
        net=SiTVelocityNet(transformer, null),
        interpolant=FlowInterpolant(),
        target="flow",
        mpp=info.mpp,
        tile_px=int(sample_size) * factor,
        latent_factor=factor,
        latent_channels=int(vae.config.latent_channels),
        scaling=scaling,
        dtype=dtype,
        uncond=UNCOND,
        embedder=embedder if cond_dim is not None else None,
        embed_error="this checkpoint was built without reference conditioning",
        info={
            **(provenance or {}),
            "backend": "cytosyn",
            "latent_scaling_from": scaling_from,
            "recommended": dict(info.defaults),
        },
    )
