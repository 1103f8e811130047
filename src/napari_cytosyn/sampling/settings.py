"""Sampler settings as frozen, JSON-round-trippable value objects (no torch import here).

:class:`SamplerSettings` is the core every mode reads plus one config per canvas concern:
:class:`RegionConfig` (window tiling), :class:`DecodeConfig` (tiled decode) and
:class:`InpaintConfig`. Lazy mode reads the core and its own :class:`~.lazy.LazySpec`; a recipe
(:mod:`.recipe`) stores only the configs its mode reads.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .sampler_table import SAMPLERS, STOCHASTIC_SAMPLERS

WEIGHTS = ("gaussian", "tent", "uniform")
#: How the networks run: ``auto`` picks ``bfloat16`` where the hardware computes it natively
#: (see :func:`napari_cytosyn.sampling.precision.resolve_autocast`), ``off`` = the model's dtype.
AUTOCAST = ("auto", "off", "bfloat16")
#: ``DecodeConfig.norm`` values: GroupNorm statistics of each tile, or the model's frozen ones.
DECODE_NORMS = ("auto", "crop", "frozen")


class Cancelled(Exception):
    """Raised when the caller's ``cancel`` flag was set; work stopped within one batch."""


def check_cancel(cancel: Any) -> None:
    """Raise :class:`Cancelled` when ``cancel`` (``threading.Event``-like or ``None``) is set."""
    if cancel is not None and cancel.is_set():
        raise Cancelled("generation cancelled by the caller")


class ThreadValue:
    """A value a thread sets for the duration of a ``with`` block (``None`` outside one): how
    a caller hands a callback or flag down to code it reaches through several layers."""

    def __init__(self) -> None:
        self._local = threading.local()

    def get(self) -> Any:
        return getattr(self._local, "value", None)

    @contextlib.contextmanager
    def scope(self, value: Any) -> Iterator[None]:
        previous = self.get()
        self._local.value = value
        try:
            yield
        finally:
            self._local.value = previous


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


def _check_fields(cls: type, d: dict[str, Any], what: str) -> None:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(
            f"unknown {what} keys {unknown}; this file was written by another napari-cytosyn "
            f"version or is not {what} (known: {sorted(names)})"
        )


class _Config:
    """``replace``, ``to_dict`` and ``from_dict`` of a flat frozen config dataclass."""

    def replace(self, **changes: Any) -> Any:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict; ``from_dict(to_dict())`` gives an equal object."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        """Inverse of :meth:`to_dict`; unknown keys are an error (they would change pixels)."""
        _check_fields(cls, d, cls.__name__)
        return cls(**d)


@dataclass(frozen=True)
class RegionConfig(_Config):
    """How windows tile a canvas (region mode and inpainting; lazy mode has its own lattice).

    ``overlap``: share of a window its neighbours overlap, in ``[0, 1)`` (stride
    ``round(window * (1 - overlap))``); ``weights``: ``gaussian``, ``tent`` or ``uniform``;
    ``shift_lattice``: shift the lattice by a seeded offset every step (SpotDiffusion) so no fixed
    line carries the window borders; ``batch_size``: windows per model call (bounds memory; on CPU
    it changes the last bits of a network's output, so it is part of the recipe).
    """

    overlap: float = 0.25
    weights: str = "tent"
    shift_lattice: bool = True
    batch_size: int = 8

    def __post_init__(self) -> None:
        _require(0.0 <= self.overlap < 1.0, f"overlap must be in [0, 1), got {self.overlap!r}")
        _require(
            self.weights in WEIGHTS,
            f"unknown weights {self.weights!r}; choose one of {', '.join(WEIGHTS)}",
        )
        _require(
            isinstance(self.batch_size, int) and self.batch_size >= 1,
            f"batch_size must be an integer >= 1, got {self.batch_size!r}",
        )


@dataclass(frozen=True)
class DecodeConfig(_Config):
    """Tiled VAE decode (and encode) of a canvas (region mode and inpainting), in latents:
    ``tile_latent`` tiles decoded with ``halo_latent`` around each.

    ``norm``: ``"crop"``: the model's decoder, whose GroupNorms take each tile's own statistics,
    so neighbours overlap by ``2 * blend_latent`` (<= the halo) and are cross-faded there, hiding
    colour steps; ``"frozen"``: the model's local decoder (``model.frozen_norm_model``, fixed
    GroupNorm statistics), tiles kept as decoded, no cross-fade; ``"auto"``: ``"frozen"`` where the
    model ships one, else ``"crop"`` (:meth:`resolve`; recipes store the resolved value, and a
    recipe without ``norm`` was made before it existed: ``"crop"``).
    """

    tile_latent: int = 64
    halo_latent: int = 8
    blend_latent: int = 2
    norm: str = "auto"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DecodeConfig:
        """Inverse of :meth:`to_dict`; a dict without ``norm`` (an older recipe) is ``"crop"``."""
        return super().from_dict({"norm": "crop", **d})

    def resolve(self, model: Any) -> DecodeConfig:
        """This config with ``norm`` ``"auto"`` made concrete for ``model``; ``"frozen"`` for a
        model without a local decoder is an error."""
        local = getattr(model, "frozen_norm_model", None) is not None
        if self.norm == "frozen" and not local:
            raise ValueError(
                f"decode norm 'frozen' needs a model that ships frozen GroupNorm statistics; "
                f"{getattr(model, 'name', model)!r} does not: use norm 'crop' or 'auto'"
            )
        if self.norm != "auto":
            return self
        return self.replace(norm="frozen" if local else "crop")

    def __post_init__(self) -> None:
        _require(
            self.norm in DECODE_NORMS,
            f"unknown decode norm {self.norm!r}; choose one of {', '.join(DECODE_NORMS)}",
        )
        _require(
            self.tile_latent >= 1 and self.halo_latent >= 0,
            "decode tile_latent must be >= 1 and halo_latent >= 0, got "
            f"{self.tile_latent!r}, {self.halo_latent!r}",
        )
        _require(
            0 <= self.blend_latent <= self.halo_latent,
            f"decode blend_latent must be in [0, halo_latent], got {self.blend_latent!r}",
        )


@dataclass(frozen=True)
class InpaintConfig(_Config):
    """Inpainting only: ``mask_dilate_latent`` (latent mask dilation), ``release_band_latent`` (band
    inside the dilated mask released gradually, differential diffusion; 0 = hard mask),
    ``resample_jumps``/``resample_n`` (RePaint: every ``resample_jumps`` steps the state is
    re-noised that many steps back and resampled, ``resample_n`` passes; 0 = off), ``feather_px``
    (pixel alpha ramp laid INSIDE the user's mask).
    """

    mask_dilate_latent: int = 1
    release_band_latent: int = 5
    resample_jumps: int = 0
    resample_n: int = 2
    feather_px: int = 16

    def __post_init__(self) -> None:
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


_CONFIGS: dict[str, type] = {
    "region": RegionConfig,
    "decode": DecodeConfig,
    "inpaint": InpaintConfig,
}


@dataclass(frozen=True)
class SamplerSettings(_Config):
    """How to sample: the core every mode reads, plus the per-concern canvas configs.

    Parameters
    ----------
    sampler: a :data:`SAMPLERS` name (:mod:`.sampler_table`; default ``euler``).
    steps: number of sampler steps (>= 1).
    guidance: classifier-free guidance scale (1.0 = off), applied at steps whose t lies in the
        closed ``guidance_interval`` ``(t_lo, t_hi)`` (t = 1 noise).
    seed: seed of every random number (noise, lattice shifts); the one place it lives.
    time_shift: SD3-style shift of the time grid, ``t' = s t / (1 + (s - 1) t)``; > 1 spends more
        steps at high noise.
    window_latent: model window in latents; ``None`` = ``model.tile_px // model.latent_factor``.
    autocast: ``off`` (the model's dtype), ``bfloat16`` (convolutions and matrix products under
        ``torch.autocast``) or ``auto`` (``bfloat16`` where the hardware has it natively, see
        :mod:`.precision`). Recipes store the resolved value.
    region, decode, inpaint: :class:`RegionConfig`, :class:`DecodeConfig`, :class:`InpaintConfig`.
    """

    sampler: str = "euler"
    steps: int = 50
    guidance: float = 1.0
    guidance_interval: tuple[float, float] = (0.0, 1.0)
    seed: int = 0
    time_shift: float = 1.0
    window_latent: int | None = None
    autocast: str = "auto"
    region: RegionConfig = RegionConfig()
    decode: DecodeConfig = DecodeConfig()
    inpaint: InpaintConfig = InpaintConfig()

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
        _require(
            self.autocast in AUTOCAST,
            f"unknown autocast {self.autocast!r}; choose one of {', '.join(AUTOCAST)}",
        )
        for name, cls in _CONFIGS.items():
            _require(
                isinstance(getattr(self, name), cls),
                f"{name} must be a {cls.__name__}, got {getattr(self, name)!r}",
            )

    @property
    def stochastic(self) -> bool:
        """True for samplers that inject fresh noise at each step."""
        return self.sampler in STOCHASTIC_SAMPLERS

    def core_dict(self) -> dict[str, Any]:
        """The core as a JSON-serialisable dict (what every mode reads; no per-mode config)."""
        d = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in _CONFIGS
        }
        d["guidance_interval"] = list(self.guidance_interval)
        return d

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (core plus the nested configs); inverse :meth:`from_dict`."""
        return {**self.core_dict(), **{n: getattr(self, n).to_dict() for n in _CONFIGS}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SamplerSettings:
        """Inverse of :meth:`to_dict` (or of :meth:`core_dict`: absent configs are defaults);
        unknown keys are an error (they would change pixels)."""
        _check_fields(cls, d, "SamplerSettings")
        configs = {n: config.from_dict(d[n]) for n, config in _CONFIGS.items() if n in d}
        return cls(**{**d, **configs})  # __post_init__ makes guidance_interval a tuple
