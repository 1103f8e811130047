"""``cytosyn-tiny-cells``: the embedded mask-conditioned model (nuclei where a layout says).

A rectified-flow ``UNet2DModel`` on the latents of ``cytosyn-tiny``'s autoencoder (shared: the VAE
and latent scaling are read from ``weights/cytosyn-tiny``), trained by ``scripts/train_cells.py``
on pseudo-labels of a classical segmentation (``docs/models.md``). ``cond`` is
``{"mask": (B, 1, H_px, W_px)}`` float at pixel resolution, 1 on nuclei, touching nuclei split by a
one-pixel gap (:func:`layout_mask`); ``None`` or no ``"mask"`` is the unconditional branch. The
network sees the noisy latent, the mask pixel-unshuffled by the latent factor (lossless) and a
constant "layout present" channel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

WEIGHTS_DIR = Path(__file__).parent / "weights" / "cytosyn-tiny-cells"
CONFIG_NAME = "cytosyn_tiny_cells.json"
#: cytosyn-tiny's folder, whose ``vae/`` and latent scaling (``cytosyn_tiny.json``) are shared;
#: read directly so that this module does not import the embedded backend.
TINY_DIR = Path(__file__).parent / "weights" / "cytosyn-tiny"
TINY_CONFIG_NAME = "cytosyn_tiny.json"


def layout_mask(labels: np.ndarray) -> np.ndarray:
    """Instance labels ``(H, W)`` int -> float32 mask, 1 on nuclei, 0 on background and on the
    pixels where two different nuclei touch (so instances stay separable in a binary mask)."""
    from scipy import ndimage as ndi

    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise ValueError(f"labels must be a 2-D instance image, got shape {lab.shape}")
    lab = lab.astype(np.int64)
    big = np.iinfo(np.int64).max
    mx = ndi.maximum_filter(lab, size=3, mode="nearest")
    mn = ndi.minimum_filter(np.where(lab == 0, big, lab), size=3, mode="nearest")
    touching = (lab > 0) & ((mx > lab) | (mn < lab))
    return ((lab > 0) & ~touching).astype(np.float32)


def cond_channels(mask, latent_factor: int = 8):
    """``(B, 1, H, W)`` mask -> ``(B, f*f, H/f, W/f)``: each latent cell's ``f x f`` pixels."""
    import torch.nn.functional as F

    return F.pixel_unshuffle(mask, latent_factor)


class _CellsUNet:
    """``net(z_t, t, cond)``: concatenates the unshuffled layout and the presence channel."""

    def __init__(self, unet, timestep_scale: float, latent_factor: int):
        self.unet = unet
        self.timestep_scale = float(timestep_scale)
        self.latent_factor = int(latent_factor)

    def inputs(self, z_t, cond: Any):
        import torch

        b, _, h, w = z_t.shape
        f = self.latent_factor
        mask = cond.get("mask") if isinstance(cond, dict) else None
        if mask is None:
            extra = torch.zeros((b, f * f + 1, h, w), dtype=z_t.dtype, device=z_t.device)
            return torch.cat([z_t, extra], 1)
        mask = torch.as_tensor(mask).to(z_t.device, z_t.dtype)
        if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[2:] != (h * f, w * f):
            raise ValueError(
                f"cond['mask'] must be (B, 1, {h * f}, {w * f}) for latents {tuple(z_t.shape)}, "
                f"got {tuple(mask.shape)}"
            )
        if mask.shape[0] == 1 and b > 1:
            mask = mask.expand(b, -1, -1, -1)
        ones = torch.ones((b, 1, h, w), dtype=z_t.dtype, device=z_t.device)
        return torch.cat([z_t, cond_channels(mask, f), ones], 1)

    def __call__(self, z_t, t, cond=None):
        import torch

        ts = (t * self.timestep_scale).to(z_t.dtype)
        if ts.ndim == 0:
            ts = ts.expand(z_t.shape[0])
        with torch.no_grad():
            return self.unet(self.inputs(z_t, cond), ts).sample


def _read_config(path: Path | str, name: str, hint: str) -> dict[str, Any]:
    import json

    cfg_path = Path(path) / name
    if not cfg_path.is_file():
        raise FileNotFoundError(f"no {name} in {path}; {hint}")
    return json.loads(cfg_path.read_text())


def cells_config(path: Path | str = WEIGHTS_DIR) -> dict[str, Any]:
    """The model-level config (timestep scale, training record) of the cells model."""
    return _read_config(
        path, CONFIG_NAME, "the mask-conditioned weights are missing (scripts/train_cells.py)"
    )


def tiny_config(path: Path | str = TINY_DIR) -> dict[str, Any]:
    """cytosyn-tiny's config: the shared autoencoder's latent scaling, mpp, tile and factor."""
    return _read_config(
        path, TINY_CONFIG_NAME, "cytosyn-tiny's weights are missing from this install"
    )


def load_cells(device: str = "cpu", dtype=None):
    """Load ``cytosyn-tiny-cells`` offline: its UNet, and cytosyn-tiny's VAE and latent scaling.

    Returns a :class:`~napari_cytosyn.models.latent.LatentDiffusion` (flow target, 224 px tiles,
    0.5 um/px) whose ``denoise`` takes ``cond={"mask": (B, 1, H_px, W_px)}``; ``uncond`` is the
    empty dict, so classifier-free guidance works with ``guidance != 1``.
    """
    from .latent import LatentDiffusion, LatentScaling
    from .protocol import FlowInterpolant
    from .tiny_nets import load_frozen_pair

    path, vae_path = Path(WEIGHTS_DIR), Path(TINY_DIR)
    cfg = cells_config(path)
    tiny = tiny_config(vae_path)
    vae, unet, _dev, dtype = load_frozen_pair(
        vae_path / "vae", path / "unet", device, dtype, str(cfg.get("name"))
    )
    _undo_colour_match(vae, tiny)
    f = int(tiny["latent_factor"])
    return LatentDiffusion(
        name=cfg.get("name", "cytosyn-tiny-cells"),
        vae=vae,
        net=_CellsUNet(unet, cfg["timestep_scale"], f),
        interpolant=FlowInterpolant(),
        target="flow",
        mpp=float(tiny["mpp"]),
        tile_px=int(tiny["tile_px"]),
        latent_factor=f,
        latent_channels=int(tiny["latent_channels"]),
        scaling=LatentScaling(scale=tuple(tiny["latent_scale"]), shift=tuple(tiny["latent_shift"])),
        dtype=dtype,
        uncond={},
        info={
            "source": "embedded",
            "conditioning": "nucleus mask",
            "default_steps": int(cfg.get("default_steps", 16)),
            "training": cfg.get("training", {}),
        },
    )


def _undo_colour_match(vae, tiny: dict) -> None:
    """Give the shared 20x decoder back its output bias before cytosyn-tiny's colour match.

    The match (``train_embedded.py --colour-match``) shifts the bias so that cytosyn-tiny's
    conditioned samples have the real mean stain; this model's mask-conditioned nuclei were
    trained and checked against segmenters with the decoder before it, and the shift darkens their
    cores so far that Otsu splits nuclei into core and rim.
    """
    import torch

    offset = tiny.get("training", {}).get("colour_offset", {}).get("20x")
    if offset:
        bias = vae.decoder.conv_out.bias
        with torch.no_grad():
            bias -= torch.tensor(offset, dtype=bias.dtype, device=bias.device)
