"""The embedded default model ``cytosyn-tiny``: weights shipped inside the package, no network.

A small f8/4-channel ``AutoencoderKL`` and a rectified-flow ``UNet2DModel`` trained with
``scripts/train_embedded.py`` on two public H&E images at 0.5 um/px (see ``docs/models.md``).
It goes through the same adapter as CytoSyn: the UNet predicts the flow velocity
``v = eps - z0`` on the linear path ``z_t = (1 - t) z0 + t eps`` and
:class:`~napari_cytosyn.models.latent.LatentDiffusion` turns it into an x0 estimate.

Version 2 adds, when their files are in the weights folder:

- reference conditioning (``cond/descriptor_mlp.safetensors``): ``embed(rgb)`` computes the fixed
  tissue descriptor of :mod:`~napari_cytosyn.models.tissue_descriptor` (normalised with the
  training statistics in ``cytosyn_tiny.json``), a small head adds it to the UNet's time
  embedding; ``cond=None`` or ``"uncond"`` is the classifier-free null condition;
- a 40x decoder (``vae_x2/``): :func:`load_embedded` with ``scale="40x"`` gives
  ``cytosyn-tiny-40x``, the same latents decoded to 0.25 um/px (tile 448 px, latent factor 16),
  so a 40x slide is inpainted without upsampling;
- frozen GroupNorm statistics of each decoder (``decoder_norm_stats.safetensors`` next to it):
  the model then carries ``frozen_norm_model``, the same model with a local decoder, which lazy
  slides use to decode a chunk from its own crop (``LazySpec.decode_norm="frozen"``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WEIGHTS_DIR = Path(__file__).parent / "weights" / "cytosyn-tiny"
CONFIG_NAME = "cytosyn_tiny.json"
SCALES = {"20x": "cytosyn-tiny", "40x": "cytosyn-tiny-40x"}
#: Decode halo (latents) of lazy chunks with the frozen decoder: the smallest measured without a
#: seam at the chunk lines (``benchmarks/frozen_norm_decoder.py --halo H``, float32; seam of a
#: whole-region decode 0.995 / 0.998): 20x 1.024 at halo 2, 0.997 at 4; 40x 1.154 at 2, 0.993 at 4.
FROZEN_HALO_LATENT = {"20x": 2, "40x": 4}


def name_for_scale(scale: str) -> str:
    """Registry name of the embedded model at ``scale`` (``"20x"`` or ``"40x"``)."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r} for the embedded model; use 20x or 40x")
    return SCALES[scale]


def scale_for_mpp(mpp: float | None) -> str:
    """``"40x"`` for slides at 0.2-0.35 um/px (where the 40x decoder applies), else ``"20x"``."""
    if mpp is not None and 0.2 <= float(mpp) <= 0.35:
        return "40x"
    return "20x"


def has_40x_decoder(path: Path | str = WEIGHTS_DIR) -> bool:
    """Whether the weights folder holds the 40x decoder (``vae_x2/``, v2 weights)."""
    return (Path(path) / "vae_x2" / "x2_decoder.safetensors").is_file()


def match_slide_scale(name: str, slide_mpp: float | None) -> tuple[str, str | None]:
    """The embedded model name that generates at ``slide_mpp`` without resampling.

    ``cytosyn-tiny`` on a 40x slide (0.2-0.35 um/px) becomes ``cytosyn-tiny-40x`` when the 40x
    decoder is installed; any other name is returned unchanged. Returns ``(name, message)``,
    ``message`` saying which model is used and why (``None`` when nothing changed).
    """
    if name != "cytosyn-tiny" or scale_for_mpp(slide_mpp) != "40x" or not has_40x_decoder():
        return name, None
    return "cytosyn-tiny-40x", (
        f"the slide is at {float(slide_mpp):g} um/px (40x): using cytosyn-tiny-40x, which "
        "generates at 0.25 um/px (the same model with its 40x decoder; no upsampling)"
    )


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
    """``net(z_t, t, cond)`` for :class:`LatentDiffusion`: the UNet sees ``t * timestep_scale``.

    With a conditioning head ``mlp``, ``cond`` is a normalised descriptor ``(B, D)`` or
    ``(1, D)`` (broadcast), or ``None`` / ``"uncond"`` for the null condition.
    """

    def __init__(self, unet, timestep_scale: float, mlp=None):
        self.unet = unet
        self.timestep_scale = float(timestep_scale)
        self.mlp = mlp

    def _class_labels(self, cond, batch: int, like):
        import torch

        n_in = self.mlp[0].in_features
        if cond is None or (isinstance(cond, str) and cond == "uncond"):
            c = torch.zeros(batch, n_in, dtype=like.dtype, device=like.device)
        else:
            d = torch.as_tensor(cond).to(like.device, like.dtype)
            if d.ndim != 2 or d.shape[1] != n_in - 1 or d.shape[0] not in (1, batch):
                raise ValueError(
                    f"cytosyn-tiny takes a descriptor of shape (B, {n_in - 1}) or (1, "
                    f"{n_in - 1}) as cond (from model.embed), got {tuple(d.shape)}"
                )
            d = d.expand(batch, -1)
            c = torch.cat([d, torch.ones(batch, 1, dtype=d.dtype, device=d.device)], 1)
        return self.mlp(c)

    def __call__(self, z_t, t, cond=None):
        import torch

        ts = (t * self.timestep_scale).to(z_t.dtype)
        if ts.ndim == 0:
            ts = ts.expand(z_t.shape[0])
        with torch.no_grad():
            if self.mlp is None:
                if cond is not None and not (isinstance(cond, str) and cond == "uncond"):
                    raise ValueError("this cytosyn-tiny has no conditioning head; pass cond=None")
                return self.unet(z_t, ts).sample
            labels = self._class_labels(cond, z_t.shape[0], z_t)
            return self.unet(z_t, ts, class_labels=labels).sample


class DescriptorEmbedder:
    """``embed`` of cytosyn-tiny: ``rgb (B, 3, H, W)`` in [-1, 1] at the model's mpp ->
    normalised tissue descriptors ``(B, D)`` float32 (deterministic, no network).

    Pixels at 0.25 um/px (the 40x model) are averaged 2 x 2 to the descriptor's 0.5 um/px first.
    """

    def __init__(self, mean, std, model_mpp: float, descriptor_mpp: float = 0.5):
        import numpy as np

        self.mean = np.asarray(mean, dtype=np.float64)
        self.std = np.asarray(std, dtype=np.float64)
        self.factor = max(1, round(descriptor_mpp / model_mpp))
        self.mpp = descriptor_mpp

    def __call__(self, rgb):
        import numpy as np
        import torch
        import torch.nn.functional as F

        from .tissue_descriptor import describe

        x = torch.as_tensor(rgb).detach().float().cpu()
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"embed expects (B, 3, H, W) RGB in [-1, 1], got {tuple(x.shape)}")
        if x.shape[-1] < 32 * self.factor or x.shape[-2] < 32 * self.factor:
            raise ValueError(
                f"the reference is too small ({x.shape[-2]} x {x.shape[-1]} px); give at least "
                f"{32 * self.factor} px a side (a full tile is best)"
            )
        if self.factor > 1:
            x = F.avg_pool2d(x, self.factor)
        u8 = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        raw = np.stack([describe(im, self.mpp) for im in u8])
        return torch.from_numpy((raw - self.mean) / self.std).float()


def load_embedded(
    device: str = "cpu", dtype=None, path: Path | str = WEIGHTS_DIR, scale: str = "20x"
):
    """Load ``cytosyn-tiny`` from the package folder, offline (``local_files_only``, safetensors).

    Parameters
    ----------
    device: torch device string, e.g. ``"cpu"`` or ``"cuda"``.
    dtype: torch dtype of the networks; ``None`` means float32.
    path: folder with ``vae/``, ``unet/`` and ``cytosyn_tiny.json`` (v2 also ``cond/`` and
        ``vae_x2/``); the shipped one by default.
    scale: ``"20x"`` (0.5 um/px, 224 px tiles, latent factor 8) or ``"40x"`` (the same latents
        decoded by the 40x decoder: 0.25 um/px, 448 px tiles, latent factor 16; named
        ``cytosyn-tiny-40x``).

    Returns
    -------
    :class:`~napari_cytosyn.models.backend.BackendModel` (a
    :class:`~napari_cytosyn.models.latent.LatentDiffusion`) with ``target="flow"`` on a
    :class:`~napari_cytosyn.models.protocol.FlowInterpolant`; 4 latent channels. With a
    conditioning head its ``embed`` gives the tissue descriptor and ``uncond`` is ``"uncond"``.
    """
    from .backend import UNCOND, BackendModel
    from .latent import LatentScaling
    from .protocol import FlowInterpolant
    from .tiny_nets import NORM_STATS_NAME, load_frozen_pair

    name = name_for_scale(scale)
    path = Path(path)
    cfg = embedded_config(path)
    vae, unet, dev, dtype = load_frozen_pair(
        path / "vae", path / "unet", device, dtype, "the embedded model"
    )
    mlp = None
    desc = cfg.get("descriptor")
    head = path / "cond" / "descriptor_mlp.safetensors"
    if desc is not None and head.is_file():
        from safetensors.torch import load_file

        from .tiny_nets import descriptor_mlp

        mlp = descriptor_mlp(len(desc["features"]), unet.config.block_out_channels[0] * 4)
        mlp.load_state_dict(load_file(head))
        mlp = mlp.to(dev, dtype).eval().requires_grad_(False)
    mpp, tile_px, factor = float(cfg["mpp"]), int(cfg["tile_px"]), int(cfg["latent_factor"])
    modules: tuple[Any, ...] = () if mlp is None else (mlp,)
    if scale == "40x":
        x2_dir = path / "vae_x2"
        if not (x2_dir / "x2_decoder.safetensors").is_file():
            raise FileNotFoundError(
                f"no 40x decoder (vae_x2/x2_decoder.safetensors) in {path}; these weights are "
                "20x only (cytosyn-tiny v1): use scale='20x'"
            )
        from safetensors.torch import load_file

        from .tiny_nets import X2VAE, X2Decoder

        x2 = X2Decoder(json.loads((x2_dir / "config.json").read_text()))
        x2.load_state_dict(load_file(x2_dir / "x2_decoder.safetensors"))
        x2 = x2.to(dev, dtype).eval().requires_grad_(False)
        vae = X2VAE(vae, x2).eval()
        mpp, tile_px, factor = mpp / 2, tile_px * 2, factor * 2
    info = {
        "source": "embedded",
        "version": int(cfg.get("version", 1)),
        "scale": scale,
        "default_steps": int(cfg.get("default_steps", 16)),
        "conditional": mlp is not None,
        "training": cfg.get("training", {}),
    }
    extra: dict[str, Any] = {"modules": modules}
    if mlp is not None:
        extra["embedder"] = DescriptorEmbedder(desc["mean"], desc["std"], mpp, desc.get("mpp", 0.5))
    else:
        extra["embed_error"] = "this cytosyn-tiny (v1 weights) takes no reference conditioning"
    model = BackendModel(
        name=name,
        vae=vae,
        net=_FlowUNet(unet, cfg["timestep_scale"], mlp),
        interpolant=FlowInterpolant(),
        target="flow",
        mpp=mpp,
        tile_px=tile_px,
        latent_factor=factor,
        latent_channels=int(cfg["latent_channels"]),
        scaling=LatentScaling(scale=tuple(cfg["latent_scale"]), shift=tuple(cfg["latent_shift"])),
        dtype=dtype,
        uncond=UNCOND if mlp is not None else None,
        info=info,
        **extra,
    )
    stats = path / ("vae_x2" if scale == "40x" else "vae") / NORM_STATS_NAME
    if stats.is_file():  # lazy chunks decode locally: LazySpec.decode_norm "frozen"
        import dataclasses

        from safetensors.torch import load_file

        from .tiny_nets import frozen_norm_vae

        model.frozen_norm_model = dataclasses.replace(
            model, vae=frozen_norm_vae(vae, load_file(stats))
        )
        model.frozen_norm_halo_latent = FROZEN_HALO_LATENT[scale]
    return model
