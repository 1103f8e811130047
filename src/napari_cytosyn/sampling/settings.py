"""Sampler settings as a frozen, JSON-round-trippable value object (no torch import here).

Everything that changes the pixels of a generation is in :class:`SamplerSettings`, so that a
synthetic slide or an inpainting edit can be reproduced from its stored parameters alone.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .sampler_table import SAMPLERS, STOCHASTIC_SAMPLERS

WEIGHTS = ("gaussian", "tent", "uniform")
#: How the networks run: ``auto`` picks ``bfloat16`` where the hardware computes it natively
#: (see :func:`napari_cytosyn.sampling.precision.resolve_autocast`), ``off`` = the model's dtype.
AUTOCAST = ("auto", "off", "bfloat16")


class Cancelled(Exception):
    """Raised when the caller's ``cancel`` flag was set; work stopped within one batch."""


def check_cancel(cancel: Any) -> None:
    """Raise :class:`Cancelled` when ``cancel`` (``threading.Event``-like or ``None``) is set."""
    if cancel is not None and cancel.is_set():
        raise Cancelled("generation cancelled by the caller")


def counting_progress(progress: Any, total: int) -> Callable[[], None]:
    """A no-argument callback for each batch of work: counts the calls and reports
    ``progress(done, total)`` (``done`` capped at ``total``; nothing when ``progress`` is None)."""
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(min(done, total), total)

    return tick


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ValueError(message)


@dataclass(frozen=True)
class SamplerSettings:
    """How to sample: sampler, schedule, guidance, seed, tiling and inpainting parameters.

    Parameters
    ----------
    sampler: ``euler`` (deterministic ODE; DDIM for VP models; default), ``euler_maruyama``
        (reverse SDE), ``ancestral`` (DDPM posterior, eta = 1), ``heun`` (2nd order, 2 model
        calls per step) or ``dpmpp_2m`` (DPM-Solver++ 2M multistep, 1 call per step).
    steps: number of sampler steps (>= 1).
    guidance: classifier-free guidance scale (1.0 = off).
    guidance_interval: ``(t_lo, t_hi)`` in protocol time (t = 1 noise, t = 0 clean); guidance is
        applied only at steps whose t lies in this closed interval.
    seed: seed of every random number (initial noise, SDE noise, lattice shifts).
    time_shift: SD3-style shift of the time grid, ``t' = s t / (1 + (s - 1) t)``; > 1 spends
        more steps at high noise.
    window_latent: tiling window in latents; ``None`` = ``model.tile_px // model.latent_factor``.
    overlap: region mode: fraction of the window that neighbouring windows overlap, in
        ``[0, 1)``; stride = ``round(window * (1 - overlap))``.
    weights: region mode window weights: ``gaussian``, ``tent`` or ``uniform``.
    shift_lattice: region mode: shift the window lattice by a seeded offset at every step
        (SpotDiffusion-style) so no fixed line carries the window borders.
    batch_size: windows per model call; bounds activation memory.
    decode_tile_latent, decode_halo_latent: tiled VAE decode: tile size and halo in latents.
    decode_blend_latent: region mode and inpainting: neighbouring decoded tiles overlap by twice
        this and are cross-faded (hides per-tile GroupNorm colour steps); <= the halo.
    mask_dilate_latent: inpainting: dilation of the latent mask in latents.
    release_band_latent: inpainting: width (latents) of the band outside the dilated mask that
        is released gradually over the steps (differential diffusion); 0 = hard mask.
    resample_jumps, resample_n: inpainting: RePaint resampling; every ``resample_jumps`` steps
        the state is re-noised back by that many steps and resampled, ``resample_n`` times in
        total. 0 = off.
    feather_px: inpainting: width of the pixel-space alpha ramp, laid INSIDE the user's mask.
    autocast: ``off``: the networks run in the model's own dtype (float32 unless loaded
        otherwise); ``bfloat16``: their convolutions and matrix products run in bfloat16 under
        ``torch.autocast`` (weights, normalisations and the sampler stay float32); ``auto``:
        ``bfloat16`` for a float32 model on a CPU or GPU that computes bfloat16 natively, else
        ``off``. Slides and edits store the resolved value. Settings stored before this field
        existed read as ``off``.
    """

    sampler: str = "euler"
    steps: int = 50
    guidance: float = 1.0
    guidance_interval: tuple[float, float] = (0.0, 1.0)
    seed: int = 0
    time_shift: float = 1.0
    window_latent: int | None = None
    overlap: float = 0.25
    weights: str = "tent"
    shift_lattice: bool = True
    batch_size: int = 8
    decode_tile_latent: int = 64
    decode_halo_latent: int = 8
    decode_blend_latent: int = 2
    mask_dilate_latent: int = 1
    release_band_latent: int = 5
    resample_jumps: int = 0
    resample_n: int = 2
    feather_px: int = 16
    autocast: str = "auto"
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        gi = tuple(float(v) for v in self.guidance_interval)
        object.__setattr__(self, "guidance_interval", gi)
        _require(
            self.sampler in SAMPLERS,
            f"unknown sampler {self.sampler!r}; choose one of {', '.join(SAMPLERS)}",
        )
        _require(
            isinstance(self.steps, int) and self.steps >= 1,
            f"steps must be an integer >= 1, got {self.steps!r}",
        )
        _require(
            math.isfinite(self.guidance) and self.guidance >= 0,
            f"guidance must be a finite number >= 0, got {self.guidance!r}",
        )
        _require(
            len(gi) == 2 and 0.0 <= gi[0] <= gi[1] <= 1.0,
            f"guidance_interval must be (t_lo, t_hi) with 0 <= t_lo <= t_hi <= 1, got {gi!r}",
        )
        _require(
            isinstance(self.seed, int) and 0 <= self.seed < 2**63,
            f"seed must be an integer in [0, 2**63), got {self.seed!r}",
        )
        _require(self.time_shift > 0, f"time_shift must be > 0, got {self.time_shift!r}")
        _require(
            self.window_latent is None
            or (isinstance(self.window_latent, int) and self.window_latent >= 2),
            f"window_latent must be None or an integer >= 2, got {self.window_latent!r}",
        )
        _require(0.0 <= self.overlap < 1.0, f"overlap must be in [0, 1), got {self.overlap!r}")
        _require(
            self.weights in WEIGHTS,
            f"unknown weights {self.weights!r}; choose one of {', '.join(WEIGHTS)}",
        )
        _require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size!r}")
        _require(
            self.decode_tile_latent >= 1 and self.decode_halo_latent >= 0,
            "decode_tile_latent must be >= 1 and decode_halo_latent >= 0, got "
            f"{self.decode_tile_latent!r}, {self.decode_halo_latent!r}",
        )
        _require(
            0 <= self.decode_blend_latent <= self.decode_halo_latent,
            "decode_blend_latent must be in [0, decode_halo_latent], got "
            f"{self.decode_blend_latent!r}",
        )
        _require(
            self.mask_dilate_latent >= 0 and self.release_band_latent >= 0,
            "mask_dilate_latent and release_band_latent must be >= 0",
        )
        _require(
            self.resample_jumps >= 0 and self.resample_n >= 1,
            f"resample_jumps must be >= 0 and resample_n >= 1, got "
            f"{self.resample_jumps!r}, {self.resample_n!r}",
        )
        _require(self.feather_px >= 0, f"feather_px must be >= 0, got {self.feather_px!r}")
        _require(
            self.autocast in AUTOCAST,
            f"unknown autocast {self.autocast!r}; choose one of {', '.join(AUTOCAST)}",
        )

    @property
    def stochastic(self) -> bool:
        """True for samplers that inject fresh noise at each step."""
        return self.sampler in STOCHASTIC_SAMPLERS

    def replace(self, **changes: Any) -> SamplerSettings:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict; ``from_dict(to_dict())`` gives an equal object.

        ``autocast = "off"`` is left out: settings stored before the field existed ran that way,
        so their dicts (and the fingerprints of slides made with them) stay as they were.
        """
        d = dataclasses.asdict(self)
        d["guidance_interval"] = list(self.guidance_interval)
        d["extra"] = dict(self.extra)
        if self.autocast == "off":
            del d["autocast"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SamplerSettings:
        """Inverse of :meth:`to_dict`; unknown keys are an error (they would change pixels)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(
                f"unknown SamplerSettings keys {unknown}; this file was written by a newer "
                "napari-cytosyn or is not sampler settings"
            )
        kw = dict(d)
        kw.setdefault("autocast", "off")  # absent = stored before the field: no autocast
        if "guidance_interval" in kw:
            kw["guidance_interval"] = tuple(kw["guidance_interval"])
        return cls(**kw)
