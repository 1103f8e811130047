"""Slides: real whole-slide images (`open_slide`), synthetic slides, composites, pyramids."""

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
