"""The embedded default model ``cytosyn-tiny``: weights shipped inside the package, no network.

A small f8/4-channel ``AutoencoderKL`` and a rectified-flow ``UNet2DModel`` trained with
``scripts/train_embedded.py`` on two public H&E images at 0.5 um/px (see ``docs/models.md``).
It goes through the same adapter as CytoSyn: the UNet predicts the flow velocity
``v = eps - z0`` on the linear path ``z_t = (1 - t) z0 + t eps`` and
:class:`~napari_cytosyn.models.latent.LatentDiffusion` turns it into an x0 estimate.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WEIGHTS_DIR = Path(__file__).parent / "weights" / "cytosyn-tiny"
CONFIG_NAME = "cytosyn_tiny.json"


def embedded_config(path: Path | str = WEIGHTS_DIR) -> dict[str, Any]:
    """The model-level config (latent scaling, timestep scale, training record) as a dict."""
    cfg_path = Path(path) / CONFIG_NAME
    if not cfg_path.is_file():
        raise FileNotFoundError(
            f"no {CONFIG_NAME} in {path}; the embedded weights are missing from this install "
            "(reinstall napari-cytosyn, or train them with scripts/train_embedded.py)"
        )
    return json.loads(cfg_path.read_text())


class _FlowUNet:
    """``net(z_t, t, cond)`` for :class:`LatentDiffusion`: the UNet sees ``t * timestep_scale``."""

    def __init__(self, unet, timestep_scale: float):
        self.unet = unet
        self.timestep_scale = float(timestep_scale)

    def __call__(self, z_t, t, cond=None):
        import torch

        ts = (t * self.timestep_scale).to(z_t.dtype)
        if ts.ndim == 0:
            ts = ts.expand(z_t.shape[0])
        with torch.no_grad():
            return self.unet(z_t, ts).sample


def load_embedded(device: str = "cpu", dtype=None, path: Path | str = WEIGHTS_DIR):
    """Load ``cytosyn-tiny`` from the package folder, offline (``local_files_only``, safetensors).

    Parameters
    ----------
    device: torch device string, e.g. ``"cpu"`` or ``"cuda"``.
    dtype: torch dtype of the networks; ``None`` means float32.
    path: folder with ``vae/``, ``unet/`` and ``cytosyn_tiny.json``; the shipped one by default.

    Returns
    -------
    :class:`~napari_cytosyn.models.latent.LatentDiffusion` with ``target="flow"`` on a
    :class:`~napari_cytosyn.models.protocol.FlowInterpolant`; 224 px tiles (28 x 28 latents)
    at 0.5 um/px, 4 latent channels, latent factor 8.
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DModel

    from .latent import LatentDiffusion, LatentScaling
    from .protocol import FlowInterpolant

    path = Path(path)
    cfg = embedded_config(path)
    dtype = torch.float32 if dtype is None else dtype
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"invalid device {device!r} for the embedded model: {err}") from err
    opts = dict(local_files_only=True, use_safetensors=True, torch_dtype=dtype)
    vae = AutoencoderKL.from_pretrained(path / "vae", **opts).to(dev).eval()
    unet = UNet2DModel.from_pretrained(path / "unet", **opts).to(dev).eval()
    vae.requires_grad_(False)
    unet.requires_grad_(False)
    info = {
        "source": "embedded",
        "default_steps": int(cfg.get("default_steps", 16)),
        "training": cfg.get("training", {}),
    }
    return LatentDiffusion(
        name=cfg.get("name", "cytosyn-tiny"),
        vae=vae,
        net=_FlowUNet(unet, cfg["timestep_scale"]),
        interpolant=FlowInterpolant(),
        target="flow",
        mpp=float(cfg["mpp"]),
        tile_px=int(cfg["tile_px"]),
        latent_factor=int(cfg["latent_factor"]),
        latent_channels=int(cfg["latent_channels"]),
        scaling=LatentScaling(scale=tuple(cfg["latent_scale"]), shift=tuple(cfg["latent_shift"])),
        dtype=dtype,
        info=info,
    )
