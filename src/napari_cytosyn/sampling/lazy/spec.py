"""What fixes the pixels of a lazily rendered slide (:class:`LazySpec`), and where its phase
states are kept (:class:`PhaseCache`, :class:`MemoryPhaseCache`).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from ..settings import SamplerSettings


@runtime_checkable
class PhaseCache(Protocol):
    """Where lazy mode keeps phase states. Keys are tuples ``(phase, cell_y, cell_x)`` of ints.

    A cache belongs to one (model, :class:`LazySpec`); use ``spec.fingerprint()`` to check.
    Values are CPU float32 tensors ``(C, W, W)``; ``put`` must store them losslessly.
    """

    def get(self, key: tuple[int, int, int]) -> torch.Tensor | None: ...

    def put(self, key: tuple[int, int, int], tensor: torch.Tensor) -> None: ...


class MemoryPhaseCache:
    """A thread-safe in-memory :class:`PhaseCache` (a dict); ``clear()`` empties it."""

    def __init__(self) -> None:
        self._data: dict[tuple[int, int, int], torch.Tensor] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[int, int, int]) -> torch.Tensor | None:
        with self._lock:
            value = self._data.get(key)
            if value is None:
                self.misses += 1
                return None
            self.hits += 1
            return value

    def put(self, key: tuple[int, int, int], tensor: torch.Tensor) -> None:
        with self._lock:
            self._data[key] = tensor.detach().to("cpu", torch.float32).contiguous()

    def __contains__(self, key: tuple[int, int, int]) -> bool:
        with self._lock:
            return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


#: ``LazySpec.batch`` when not given: windows per model call (per tile phase for a tuple).
#: Under bfloat16 autocast larger batches cost less per window (embedded model, 2-core CPU:
#: 12.0 / 8.5 / 7.6 ms per window at 4 / 8 / 16), but the later phases of a cone have fewer
#: cells, so they use 8 (less padding); in float32 the first chunk of a view comes as soon
#: with 4 (``benchmarks/viewport.py``; docs/sampling.md, "Lazy mode: cost of a fresh view").
BATCH_DEFAULT = 4
BATCH_BF16 = (16, 8, 8)
#: ``LazySpec.decode_norm`` values.
DECODE_NORMS = ("crop", "frozen")


@dataclass(frozen=True)
class LazySpec:
    """What, besides the core settings, fixes the pixels of a lazily rendered slide.

    Parameters
    ----------
    settings: the core :class:`SamplerSettings` (sampler, steps, seed, window, guidance,
        precision); its region, decode and inpaint configs are not read in lazy mode.
    chunk_px: output chunk side in pixels; a multiple of the model's latent factor.
    phase_times: protocol times (decreasing, in (0, 1)) where a tile phase ends and the next,
        shifted lattice begins. ``()`` = a single tile phase.
    blend_steps: number of final steps run on overlapping windows that are cross-faded.
    blend_overlap: overlap fraction of the blend-phase windows (stride ``W (1 - overlap)``).
    context_latent: tile phases evaluate each ``W``-latent window but keep only its centre
        ``W - 2 m`` (overlap-save); the rest is context the denoiser sees but whose update is
        discarded. Costs ``(W / (W - 2 m))^2``. One int for all tile phases or one per phase
        (the last value repeats).
    batch: windows per model call, always exactly this many (the last call of a phase is
        padded with zeros) so that the batch a window is evaluated in cannot change its result.
        A tuple gives one size per tile phase (the last repeats). ``None``:
        :data:`BATCH_BF16` under ``autocast="bfloat16"``, else :data:`BATCH_DEFAULT`. Slots that
        would be padding may compute windows of chunks wanted next (:func:`prepare_chunks`).
    decode_halo_latent, decode_blend_latent: halo and border cross-fade of the chunk decode, in
        latents.
    decode_norm: ``"crop"``: the model's decoder, GroupNorm statistics of each crop, so chunk
        borders are cross-faded (``decode_blend_latent``); ``"frozen"``: the model's
        ``frozen_norm_model`` (fixed statistics, a local decoder), each chunk from its own crop
        plus the halo, no cross-fade.
    """

    settings: SamplerSettings = field(default_factory=SamplerSettings)
    chunk_px: int = 512
    phase_times: tuple[float, ...] = (0.7, 0.4)
    blend_steps: int = 0
    blend_overlap: float = 0.5
    context_latent: int | tuple[int, ...] = (2, 2, 1)
    batch: int | tuple[int, ...] | None = None
    decode_halo_latent: int = 4
    decode_blend_latent: int = 2
    decode_norm: str = "crop"

    def __post_init__(self) -> None:
        if not isinstance(self.settings, SamplerSettings):
            raise TypeError(f"settings must be a SamplerSettings, got {type(self.settings)}")
        pt = tuple(float(v) for v in self.phase_times)
        object.__setattr__(self, "phase_times", pt)
        if any(not 0.0 < v < 1.0 for v in pt) or any(a <= b for a, b in itertools.pairwise(pt)):
            raise ValueError(f"phase_times must be decreasing values in (0, 1), got {pt!r}")
        if not isinstance(self.chunk_px, int) or self.chunk_px < 8:
            raise ValueError(f"chunk_px must be an integer >= 8, got {self.chunk_px!r}")
        if not 0 <= self.blend_steps < self.settings.steps:
            raise ValueError(
                f"blend_steps must be in [0, steps) = [0, {self.settings.steps}), "
                f"got {self.blend_steps!r}"
            )
        if not 0.0 <= self.blend_overlap < 1.0:
            raise ValueError(f"blend_overlap must be in [0, 1), got {self.blend_overlap!r}")
        ctx = self.context_latent
        ctx = (ctx,) if isinstance(ctx, int) else tuple(ctx)
        if not ctx or any(not isinstance(v, int) or v < 0 for v in ctx):
            raise ValueError(
                "context_latent must be an integer >= 0 or a tuple of them (one per tile phase), "
                f"got {self.context_latent!r}"
            )
        object.__setattr__(self, "context_latent", ctx[0] if len(ctx) == 1 else ctx)
        if self.batch is None:
            bf16 = self.settings.autocast == "bfloat16"
            object.__setattr__(self, "batch", BATCH_BF16 if bf16 else BATCH_DEFAULT)
        batch = self.batch if isinstance(self.batch, list | tuple) else (self.batch,)
        if not batch or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in batch):
            raise ValueError(
                f"batch must be an integer >= 1 or a tuple of them (windows per call, one per "
                f"tile phase), got {self.batch!r}"
            )
        object.__setattr__(self, "batch", batch[0] if len(batch) == 1 else tuple(batch))
        for name in ("decode_halo_latent", "decode_blend_latent"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
        if self.decode_norm not in DECODE_NORMS:
            raise ValueError(
                f"decode_norm must be one of {', '.join(DECODE_NORMS)}, got {self.decode_norm!r}"
            )

    def batch_of(self, phase: int) -> int:
        """Windows per model call in phase ``phase``."""
        b = self.batch
        return b if isinstance(b, int) else b[min(phase, len(b) - 1)]

    def to_dict(self) -> dict[str, Any]:
        """The lazy fields as a JSON-serialisable dict (the core settings are not in it: a
        recipe stores them once, see :mod:`.recipe`); inverse :meth:`from_dict`."""
        return {
            "chunk_px": self.chunk_px,
            "phase_times": list(self.phase_times),
            "blend_steps": self.blend_steps,
            "blend_overlap": self.blend_overlap,
            "context_latent": (
                self.context_latent
                if isinstance(self.context_latent, int)
                else list(self.context_latent)
            ),
            "batch": self.batch if isinstance(self.batch, int) else list(self.batch),
            "decode_halo_latent": self.decode_halo_latent,
            "decode_blend_latent": self.decode_blend_latent,
            "decode_norm": self.decode_norm,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], settings: SamplerSettings) -> LazySpec:
        """Inverse of :meth:`to_dict`, with the core ``settings``; every field must be there
        and no other (a missing or unknown field would change pixels)."""
        fields = set(cls.__dataclass_fields__) - {"settings"}
        if set(d) != fields:
            raise ValueError(
                f"a stored lazy spec has the fields {sorted(fields)}; missing "
                f"{sorted(fields - set(d))}, unknown {sorted(set(d) - fields)}"
            )
        kw = dict(d)
        for name in ("phase_times", "batch", "context_latent"):
            if isinstance(kw[name], list):
                kw[name] = tuple(kw[name])
        return cls(settings=settings, **kw)

    def fingerprint(self) -> str:
        """Short hash of the core settings and the lazy fields, to tie a phase cache to them."""
        text = json.dumps(
            {"core": self.settings.core_dict(), "lazy": self.to_dict()}, sort_keys=True
        )
        return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()
