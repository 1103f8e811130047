"""The one contract every slide kind answers, and `open_any`, the one way to open a path.

Kinds: ``"real"`` (a slide file or OME-Zarr as it is, exports of this plugin included:
`Slide`), ``"synthetic"`` (a synthetic slide's store: `SyntheticSlide`) and ``"composite"`` (a
real slide with inpainted edits: `CompositeSlide`); `ArraySlide`, an in-memory pyramid, states
its kind. Code that treats kinds differently asks ``slide.kind``, never the class.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

from napari_cytosyn.pixel_size import PixelSize

SlideKind = Literal["real", "synthetic", "composite"]
KINDS: tuple[SlideKind, ...] = ("real", "synthetic", "composite")


@runtime_checkable
class SlideLike(Protocol):
    """What the widget, the CLI, the napari reader and writer and `export_slide` use of a slide:
    ``kind``, a display ``name``, the ``path`` it lives in, lazy ``levels`` ``(h_k, w_k, 3)``
    uint8 finest first, their ``level_shapes`` and the level-0 ``mpp`` (or ``None``)."""

    kind: SlideKind
    name: str
    path: Path
    levels: list[Any]
    level_shapes: list[tuple[int, int]]
    mpp: PixelSize | None

    def provenance(self, checksum_source: bool = True) -> dict[str, Any]:
        """How the pixels were made: the record every export carries (``build_provenance``)."""

    def synthetic_mask(self, level: int) -> Any:
        """``(h, w)`` bool lazy array of ``level``, True where the pixel is synthetic."""

    def finished_levels(
        self, render_missing: bool = False, progress: Any = None, cancel: Any = None
    ) -> list[Any]:
        """The pyramid an export writes, every pixel final (unrendered chunks of a synthetic
        slide rendered when ``render_missing``, else ``IncompleteSlideError``)."""


def export_mask_levels(slide: SlideLike, n_levels: int) -> list[Any] | None:
    """The synthetic mask an export of ``slide`` carries (``n_levels`` bool levels): a
    composite's, or the one a reopened export holds (``stored_mask_levels``); else ``None``
    (a synthetic slide is synthetic everywhere)."""
    if slide.kind == "composite" or (
        slide.kind == "real" and getattr(slide, "stored_mask_levels", None)
    ):
        return [slide.synthetic_mask(k) for k in range(n_levels)]
    return None


def store_kind(path: str | os.PathLike) -> str | None:
    """The kind recorded in a store of this plugin (``"synthetic-slide"``, ``"edit-store"``),
    or ``None`` when ``path`` is not such a store."""
    from napari_cytosyn.slide.store import read_store_attrs

    path = Path(path)
    attrs = read_store_attrs(path) if path.is_dir() else None
    return attrs.get("kind") if attrs else None


def open_any(path: str | os.PathLike, mode: str = "r") -> SlideLike:
    """Open whatever this plugin reads: a synthetic slide's store, an edit store (as the
    composite of its real slide), or a slide file or OME-Zarr.

    ``mode``: ``"r"``, or ``"r+"`` (a synthetic slide's missing chunks are then generated with
    the model its store names). Raises ``FileNotFoundError`` (``path``, or an edit store's real
    slide, is missing), ``SlideReadError`` (not a slide) or ``ValueError`` (a store of ours
    that is not a slide).
    """
    from napari_cytosyn.slide.real import open_slide

    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such slide, store or export")
    kind = store_kind(path)
    if kind == "synthetic-slide":
        from napari_cytosyn.slide.synthetic import SyntheticSlide

        return SyntheticSlide.open(path, mode=mode)
    if kind == "edit-store":
        from napari_cytosyn.slide.composite import CompositeSlide
        from napari_cytosyn.slide.store import read_store_attrs

        source = read_store_attrs(path)["source"]["path"]
        if not Path(source).exists():
            raise FileNotFoundError(
                f"the slide {source} that the edits in {path} belong to is not there any more"
            )
        return CompositeSlide(source, path)
    if kind is not None:
        raise ValueError(f"{path} is a napari-cytosyn {kind!r} store, not a slide")
    return open_slide(path)
