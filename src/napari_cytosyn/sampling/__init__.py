"""Sampling engine: schedules, samplers, tiling, lazy random access, inpainting, noise.

Pure torch/numpy; imports no zarr, openslide, napari or Qt. Torch-using names are imported
lazily on first access, so ``from napari_cytosyn.sampling import SamplerSettings`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from .recipe import make_recipe, recipe_differences, settings_of
from .settings import (
    SAMPLERS,
    Cancelled,
    DecodeConfig,
    InpaintConfig,
    RegionConfig,
    SamplerSettings,
)

_LAZY = {
    "noise": ".counter_noise",
    "noise_field": ".counter_noise",
    "time_grid": ".schedules",
    "get_sampler": ".samplers",
    "model_denoiser": ".samplers",
    "decode_tiled": ".tiling",
    "generate_region": ".region",
    "seam_score": ".metrics",
    "lattice_lines": ".metrics",
    "LazySpec": ".lazy",
    "PhaseCache": ".lazy",
    "MemoryPhaseCache": ".lazy",
    "render_chunk": ".lazy",
    "render_region_lazy": ".lazy",
    "final_latents": ".lazy",
    "inpaint": ".inpainting",
    "ConditionField": ".conditioning",
    "is_conditional": ".conditioning",
    "require_conditional": ".conditioning",
    "surround_field": ".conditioning",
    "resolve_autocast": ".precision",
    "resolve_settings": ".precision",
}

__all__ = [
    "SAMPLERS",
    "Cancelled",
    "DecodeConfig",
    "InpaintConfig",
    "RegionConfig",
    "SamplerSettings",
    "make_recipe",
    "recipe_differences",
    "settings_of",
    *sorted(_LAZY),
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
