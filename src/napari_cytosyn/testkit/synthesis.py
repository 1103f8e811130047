"""Mask-conditioned synthesis: H&E whose nuclei sit where a :class:`~.layouts.Layout` says.

The layout is a per-window condition (:class:`LayoutCondition`): every window of the region
sampler receives the layout mask cropped with it as ``cond={"mask": (B, 1, H_px, W_px)}``, the
protocol of ``cytosyn-tiny-cells`` and of the PixCell mask ControlNet. Any size works.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .layouts import Layout

#: Default model of the kit: the embedded mask-conditioned model (offline).
DEFAULT_MODEL = "cytosyn-tiny-cells"
#: Classifier-free guidance towards the layout: 2 places nuclei where the layout says without
#: the halos of stronger guidance (docs/user-guide/testkit.md).
DEFAULT_GUIDANCE = 2.0
#: RGB of empty glass, painted outside the layout's tissue mask.
GLASS_RGB = (242, 240, 244)


class LayoutCondition:
    """Per-window condition: the layout mask cropped with each window.

    ``mask`` ``(H, W)`` float (1 on nuclei, see :func:`~napari_cytosyn.models.cells.layout_mask`)
    in model pixels, whose pixel ``(0, 0)`` sits at ``origin_px`` of the slide; windows
    reaching outside it see zeros (no nuclei).
    """

    def __init__(self, mask: np.ndarray, latent_factor: int = 8, origin_px=(0, 0)):
        mask = np.asarray(mask, np.float32)
        if mask.ndim != 2:
            raise ValueError(f"layout mask must be 2-D, got shape {mask.shape}")
        self.mask = mask
        self.latent_factor = int(latent_factor)
        self.origin_px = (int(origin_px[0]), int(origin_px[1]))

    def crop(self, y_px: int, x_px: int, h_px: int, w_px: int) -> np.ndarray:
        """``(h_px, w_px)`` float32 crop at absolute px ``(y_px, x_px)``, zero outside."""
        out = np.zeros((h_px, w_px), np.float32)
        y0, x0 = y_px - self.origin_px[0], x_px - self.origin_px[1]
        ya, xa = max(0, y0), max(0, x0)
        yb = min(self.mask.shape[0], y0 + h_px)
        xb = min(self.mask.shape[1], x0 + w_px)
        if ya < yb and xa < xb:
            out[ya - y0 : yb - y0, xa - x0 : xb - x0] = self.mask[ya:yb, xa:xb]
        return out

    def for_windows(self, rects) -> dict[str, Any]:
        """``{"mask": (B, 1, h*f, w*f)}`` for windows ``(y, x, h, w)`` in absolute latents."""
        import torch

        f = self.latent_factor
        crops = [self.crop(y * f, x * f, h * f, w * f) for y, x, h, w in rects]
        return {"mask": torch.from_numpy(np.stack(crops))[:, None]}


def load_synthesis_model(name: str = DEFAULT_MODEL, device: str = "auto"):
    """Load a mask-conditioned model by registry name (float32)."""
    from ..models import load_model

    return load_model(name, device=device, dtype="float32")


def synthesize(
    layout: Layout,
    model: Any = None,
    *,
    seed: int = 0,
    steps: int | None = None,
    guidance: float | None = None,
    settings: Any = None,
    glass: bool = True,
    progress: Callable[[int, int], None] | None = None,
    cancel: Any = None,
    reference: np.ndarray | None = None,
) -> np.ndarray:
    """H&E ``(H, W, 3)`` uint8 at the layout's size whose nuclei follow ``layout.labels``.

    ``model``: a mask-conditioned model (default ``cytosyn-tiny-cells``) at ``layout.mpp``.
    ``settings``: a ``SamplerSettings``; otherwise the model's default steps, ``guidance`` (default
    :data:`DEFAULT_GUIDANCE`) and ``seed``. ``glass``: paint outside ``layout.tissue`` as glass.
    ``reference``: RGB uint8 of real tissue at the model's pixel size, for models conditioned on a
    mask and a reference (PixCell's mask ControlNet): place by place when it has the layout's
    size, its mean embedding otherwise. Same layout, model and seed: same pixels.
    """
    from dataclasses import replace

    from ..models.cells import layout_mask
    from ..sampling.region import generate_region

    model = load_synthesis_model() if model is None else model
    if abs(float(model.mpp) - float(layout.mpp)) > 1e-6:
        raise ValueError(
            f"layout is at {layout.mpp} um/px but model {model.name!r} works at {model.mpp}; "
            "resample it with layout_from_labels(labels, mpp=..., model_mpp=model.mpp)"
        )
    if settings is None:
        settings = _default_settings(model, seed, steps, guidance)
    elif steps is not None:
        settings = replace(settings, steps=steps)
    cond = LayoutCondition(layout_mask(layout.labels), model.latent_factor)
    if reference is not None:
        cond = with_reference(cond, model, reference, layout.shape, cancel)
    h, w = layout.shape
    rgb = generate_region(model, settings, 0, 0, h, w, progress=progress, cancel=cancel, cond=cond)
    if glass and not layout.tissue.all():
        rgb = paint_glass(rgb, layout.tissue)
    return rgb


def with_reference(
    layout_cond: LayoutCondition, model: Any, reference: np.ndarray, shape: Any, cancel: Any = None
) -> Any:
    """The layout condition joined with a reference image's embedding field, as one
    ``{"mask": ..., "uni": ...}`` condition per window (see :func:`synthesize`)."""
    from ..sampling.conditioning import ConditionField, FieldCondition, JointCondition, image_field

    field = image_field(model, reference, cancel=cancel)
    if tuple(np.asarray(reference).shape[:2]) != tuple(shape):
        field = ConditionField.constant(field.embeddings[field.valid].mean(axis=0))
    return JointCondition(mask=layout_cond, uni=FieldCondition(field, model.latent_factor))


def _default_settings(model: Any, seed: int, steps: int | None, guidance: float | None) -> Any:
    from ..models import recommended
    from ..sampling import SamplerSettings

    defaults = recommended(str(getattr(model, "name", "")))
    default_steps = int(getattr(model, "info", {}).get("default_steps", 0))
    return SamplerSettings(
        sampler=defaults.get("sampler", "euler"),
        steps=steps or default_steps or int(defaults.get("steps", 12)),
        seed=seed,
        guidance=DEFAULT_GUIDANCE if guidance is None else guidance,
    )


def inpaint_layout(
    rgb: np.ndarray,
    labels: np.ndarray,
    region: np.ndarray,
    model: Any,
    *,
    seed: int = 0,
    steps: int | None = None,
    guidance: float | None = None,
    cancel: Any = None,
) -> np.ndarray:
    """``rgb`` with ``region`` ``(H, W)`` bool generated again by ``model``, conditioned on the
    same layout ``labels``: new tissue (seed ``seed``) whose nuclei still sit where the labels
    say, blended into the old at the region's border the way inpainting blends edits into
    real slides. Pixels outside ``region`` are unchanged."""
    from ..models.cells import layout_mask
    from ..sampling.inpainting import inpaint

    settings = _default_settings(model, seed, steps, guidance)
    cond = LayoutCondition(layout_mask(labels), model.latent_factor)
    return inpaint(
        model,
        np.asarray(rgb, np.uint8),
        np.asarray(region, bool),
        settings,
        cancel=cancel,
        cond=cond,
    )


def paint_glass(rgb: np.ndarray, tissue: np.ndarray, feather_px: float = 3.0) -> np.ndarray:
    """Blend ``rgb`` towards :data:`GLASS_RGB` outside ``tissue`` (feathered alpha)."""
    from scipy import ndimage as ndi

    alpha = ndi.gaussian_filter(tissue.astype(np.float32), feather_px)[..., None]
    glass = np.asarray(GLASS_RGB, np.float32)
    return (rgb * alpha + glass * (1 - alpha)).round().astype(np.uint8)
