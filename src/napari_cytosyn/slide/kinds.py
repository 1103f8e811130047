"""The one contract every slide kind answers, and `open_any`, the one way to open a path.

Three kinds of slide share it:

- ``"real"``: a whole-slide image file or OME-Zarr read as it is (`Slide`, `open_slide`),
  including exports of this plugin;
- ``"synthetic"``: a synthetic slide's store (`SyntheticSlide`), every pixel generated;
- ``"composite"``: a real slide with inpainted edits (`CompositeSlide`, an edit store);

plus `ArraySlide`, an in-memory pyramid (a region-mode image, a napari layer) that states its
kind. Code that treats kinds differently asks ``slide.kind``, never the class.
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
    """What the widget, the CLI, the napari reader and writer and `export_slide` use of a slide.

    Attributes:
        kind: ``"real"``, ``"synthetic"`` or ``"composite"``.
        name: a display name.
        path: the file, folder or store the slide lives in.
        levels: lazy ``(h_k, w_k, 3)`` uint8 arrays, finest first.
        level_shapes: ``(h_k, w_k)`` of each level.
        mpp: micrometres per level-0 pixel (a ``PixelSize``), or ``None`` when unknown.
    """

    kind: SlideKind
    name: str
    path: Path
    levels: list[Any]
    level_shapes: list[tuple[int, int]]
    mpp: PixelSize | None

    def provenance(self, checksum_source: bool = True) -> dict[str, Any]:
        """How the pixels were made, as the JSON-able record every export carries
        (:func:`~napari_cytosyn.slide.provenance.build_provenance`)."""

    def synthetic_mask(self, level: int) -> Any:
        """``(h, w)`` bool lazy array of ``level``: True where the pixel is synthetic (all
        False for a real slide, all True for a synthetic one)."""

    def finished_levels(
        self, render_missing: bool = False, progress: Any = None, cancel: Any = None
    ) -> list[Any]:
        """The pyramid an export writes, every pixel final. A synthetic slide with unrendered
        chunks renders them first when ``render_missing``, else raises
        :class:`~napari_cytosyn.slide.store_io.IncompleteSlideError`."""


def export_mask_levels(slide: SlideLike, n_levels: int) -> list[Any] | None:
    """The synthetic mask an export of ``slide`` carries (``n_levels`` bool levels), or ``None``.

    A composite's edits, and the mask a reopened export of this plugin holds (a ``"real"``
    slide whose ``stored_mask_levels`` is set: re-exporting an export keeps it). A synthetic
    slide gets none (every pixel is synthetic), nor does a real slide without one.
    """
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
    composite of its real slide), or a slide file or OME-Zarr (exports of this plugin
    included).

    ``mode``: ``"r"`` (read only: a synthetic slide's missing chunks cannot be generated) or
    ``"r+"`` (they are generated with the model named in the store, on demand).

    Raises:
        FileNotFoundError: ``path``, or the real slide an edit store belongs to, is missing.
        SlideReadError: a file that is not a slide this package reads.
        ValueError: a store of this plugin of a kind that is not a slide.
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
