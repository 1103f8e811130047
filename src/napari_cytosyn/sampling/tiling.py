"""Window lattices, blending weights, the fused (tiled) denoiser and tiled VAE decode/encode.

Tiling is a transform of the denoiser: :func:`fused_denoiser` evaluates the model on windows of
a canvas, in batches, and fuses their x0 predictions with smooth weights (Mixture of Diffusers,
Jiménez 2023), so any sampler takes one step on the whole canvas unchanged.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from . import precision
from .counter_noise import uniform
from .settings import DecodeConfig, ThreadValue, check_cancel
from .threads import model_workers, parallel_calls

ProgressFn = Callable[[int, int], None]

_CALL_CANCEL = ThreadValue()  # the cancel flag of this thread's network call
_HOOK_LOCK = threading.Lock()
_HOOK: dict[str, Any] = {"users": 0, "handle": None}


def _stop_if_cancelled(module: torch.nn.Module, args: Any) -> None:
    check_cancel(_CALL_CANCEL.get())


@contextlib.contextmanager
def cancellable(cancel: Any) -> Iterator[None]:
    """Network calls this thread makes in the block stop at their next layer once ``cancel``
    is set (raising ``Cancelled``), not at their end: a forward pre-hook on every torch module,
    registered process-wide while any block is open; each thread checks its own flag only, so
    other jobs sharing the model run on. The hook changes no value: pixels stay bit-identical.
    """
    if cancel is None:
        yield
        return
    with _HOOK_LOCK:
        if _HOOK["users"] == 0:
            hook = torch.nn.modules.module.register_module_forward_pre_hook
            _HOOK["handle"] = hook(_stop_if_cancelled)
        _HOOK["users"] += 1
    try:
        with _CALL_CANCEL.scope(cancel):
            yield
    finally:
        with _HOOK_LOCK:
            _HOOK["users"] -= 1
            if _HOOK["users"] == 0:
                _HOOK["handle"].remove()


def to_uint8(rgb: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` float in [-1, 1] -> ``(H, W, 3)`` uint8 (round half to even, clamped)."""
    x = ((rgb.float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().clamp(0, 255)
    return x.to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def to_float(image: np.ndarray) -> torch.Tensor:
    """``(H, W, 3)`` uint8 -> ``(3, H, W)`` float32 in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 127.5 - 1.0


def window_profile(n: int, kind: str) -> torch.Tensor:
    """1-D blending weight of length ``n`` (float64, > 0 everywhere)."""
    pos = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    if kind == "uniform":
        return torch.ones(n, dtype=torch.float64)
    if kind == "tent":
        return (1.0 - (2.0 * pos - 1.0).abs()).clamp(min=1e-3)
    if kind == "gaussian":
        return torch.exp(-((pos - 0.5) ** 2) / (2 * 0.15**2)).clamp(min=1e-3)
    raise ValueError(f"unknown window weights {kind!r}; choose gaussian, tent or uniform")


def lattice_positions(start: int, length: int, window: int, stride: int, offset: int) -> list[int]:
    """Window starts ``offset + k * stride`` (absolute latents) covering ``[start, start+length)``.

    Windows are clamped into the canvas (so the ones at the border may sit off the lattice);
    a canvas shorter than ``window`` gets one window of its own length at ``start``.
    """
    if length <= window:
        return [start]
    end = start + length
    k0 = math.floor((start - offset) / stride)
    k1 = math.ceil((end - window - offset) / stride)
    out: list[int] = []
    for k in range(k0, k1 + 1):
        p = min(max(offset + k * stride, start), end - window)
        if not out or out[-1] != p:
            out.append(p)
    return out


def aligned_span(lo: int, hi: int, window: int, stride: int) -> tuple[int, int]:
    """Smallest lattice-aligned span ``[k0*stride, k1*stride + window)`` containing ``[lo, hi)``."""
    k0 = math.floor(lo / stride)
    k1 = max(k0, math.ceil((hi - window) / stride))
    return k0 * stride, k1 * stride + window


def fused_denoiser(
    denoise: Callable[[torch.Tensor, float], torch.Tensor],
    origin: tuple[int, int],
    window: int,
    stride: int,
    weights: str = "tent",
    batch_size: int = 8,
    seed: int | None = None,
    progress: Callable[[], None] | None = None,
    cancel: Any = None,
    cpu: bool = False,
) -> Callable[[torch.Tensor, float], torch.Tensor]:
    """Turn a window denoiser into a canvas denoiser ``D(x (1,C,H,W), t) -> x0 (1,C,H,W)``.

    Windows lie on the lattice ``offset + k * stride`` in absolute latents (``origin``: the absolute
    position of canvas pixel (0, 0)); with ``seed`` the offset is a seeded function of ``t``
    (SpotDiffusion-style shifting). A ``denoise`` marked ``per_window`` gets each window's
    absolute ``(y, x, h, w)``. ``cpu``: run up to :func:`~.threads.model_workers` batches side by
    side (:func:`~.threads.parallel_calls`; the result is bit-identical). Memory beyond the
    canvas: ``batch_size`` windows per batch in flight.
    """
    per_window = getattr(denoise, "per_window", False)
    prof_cache: dict[tuple[int, int], torch.Tensor] = {}

    def weight(h: int, w: int) -> torch.Tensor:
        if (h, w) not in prof_cache:
            wy, wx = window_profile(h, weights), window_profile(w, weights)
            prof_cache[(h, w)] = (wy[:, None] * wx[None, :]).float()
        return prof_cache[(h, w)]

    def fused(x: torch.Tensor, t: float) -> torch.Tensor:
        _, c, hh, ww = x.shape
        oy = ox = 0
        if seed is not None:
            u = uniform(seed, "lattice", (round(t * 1e9),), 2)
            oy, ox = int(u[0] * stride), int(u[1] * stride)
        ys = lattice_positions(origin[0], hh, window, stride, oy)
        xs = lattice_positions(origin[1], ww, window, stride, ox)
        wins = [(py - origin[0], px - origin[1]) for py in ys for px in xs]
        acc = torch.zeros((c, hh, ww), dtype=torch.float32)
        norm = torch.zeros((1, hh, ww), dtype=torch.float32)
        wh, wwid = min(window, hh), min(window, ww)
        wgt = weight(wh, wwid)

        def run(chunk: list[tuple[int, int]]) -> torch.Tensor:
            check_cancel(cancel)
            batch = torch.stack([x[0, :, py : py + wh, px : px + wwid] for py, px in chunk])
            with cancellable(cancel):
                if per_window:
                    rects = [(py + origin[0], px + origin[1], wh, wwid) for py, px in chunk]
                    return denoise(batch, t, rects)
                return denoise(batch, t)

        batches = [wins[b : b + batch_size] for b in range(0, len(wins), batch_size)]
        group = model_workers() if cpu else 1
        for g in range(0, len(batches), group):
            todo = batches[g : g + group]
            # fused in lattice order whatever ran side by side: the same sums as one by one
            for chunk, x0 in zip(todo, parallel_calls(run, todo, cpu), strict=True):
                for (py, px), out in zip(chunk, x0, strict=True):
                    acc[:, py : py + wh, px : px + wwid] += out * wgt
                    norm[:, py : py + wh, px : px + wwid] += wgt
                if progress is not None:
                    progress()
        return (acc / norm).unsqueeze(0)

    fused.model_dtype = getattr(denoise, "model_dtype", None)
    return fused


def count_windows(h: int, w: int, origin: tuple[int, int], window: int, stride: int) -> int:
    """Windows per fused call on an ``h x w`` canvas (offset 0)."""
    ny = len(lattice_positions(origin[0], h, window, stride, 0))
    nx = len(lattice_positions(origin[1], w, window, stride, 0))
    return ny * nx


def _ramp(n: int, lo_blend: int, hi_blend: int) -> torch.Tensor:
    """1-D weights of length ``n``: linear ramps of ``2*lo_blend`` / ``2*hi_blend`` at the ends."""
    w = torch.ones(n, dtype=torch.float32)
    for k in range(min(2 * lo_blend, n)):
        w[k] = (k + 0.5) / (2 * lo_blend)
    for k in range(min(2 * hi_blend, n)):
        w[n - 1 - k] = min(float(w[n - 1 - k]), (k + 0.5) / (2 * hi_blend))
    return w


def decode_tiled(
    model: Any,
    z: torch.Tensor,
    rect: tuple[int, int, int, int] | None,
    config: DecodeConfig,
    autocast: str = "off",
    cancel: Any = None,
) -> torch.Tensor:
    """Decode ``rect = (y, x, h, w)`` (latents, within ``z`` ``(C, H, W)``) tile by tile, as
    ``config`` (:class:`~.settings.DecodeConfig`, ``norm`` resolved for ``model``) says, up to
    :func:`~.threads.model_workers` tiles side by side on the CPU, memory bounded by that many
    tiles; for a decoder whose receptive field fits in the halo the result equals a whole-canvas
    decode. Returns ``(3, h * f, w * f)`` float32 in [-1, 1].
    """
    config = config.resolve(model)
    decoder = model.frozen_norm_model if config.norm == "frozen" else model
    tile_latent, halo_latent = config.tile_latent, config.halo_latent
    # A local decoder's tiles agree where they meet: nothing to cross-fade.
    b = 0 if config.norm == "frozen" else config.blend_latent
    _, hz, wz = z.shape
    y, x, h, w = rect if rect is not None else (0, 0, hz, wz)
    f = model.latent_factor
    mode = precision.resolve_autocast(autocast, model)
    out = torch.zeros((3, h * f, w * f), dtype=torch.float32)
    norm = torch.zeros((1, h * f, w * f), dtype=torch.float32) if b else None

    def halo_box(ty: int, tx: int) -> tuple[int, int, int, int]:
        th, tw = min(tile_latent, y + h - ty), min(tile_latent, x + w - tx)
        ya, xa = max(0, ty - halo_latent), max(0, tx - halo_latent)
        return ya, xa, min(hz, ty + th + halo_latent), min(wz, tx + tw + halo_latent)

    def decode(tile: tuple[int, int]) -> torch.Tensor:
        check_cancel(cancel)
        ya, xa, yb, xb = halo_box(*tile)
        with cancellable(cancel):
            return precision.decode(decoder, z[None, :, ya:yb, xa:xb], mode)[0]

    tiles = [(ty, tx) for ty in range(y, y + h, tile_latent) for tx in range(x, x + w, tile_latent)]
    cpu = on_cpu(model)
    group = model_workers() if cpu else 1
    for g in range(0, len(tiles), group):
        todo = tiles[g : g + group]
        for (ty, tx), rgb in zip(todo, parallel_calls(decode, todo, cpu), strict=True):
            th, tw = min(tile_latent, y + h - ty), min(tile_latent, x + w - tx)
            ya, xa, _, _ = halo_box(ty, tx)
            # Kept span (latents, absolute): the tile plus b into each inner neighbour.
            by0 = b if ty > y else 0
            # a last tile narrower than b limits how far its neighbour reaches into it
            by1 = min(b, y + h - ty - th)
            bx0 = b if tx > x else 0
            bx1 = min(b, x + w - tx - tw)
            ky0, ky1, kx0, kx1 = ty - by0, ty + th + by1, tx - bx0, tx + tw + bx1
            crop = rgb[:, (ky0 - ya) * f : (ky1 - ya) * f, (kx0 - xa) * f : (kx1 - xa) * f]
            sy = slice((ky0 - y) * f, (ky1 - y) * f)
            sx = slice((kx0 - x) * f, (kx1 - x) * f)
            if norm is None:
                out[:, sy, sx] = crop
            else:
                wy = _ramp((ky1 - ky0) * f, by0 * f, by1 * f)
                wx = _ramp((kx1 - kx0) * f, bx0 * f, bx1 * f)
                wgt = wy[:, None] * wx[None, :]
                out[:, sy, sx] += crop * wgt
                norm[:, sy, sx] += wgt
    return out if norm is None else out / norm


def on_cpu(model: Any) -> bool:
    """Whether ``model`` runs on the CPU (its network calls may then run side by side)."""
    return torch.device(getattr(model, "device", "cpu")).type == "cpu"


def encode_tiled(
    model: Any, rgb: torch.Tensor, config: DecodeConfig, autocast: str = "off", cancel: Any = None
) -> torch.Tensor:
    """Encode ``(3, H, W)`` float in [-1, 1] (H, W multiples of ``latent_factor``) by tiles of
    ``config.tile_latent`` latents with a pixel halo of ``halo_latent`` latents, keeping their
    centres; ``cancel`` is checked inside each tile's network call (:func:`cancellable`).
    Returns ``(C, H / f, W / f)`` float32."""
    tile_latent, halo_latent = config.tile_latent, config.halo_latent
    mode = precision.resolve_autocast(autocast, model)
    f = model.latent_factor
    _, hp, wp = rgb.shape
    if hp % f or wp % f:
        raise ValueError(f"encode_tiled needs H, W divisible by {f}, got {hp}x{wp}")
    h, w = hp // f, wp // f
    out = torch.empty((model.latent_channels, h, w), dtype=torch.float32)
    for ty in range(0, h, tile_latent):
        for tx in range(0, w, tile_latent):
            th, tw = min(tile_latent, h - ty), min(tile_latent, w - tx)
            ya, xa = max(0, ty - halo_latent), max(0, tx - halo_latent)
            yb, xb = min(h, ty + th + halo_latent), min(w, tx + tw + halo_latent)
            crop = rgb[None, :, ya * f : yb * f, xa * f : xb * f]
            with cancellable(cancel):
                z = precision.encode(model, crop, mode)[0]
            oy, ox = ty - ya, tx - xa
            out[:, ty : ty + th, tx : tx + tw] = z[:, oy : oy + th, ox : ox + tw]
    return out
