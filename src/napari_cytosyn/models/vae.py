"""Autoencoders from a model folder or from a separate source (``load_model(..., vae=...)``).

PixCell's repositories ship ``vae/config.json`` without weights and a user may hold a VAE
anywhere, so a VAE can be given separately: a folder with ``config.json`` and safetensors, one
with a ``vae/`` sub-folder, or a hub id whose ``vae/`` (or root) holds them. Only the VAE's own
files are downloaded (a repository's transformer is never fetched); diffusers and REPA-E naming
both load, strictly.
"""

from __future__ import annotations

from pathlib import Path

import torch

from .hub import HubOptions, ModelAccessError, fetch, is_local_source, read_json
from .repae_vae import SD_VAE_F8D4_CONFIG, is_repae_vae_state, repae_to_diffusers

#: The VAE PixCell was trained with, and where its model cards load it from.
SD35_VAE_REPO = "stabilityai/stable-diffusion-3.5-large"
_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors",)


def has_weights(folder: Path) -> bool:
    """True when ``folder`` holds at least one ``.safetensors`` file."""
    return folder.is_dir() and any(folder.glob("*.safetensors"))


def load_autoencoder(folder: Path, dtype: torch.dtype = torch.float32):
    """``(AutoencoderKL, naming)`` from ``folder``: its ``config.json`` (or the SD-VAE f8d4
    config when there is none) and its safetensors, in ``"diffusers"`` or ``"repa-e"`` naming,
    loaded strictly (errors name the wrong keys)."""
    from diffusers import AutoencoderKL

    from .sit import load_strict, read_safetensors, to_dtype

    folder = Path(folder)
    state = read_safetensors(folder)
    if not state:
        raise ModelAccessError(f"{folder} has no .safetensors weights")
    if (folder / "config.json").is_file():
        config = {k: v for k, v in read_json(folder / "config.json").items() if k[0] != "_"}
    else:
        config = dict(SD_VAE_F8D4_CONFIG)
    naming = "diffusers"
    if is_repae_vae_state(state):
        state, naming = repae_to_diffusers(state), "repa-e"
    vae = AutoencoderKL.from_config(config)
    load_strict(vae, state, f"{folder} ({naming} naming)")
    return to_dtype(vae, dtype), naming


def resolve_vae_folder(source: str, options: HubOptions, why: str) -> Path:
    """The local folder holding the VAE named by ``source`` (a folder or a hub id).

    ``why``: a sentence for error messages (which model needs it and how to pass another).
    """
    if is_local_source(source):
        root = Path(source).expanduser().resolve()
        for folder in (root, root / "vae"):
            if has_weights(folder):
                return folder
        raise ModelAccessError(
            f"VAE folder {root} holds no .safetensors weights (looked in {root} and "
            f"{root / 'vae'}). {why}"
        )
    errors = []
    for sub in ("vae/", ""):
        patterns = [f"{sub}config.json", *(f"{sub}{name}" for name in _WEIGHT_NAMES)]
        try:
            root = fetch(source, options, gated=True, allow_patterns=patterns)
        except ModelAccessError as err:
            errors.append(str(err))
            continue
        folder = root / sub if sub else root
        if has_weights(folder):
            return folder
    detail = errors[0] if errors else f"{source} has no VAE weights in vae/ or at its root"
    raise ModelAccessError(f"could not load the VAE {source}: {detail} {why}")
