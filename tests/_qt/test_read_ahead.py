"""An inpaint job reads what the edited layer's first slice needs in its worker thread: the
turn that shows the layer reads no slide pixels on the GUI thread, and shows the same pixels
as a slice read there."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from napari_cytosyn._napari import _layers
from napari_cytosyn.slide.composite import CompositeSlide


@pytest.fixture
def reads(monkeypatch) -> list[tuple[bool, int]]:
    """Every composite read: (on the GUI thread, level)."""
    out: list[tuple[bool, int]] = []
    read_region = CompositeSlide.read_region

    def recorded(self, level, y, x, h, w):
        out.append((threading.current_thread() is threading.main_thread(), level))
        return read_region(self, level, y, x, h, w)

    monkeypatch.setattr(CompositeSlide, "read_region", recorded)
    return out


def _inpaint(viewer, widget, real, y0, x0, y1, x1):
    shapes = viewer.add_shapes(
        [np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], float)], shape_type="rectangle"
    )
    widget.edit_box.image_combo.select(real)
    widget.edit_box.mask_combo.select(shapes)
    job = widget.inpaint()
    assert job is not None and job.wait(90_000) and job.state == "done", job.error


def test_the_edited_layers_first_slice_reads_no_slide_pixels_on_the_gui_thread(
    he_widget, reads, qtbot
):
    viewer, widget, real = he_widget
    at_show: list[list] = []

    def on_inserted(event):
        if event.value.name.endswith("(edited)"):  # reads so far, when it is first shown
            event.value.events.visible.connect(lambda e: at_show.append(list(reads)))

    viewer.layers.events.inserted.connect(on_inserted)
    _inpaint(viewer, widget, real, 100, 60, 130, 110)
    qtbot.waitUntil(lambda: len(at_show) > 0, timeout=10_000)
    edited = viewer.layers[f"{real.name} (edited)"]
    assert any(not gui for gui, _ in at_show[0])  # read by the job's worker thread
    assert not any(gui for gui, _ in at_show[0])
    shown = np.array(edited._slice.image.raw)
    # the read-ahead is dropped by a step after the show: then a refresh reads the slide
    qtbot.waitUntil(lambda: not _layers._READ_AHEAD, timeout=10_000)
    n = len(reads)
    edited.refresh()
    assert any(gui for gui, _ in reads[n:])
    np.testing.assert_array_equal(edited._slice.image.raw, shown)


def test_a_second_edit_refreshes_the_layer_from_pixels_read_ahead(he_widget, reads, qtbot):
    viewer, widget, real = he_widget
    _inpaint(viewer, widget, real, 100, 60, 130, 110)
    edited = viewer.layers[f"{real.name} (edited)"]
    qtbot.waitUntil(lambda: edited.visible, timeout=10_000)
    first = np.array(edited._slice.image.raw)
    n = len(reads)
    _inpaint(viewer, widget, real, 150, 150, 180, 200)  # refreshed when the job ends
    assert reads[n:] and not any(gui for gui, _ in reads[n:])
    second = np.array(edited._slice.image.raw)
    assert np.any(second != first)
    edited.refresh()  # read on the GUI thread now: the same pixels
    assert any(gui for gui, _ in reads[n:])
    np.testing.assert_array_equal(edited._slice.image.raw, second)
