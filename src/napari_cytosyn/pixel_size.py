"""Physical pixel size: micrometres per pixel along x and y, the one way the package says "mpp".

A model generates at one :class:`PixelSize`, a slide states one (or ``None`` when its file does
not), layer metadata and export writers carry one. napari's layer ``scale`` is ``(y, x)``;
:meth:`PixelSize.napari_scale` is the only conversion to it. No dependency beyond the standard
library, so every layer of the package may import it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PixelSize:
    """Micrometres per pixel of level 0: ``x`` along columns, ``y`` along rows (both > 0)."""

    x: float
    y: float

    def __post_init__(self) -> None:
        for axis in ("x", "y"):
            v = getattr(self, axis)
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise TypeError(f"pixel size {axis} must be a number of um per px, got {v!r}")
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"pixel size {axis} must be a positive finite um/px, got {v!r}")
            object.__setattr__(self, axis, float(v))

    @classmethod
    def square(cls, um: float) -> PixelSize:
        """Square pixels of side ``um``."""
        return cls(um, um)

    @classmethod
    def from_any(cls, value: Any) -> PixelSize | None:
        """``value`` as a :class:`PixelSize`; ``None`` stays ``None`` (the size is unknown).

        Accepts a :class:`PixelSize`, a number (square pixels) or an ``(x, y)`` pair (the
        order OpenSlide, OME and TIFF resolution tags use; :meth:`to_list`, the JSON form).
        Anything else is a ``TypeError`` naming what was given.
        """
        if value is None or isinstance(value, PixelSize):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            return cls.square(value)
        if isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2:
            return cls(value[0], value[1])
        raise TypeError(
            f"pixel size must be a number (square pixels), an (x, y) pair of um/px or a "
            f"PixelSize, got {value!r}"
        )

    @property
    def is_square(self) -> bool:
        """True when ``x`` and ``y`` agree to 1 part in 10^6 (float noise of file metadata)."""
        return math.isclose(self.x, self.y, rel_tol=1e-6)

    def side_um(self, what: str = "this operation") -> float:
        """The side of a square pixel; a ``ValueError`` naming ``what`` for anisotropic pixels
        (for code that works in one resolution, such as inpainting at the model's)."""
        if not self.is_square:
            raise ValueError(
                f"{what} needs square pixels, but this slide's are {self.x:g} x {self.y:g} um "
                "(x x y); resample the slide to square pixels first"
            )
        return self.x

    def napari_scale(self) -> tuple[float, float]:
        """napari's layer ``scale`` (rows, columns) = ``(y, x)`` in um."""
        return (self.y, self.x)

    def to_list(self) -> list[float]:
        """``[x, y]``: the JSON form (store attributes, layer metadata, ``info --json``);
        :meth:`from_any` reads it."""
        return [self.x, self.y]

    def __str__(self) -> str:
        if self.is_square:
            return f"{self.x:.4g} um/px"
        return f"{self.x:.4g} x {self.y:.4g} um/px"
