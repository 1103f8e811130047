"""Reference encoders for conditioning: H0-mini (CytoSyn) and UNI2-h (PixCell), through timm.

Both are gated Hub models, loaded (``timm.create_model("hf-hub:<id>", pretrained=True)``, usual
token, cache and offline settings) the first time a reference is embedded, so a user without
access can still sample unconditionally; missing timm or access is a
:class:`~.hub.ModelAccessError` saying what to do. The embedding is the class token after the
final norm, on the region resized to 224 px and normalised with the model's pretrained mean/std;
PixCell-1024 embeds a 4 x 4 grid of 256 px crops, row-major.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.nn import functional as F

from .hub import ModelAccessError

H0_MINI = "bioptimus/H0-mini"
UNI2_H = "MahmoodLab/UNI2-h"

# Architecture arguments from the public model cards (timm needs them to rebuild the nets).
_TIMM_KWARGS: dict[str, Callable[[], dict[str, Any]]] = {
    H0_MINI: lambda: _swiglu_kwargs(),
    UNI2_H: lambda: {
        "img_size": 224,
        "patch_size": 14,
        "depth": 24,
        "num_heads": 24,
        "init_values": 1e-5,
        "embed_dim": 1536,
        "mlp_ratio": 2.66667 * 2,
        "num_classes": 0,
        "no_embed_class": True,
        "reg_tokens": 8,
        "dynamic_img_size": True,
        **_swiglu_kwargs(),
    },
}


def _swiglu_kwargs() -> dict[str, Any]:
    import timm

    return {"mlp_layer": timm.layers.SwiGLUPacked, "act_layer": torch.nn.SiLU}


class TimmReferenceEncoder:
    """Lazily loaded timm ViT: ``rgb (B, 3, H, W) in [-1, 1] -> (B, D)`` class-token features."""

    def __init__(self, hub_id: str, device: torch.device, input_px: int = 224):
        self.hub_id = hub_id
        self.device = device
        self.input_px = input_px
        self._model = None
        self._mean = self._std = None

    def _load(self) -> None:
        try:
            import timm
        except ImportError:
            raise ModelAccessError(
                f"reference conditioning needs {self.hub_id} through timm, which is not "
                f"installed: `pip install timm`, then request access to {self.hub_id} at "
                f"https://huggingface.co/{self.hub_id}."
            ) from None
        try:
            model = timm.create_model(
                f"hf-hub:{self.hub_id}", pretrained=True, **_TIMM_KWARGS[self.hub_id]()
            )
        except Exception as err:  # timm surfaces hub errors in many types
            raise ModelAccessError(
                f"could not load {self.hub_id} for reference conditioning ({err}). It is a gated "
                f"model: accept its licence at https://huggingface.co/{self.hub_id}, log in or "
                "set HF_TOKEN, and download it once while online."
            ) from err
        cfg = timm.data.resolve_data_config({}, model=model)
        self._mean = torch.tensor(cfg["mean"]).reshape(1, 3, 1, 1)
        self._std = torch.tensor(cfg["std"]).reshape(1, 3, 1, 1)
        self._model = model.eval().to(self.device)

    @torch.no_grad()
    def __call__(self, rgb: torch.Tensor) -> torch.Tensor:
        if self._model is None:
            self._load()
        x = (rgb.float().to(self.device) + 1.0) / 2.0
        x = F.interpolate(x, size=(self.input_px, self.input_px), mode="bilinear", antialias=True)
        x = (x - self._mean.to(x.device)) / self._std.to(x.device)
        return self._model.forward_features(x)[:, 0].float()


def grid_embedder(
    encoder: Callable[[torch.Tensor], torch.Tensor], grid: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Embed a region as ``grid x grid`` crops: ``(B,3,H,W) -> (B, grid*grid, D)``, row-major."""

    def embed(rgb: torch.Tensor) -> torch.Tensor:
        b, _, h, w = rgb.shape
        if h % grid or w % grid:
            raise ValueError(f"reference region {h}x{w} px does not split into {grid}x{grid} crops")
        ch, cw = h // grid, w // grid
        crops = rgb.reshape(b, 3, grid, ch, grid, cw).permute(0, 2, 4, 1, 3, 5)
        feats = encoder(crops.reshape(b * grid * grid, 3, ch, cw))
        return feats.reshape(b, grid * grid, -1)

    return embed
