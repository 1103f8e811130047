"""Model backends behind one small protocol (see :mod:`.protocol`).

``load_model(name, device, dtype, **hub_options)`` returns a
:class:`~.protocol.LatentDiffusionModel`; ``available()`` lists the registered models with
their licence and access metadata. Importing this package does not import torch; the backends
are imported when a model is loaded.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from .hub import (
    HubOptions,
    ModelAccessError,
    PickleWeightsRefused,
    RemoteCodeRefused,
    UnknownModelError,
)
from .registry import ModelInfo, available, get_info, parse_name, recommended

if TYPE_CHECKING:
    from .protocol import LatentDiffusionModel

__all__ = [
    "HubOptions",
    "ModelAccessError",
    "ModelInfo",
    "PickleWeightsRefused",
    "RemoteCodeRefused",
    "UnknownModelError",
    "available",
    "get_info",
    "load_model",
    "model_for_slide",
    "recommended",
]

log = logging.getLogger(__name__)


def load_model(
    name: str = "cytosyn-tiny",
    device: str = "auto",
    dtype: str = "auto",
    *,
    embedder: Any = None,
    vae: str | None = None,
    **hub_options: Any,
) -> LatentDiffusionModel:
    """Load a model by registry name, ``name:source``, or ``diffusers:<hub id or folder>``.

    ``device``: ``auto`` (cuda, mps, cpu) or a torch device; ``dtype``: ``auto`` (bf16 on GPUs that
    support it, else float32) or a dtype name. ``embedder``: a reference encoder
    ``rgb (B, 3, H, W) -> (B, D)`` replacing the model's own. ``vae``: hub id or folder of the
    autoencoder to use instead of the repository's ``vae/`` (PixCell: default the SD3.5 VAE, which
    its repositories do not host). ``hub_options``: :class:`~.hub.HubOptions`.

    The model's ``name`` is ``name`` as given (provenance reloads the same model); a
    reduced-precision step that yields NaN/inf falls back to float32 once, with a warning. The
    licence notice (``get_info(name).notice``) is logged before loading.
    """
    info, source = parse_name(name)
    if vae is not None and info.backend not in ("cytosyn", "pixcell"):
        raise TypeError(f"{name}: vae= is supported by the cytosyn and pixcell models only")
    options = HubOptions.from_kwargs(hub_options)
    from .backend import BackendModel
    from .device import resolve_device, resolve_dtype

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    if info.backend not in ("embedded", "embedded-cells"):
        log.warning(info.notice)
    if info.backend == "embedded":
        from .embedded import load_embedded

        scale = "40x" if info.name == "cytosyn-tiny-40x" else "20x"
        model = BackendModel.wrap(load_embedded(device=str(dev), dtype=dt, scale=scale))
    elif info.backend == "embedded-cells":
        from .cells import load_cells

        model = BackendModel.wrap(load_cells(device=str(dev), dtype=dt))
    elif info.backend in ("cytosyn", "pixcell"):
        from .cytosyn import load_cytosyn
        from .pixcell import load_pixcell

        load = load_cytosyn if info.backend == "cytosyn" else load_pixcell
        model = load(info, source or info.source, options, dev, dt, embedder=embedder, vae=vae)
    else:
        from .diffusers_generic import load_diffusers

        model = load_diffusers(info, source, options, dev, dt)
    # The name that loads this model again (with its explicit source), for stored provenance.
    model.name = name
    return model


_SCALE_CACHE: dict[tuple[str, str], Any] = {}


def model_for_slide(model: Any, slide_mpp: float | None) -> tuple[Any, str | None]:
    """``model``, or the embedded model at the slide's scale when ``model`` is ``cytosyn-tiny``
    and the slide is 40x (see :func:`.embedded.match_slide_scale`). The 40x model is loaded once per
    device (default dtype) and shares nothing mutable with ``model``.

    Returns ``(model, message)``."""
    from .embedded import match_slide_scale

    name, why = match_slide_scale(getattr(model, "name", ""), slide_mpp)
    if why is None:
        return model, None
    key = (name, str(model.device))
    if key not in _SCALE_CACHE:
        _SCALE_CACHE[key] = load_model(name, device=str(model.device))
    return _SCALE_CACHE[key], why
