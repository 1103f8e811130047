"""Slides: one contract (`SlideLike`) and one opener (`open_any`) for real whole-slide images
(`open_slide`), synthetic slides, composites and in-memory pyramids (`ArraySlide`)."""

from napari_cytosyn.slide.real import (
    SLIDE_SUFFIXES,
    Slide,
    SlideReadError,
    open_slide,
)

__all__ = [
    "SLIDE_SUFFIXES",
    "Slide",
    "SlideReadError",
    "open_slide",
]

# Synthetic slides, composites and the viewport renderer (imported on first use: they pull in
# zarr, and napari imports this package at start-up).
_LAZY = {
    "open_any": ".kinds",
    "SlideLike": ".kinds",
    "ArraySlide": ".array",
    "SyntheticSlide": ".synthetic",
    "CompositeSlide": ".composite",
    "ViewportRenderer": ".viewport",
    "ZarrPhaseCache": ".phase_cache",
    "otsu_tissue_mask": ".tissue",
    "StoreError": ".store",
    "StoreExistsError": ".store",
    "StoreMismatchError": ".store",
}
__all__ += list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
