"""`ArraySlide`: an in-memory (or dask) pyramid that answers the slide contract, so that a
region-mode image or a napari layer is exported by the same `export_slide` as a slide."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from napari_cytosyn.pixel_size import PixelSize
from napari_cytosyn.slide.kinds import KINDS, SlideKind


class ArraySlide:
    """A pyramid held by the caller, with the kind, mask and provenance the caller states.

    Parameters
    ----------
    levels: ``(h_k, w_k, 3)`` uint8 arrays (numpy, dask, zarr), finest first; one is enough.
    mpp: level-0 pixel size (``PixelSize.from_any``) or ``None``.
    kind: ``"real"``, ``"synthetic"`` or ``"composite"``.
    provenance: the record an export carries (``build_provenance``); ``None`` writes none.
    mask_levels: ``(h_k, w_k)`` arrays, non-zero where synthetic, one per level or the finest
        ones; required for ``"composite"``.
    name: the image name an export gets; ``path``: where the pixels came from (default ``name``).
    """

    def __init__(
        self,
        levels: Sequence[Any],
        *,
        mpp: PixelSize | float | Sequence[float] | None,
        kind: SlideKind,
        provenance: dict[str, Any] | None = None,
        mask_levels: Sequence[Any] | None = None,
        name: str = "image",
        path: str | Path | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if not levels:
            raise ValueError("an ArraySlide needs at least one level")
        if kind == "composite" and not mask_levels:
            raise ValueError("a composite ArraySlide needs mask_levels: which pixels are synthetic")
        self.kind: SlideKind = kind
        self.levels = list(levels)
        self.level_shapes = [(int(lv.shape[0]), int(lv.shape[1])) for lv in self.levels]
        self.mpp = PixelSize.from_any(mpp)
        self._provenance = provenance
        self.mask_levels = list(mask_levels) if mask_levels else None
        self.name = name
        self.path = Path(path) if path is not None else Path(name)
        self.format = "in-memory image"
        #: how the given coarse levels were made (NGFF ``multiscales[0].metadata.method``)
        self.pyramid_method = "levels as given by the caller"

    def provenance(self, checksum_source: bool = True) -> dict[str, Any] | None:
        """The provenance given at construction (``None`` when none was)."""
        return self._provenance

    def synthetic_mask(self, level: int) -> Any:
        """The given mask of ``level`` as bool (coarser levels: the finest, ``any`` over each
        block); without a mask all True (synthetic) or all False."""
        import dask.array as da

        shape = self.level_shapes[level]
        if self.mask_levels is None:
            return (da.ones if self.kind == "synthetic" else da.zeros)(shape, dtype=bool)
        if level < len(self.mask_levels):
            return _as_bool(self.mask_levels[level])
        finest = da.asarray(_as_bool(self.mask_levels[0]))
        (h0, w0), (h, w) = self.level_shapes[0], shape
        fy, fx = max(1, round(h0 / h)), max(1, round(w0 / w))
        padded = da.pad(finest, ((0, h * fy - h0 if h * fy > h0 else 0),
                                 (0, w * fx - w0 if w * fx > w0 else 0)))  # fmt: skip
        return da.coarsen(np.any, padded[: h * fy, : w * fx], {0: fy, 1: fx})

    def finished_levels(
        self, render_missing: bool = False, progress: Any = None, cancel: Any = None
    ) -> list[Any]:
        """The levels as given."""
        return list(self.levels)


def _as_bool(mask: Any) -> Any:
    if getattr(mask, "dtype", None) == np.dtype(bool):
        return mask
    return mask != 0
