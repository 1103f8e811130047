"""What a real-slide reader backend provides (`SlideBackend`) and the error every backend raises
(`SlideReadError`); kept apart from `real` so the backends never import the module that picks
them."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

#: Micrometres per length unit, as OME-XML and NGFF name them.
UM_PER_UNIT = {
    **dict.fromkeys(("µm", "um", "micron", "micrometer"), 1.0),
    **dict.fromkeys(("nm", "nanometer"), 1e-3),
    **dict.fromkeys(("mm", "millimeter"), 1e3),
    **dict.fromkeys(("cm", "centimeter"), 1e4),
    **dict.fromkeys(("m", "meter"), 1e6),
    **dict.fromkeys(("Å", "angstrom"), 1e-4),
}


class SlideReadError(ValueError):
    """A file exists but cannot be read as an RGB uint8 slide; the message names file and reason."""


class SlideBackend(Protocol):
    """What a reader backend provides to `Slide` (internal; one per file format family)."""

    format: str
    level_shapes: list[tuple[int, int]]
    tile_shapes: list[tuple[int, int] | None]
    mpp: tuple[float, float] | None
    objective_power: float | None
    properties: dict[str, str]

    def read(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Read an in-bounds region of ``level`` as (h, w, 3) uint8."""

    def close(self) -> None:
        """Release file handles."""


def read_rgb(array: Any, yxc: tuple[int, int, int], y: int, x: int, h: int, w: int) -> np.ndarray:
    """The ``(h, w, 3)`` region at ``(y, x)`` of an N-d ``array`` whose y, x and colour axes
    are ``yxc`` (every other axis at index 0)."""
    index: list[Any] = [0] * len(array.shape)
    index[yxc[0]], index[yxc[1]], index[yxc[2]] = slice(y, y + h), slice(x, x + w), slice(0, 3)
    block = np.asarray(array[tuple(index)])
    order = [sorted(yxc).index(i) for i in yxc]
    return block if order == [0, 1, 2] else np.ascontiguousarray(block.transpose(order))
