"""Device and precision choice, and the guard that retries a non-finite step in float32.

``device="auto"`` picks CUDA, then Apple MPS, then the CPU. ``dtype="auto"`` picks bfloat16 on a
CUDA GPU that supports it (Ampere and newer) and float32 everywhere else: CPUs gain little from
bf16 in PyTorch, and fp16 transformers overflow easily. When a reduced-precision step produces NaN
or inf, :class:`~.backend.BackendModel` moves the model to float32, says so once, and retries.
"""

from __future__ import annotations

import torch

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}


def available_devices() -> list[str]:
    """Device names usable here, best first, e.g. ``["cuda:0", "cpu"]``."""
    names = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        names.append("mps")
    names.append("cpu")
    return names


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> cuda, then mps, then cpu; a named device is checked to exist."""
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return torch.device(available_devices()[0])
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(
            f"unknown device {device!r}; use 'auto' or one of {available_devices()}"
        ) from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r} requested but CUDA is not available here; "
                f"available: {available_devices()}"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device {device!r} does not exist; this machine has "
                f"{torch.cuda.device_count()} CUDA device(s)"
            )
    if dev.type == "mps" and "mps" not in available_devices():
        raise ValueError(f"device 'mps' requested but not available; use {available_devices()}")
    return dev


def resolve_dtype(dtype: str | torch.dtype = "auto", device: torch.device | None = None):
    """``"auto"`` -> bfloat16 on a CUDA GPU that supports it, else float32.

    Accepts ``torch.dtype`` or the names float32/fp32, bfloat16/bf16, float16/fp16.
    """
    device = device or torch.device("cpu")
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise ValueError(
            f"unknown dtype {dtype!r}; use 'auto' or one of {sorted(_DTYPES)}"
        ) from None
