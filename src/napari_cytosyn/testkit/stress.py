"""Stress variants of one synthetic image: the same nuclei under stain, blur, JPEG, noise,
inpainted artefacts, scale. Deterministic (seeded); only ``scale`` resamples the labels, and
``inpaint`` needs the synthesis model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .layouts import resample_labels

KINDS = ("clean", "stain_h", "stain_e", "hue", "blur", "jpeg", "noise", "inpaint", "scale")


@dataclass(frozen=True)
class Variant:
    """One stress variant: ``kind`` with strength ``value``.

    ``clean``; ``stain_h``/``stain_e`` (haematoxylin/eosin concentration times ``value``); ``hue``
    (rotated by ``value`` turns); ``blur`` (Gaussian sigma, px); ``jpeg`` (quality); ``noise``
    (Gaussian sd, grey levels); ``inpaint`` (an ellipse of ``value`` of the area generated again on
    the same layout and blended in as edits are: a synthetic patch with its seam inside tissue,
    while the truth still holds); ``scale`` (resampled to ``value`` um/px, 0.25 for 40x).
    """

    name: str
    kind: str
    value: float = 0.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"unknown stress kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        if self.kind == "jpeg" and not 1 <= self.value <= 100:
            raise ValueError(f"JPEG quality must be in [1, 100], got {self.value}")
        if self.kind in ("blur", "noise") and self.value < 0:
            raise ValueError(f"{self.kind} strength must be >= 0, got {self.value}")
        if self.kind in ("stain_h", "stain_e", "scale") and self.value <= 0:
            raise ValueError(f"{self.kind} value must be > 0, got {self.value}")
        if self.kind == "inpaint" and not 0 < self.value < 1:
            raise ValueError(f"inpaint area fraction must be in (0, 1), got {self.value}")


#: The default set: one run shows where a tool breaks.
DEFAULT_VARIANTS = (
    Variant("clean", "clean"),
    Variant("pale_hematoxylin", "stain_h", 0.5),
    Variant("dark_hematoxylin", "stain_h", 1.6),
    Variant("strong_eosin", "stain_e", 1.8),
    Variant("hue_shift", "hue", 0.06),
    Variant("blur", "blur", 1.5),
    Variant("jpeg_q20", "jpeg", 20),
    Variant("noise", "noise", 15.0),
    Variant("inpainted", "inpaint", 0.3),
    Variant("scale_40x", "scale", 0.25),
)


def variants_by_name(names: str | list[str] | None) -> list[Variant]:
    """The default variants named in ``names`` (comma-separated or a list; ``None``/"all": all)."""
    if names is None or names == "all":
        return list(DEFAULT_VARIANTS)
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    known = {v.name: v for v in DEFAULT_VARIANTS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown stress variants {unknown}; choose from {', '.join(known)}")
    return [known[n] for n in names]


def inpaint_region(shape: tuple[int, int], fraction: float, seed: int = 0) -> np.ndarray:
    """An ellipse ``(H, W)`` bool covering about ``fraction`` of the image, inside it, at a
    seeded place and aspect (the region the ``inpaint`` variant generates again)."""
    h, w = int(shape[0]), int(shape[1])
    rng = np.random.default_rng([seed, 104729])
    aspect = rng.uniform(0.7, 1.4)
    ry = min(h / 2 - 1, np.sqrt(fraction * h * w / np.pi * aspect))
    rx = min(w / 2 - 1, fraction * h * w / np.pi / max(ry, 1.0))
    cy = rng.uniform(ry, h - ry)
    cx = rng.uniform(rx, w - rx)
    yy, xx = np.ogrid[:h, :w]
    return ((yy + 0.5 - cy) / ry) ** 2 + ((xx + 0.5 - cx) / rx) ** 2 <= 1.0


def apply_variant(
    rgb: np.ndarray,
    labels: np.ndarray,
    mpp: float,
    variant: Variant,
    seed: int = 0,
    model: Any = None,
    steps: int | None = None,
) -> tuple[np.ndarray, np.ndarray, float]:
    """``(rgb (H, W, 3) uint8, labels (H, W) int32, mpp)`` under ``variant``.

    ``model``: the mask-conditioned synthesis model, for variants that generate tissue
    (``inpaint``; ``steps``: its sampler steps, default the model's)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image (H, W, 3), got {rgb.shape} {rgb.dtype}")
    k, v = variant.kind, float(variant.value)
    if k == "clean":
        return rgb.copy(), labels.copy(), mpp
    if k in ("stain_h", "stain_e"):
        from skimage.color import hed2rgb, rgb2hed

        hed = rgb2hed(rgb)
        hed[..., 0 if k == "stain_h" else 1] *= v
        return _to_uint8(hed2rgb(hed) * 255), labels.copy(), mpp
    if k == "hue":
        from skimage.color import hsv2rgb, rgb2hsv

        hsv = rgb2hsv(rgb)
        hsv[..., 0] = (hsv[..., 0] + v) % 1.0
        return _to_uint8(hsv2rgb(hsv) * 255), labels.copy(), mpp
    if k == "blur":
        from scipy import ndimage as ndi

        out = ndi.gaussian_filter(rgb.astype(np.float32), (v, v, 0))
        return _to_uint8(out), labels.copy(), mpp
    if k == "jpeg":
        import imagecodecs

        return imagecodecs.jpeg_decode(imagecodecs.jpeg_encode(rgb, level=int(v))), labels, mpp
    if k == "noise":
        rng = np.random.default_rng([seed, 7919])
        return _to_uint8(rgb + rng.normal(0.0, v, rgb.shape)), labels.copy(), mpp
    if k == "inpaint":
        if model is None:
            raise ValueError(
                f"stress variant {variant.name!r} generates tissue: pass the synthesis model "
                "(model=...), or leave the variant out"
            )
        from .synthesis import inpaint_layout

        region = inpaint_region(labels.shape, v, seed)
        out = inpaint_layout(rgb, labels, region, model, seed=seed + 1, steps=steps)
        return out, labels.copy(), mpp
    # scale
    from skimage.transform import rescale

    factor = mpp / v
    out = rescale(
        rgb, factor, order=3, channel_axis=2, anti_aliasing=factor < 1, preserve_range=True
    )
    lab = resample_labels(labels, factor)
    out = _to_uint8(out)[: lab.shape[0], : lab.shape[1]]
    return out, lab[: out.shape[0], : out.shape[1]], v


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)
