"""How the sampler runs a model's networks: in the model's dtype, or autocast to bfloat16.

``bfloat16`` (``SamplerSettings.autocast``) wraps each network call in ``torch.autocast``:
convolutions and matrix products in bfloat16 from float32 weights, normalisations and the
sampler in float32, decoder inputs channels-last (oneDNN's fastest bfloat16 layout). With native
bfloat16 (AVX512-BF16, AMX) the embedded model's denoiser runs ~1.8x and its decoder ~2.2x
faster (``benchmarks/precision.py``, which also measures the pictures); emulated bfloat16 is
slower, so ``auto`` picks it only where native. ``NAPARI_CYTOSYN_AUTOCAST=off`` makes ``auto``
mean ``off`` (the test suite sets it: its pixels must not depend on the instruction set).
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from typing import Any

import torch

from .settings import AUTOCAST
from .threads import pin_threads

#: Environment variable: ``off`` makes ``autocast="auto"`` resolve to ``off``.
AUTO_ENV = "NAPARI_CYTOSYN_AUTOCAST"


@functools.cache
def _cpu_flags() -> frozenset[str]:
    """CPU feature flags from ``/proc/cpuinfo`` (Linux); empty elsewhere."""
    if not sys.platform.startswith("linux"):
        return frozenset()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def native_bf16(device: torch.device | str) -> bool:
    """True when ``device`` computes bfloat16 convolutions natively (not by emulation)."""
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    flags = _cpu_flags()
    # x86: AVX512-BF16 or AMX-BF16; aarch64 Linux lists the BF16 extension as "bf16".
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def supports_autocast(model: Any) -> bool:
    """Whether ``model``'s networks can run under ``torch.autocast`` (float32 weights)."""
    return bool(getattr(model, "supports_autocast", False)) and (
        getattr(model, "dtype", None) == torch.float32
    )


def _device(model: Any) -> torch.device:
    return torch.device(getattr(model, "device", "cpu"))


def resolve_autocast(value: str, model: Any) -> str:
    """The concrete mode (``off`` or ``bfloat16``) that ``value`` means for ``model`` here.

    ``auto`` is ``bfloat16`` for a float32 model that supports autocast on a device with native
    bfloat16, else ``off`` (always ``off`` when ``NAPARI_CYTOSYN_AUTOCAST=off``). An explicit
    ``bfloat16`` on a model that cannot autocast is an error.
    """
    if value not in AUTOCAST:
        raise ValueError(f"unknown autocast {value!r}; choose one of {', '.join(AUTOCAST)}")
    env = os.environ.get(AUTO_ENV, "auto").strip().lower()
    if env not in ("auto", "off"):
        raise ValueError(f"{AUTO_ENV}={env!r} is not understood; use 'off' or 'auto'")
    if value == "auto" and env == "off":
        return "off"
    if value == "auto":
        ok = supports_autocast(model) and native_bf16(_device(model))
        return "bfloat16" if ok else "off"
    if value == "bfloat16" and not supports_autocast(model):
        raise ValueError(
            f"model {getattr(model, 'name', model)!r} cannot run under bfloat16 autocast (it "
            f"needs float32 networks, its dtype is {getattr(model, 'dtype', None)}); use "
            "autocast 'off'"
        )
    return value


def resolve_settings(settings: Any, model: Any) -> Any:
    """``settings`` with ``autocast`` and the decode's ``norm`` resolved for ``model`` (what a
    slide or edit stores)."""
    mode, decode = resolve_autocast(settings.autocast, model), settings.decode.resolve(model)
    if mode == settings.autocast and decode == settings.decode:
        return settings
    return settings.replace(autocast=mode, decode=decode)


def network_scope(model: Any, mode: str):
    """Context for one network call of ``model`` under a resolved ``mode``, run with the fixed
    intra-op thread count of :mod:`.threads` (pixels independent of the caller's threads)."""
    pin_threads()
    if mode == "off":
        return contextlib.nullcontext()
    if mode != "bfloat16":
        raise ValueError(f"autocast mode must be resolved to 'off' or 'bfloat16', got {mode!r}")
    return torch.autocast(_device(model).type, dtype=torch.bfloat16)


def decode(model: Any, z: torch.Tensor, mode: str) -> torch.Tensor:
    """``model.decode(z)`` under ``mode``; ``(B, 3, H, W)`` float32 on the CPU, contiguous."""
    with network_scope(model, mode):
        if mode == "bfloat16":
            z = z.contiguous(memory_format=torch.channels_last)
        return model.decode(z).float().cpu().contiguous()


def encode(model: Any, rgb: torch.Tensor, mode: str) -> torch.Tensor:
    """``model.encode(rgb)`` under ``mode``; float32 on the CPU, contiguous."""
    with network_scope(model, mode):
        if mode == "bfloat16":
            rgb = rgb.contiguous(memory_format=torch.channels_last)
        return model.encode(rgb).float().cpu().contiguous()
