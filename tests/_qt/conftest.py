"""Fixtures shared by the widget tests."""

from __future__ import annotations

import pytest

from napari_cytosyn._napari import _layers
from napari_cytosyn._napari._qt._gc import stop_collecting_on_gui_thread
from napari_cytosyn._napari._qt._wait import wait_loaded
from napari_cytosyn._napari._qt._widget import CytoSynWidget
from napari_cytosyn.models.grf import GRFModel


def new_slide(widget, width: int, height: int):
    """ "New synthetic slide" of ``width`` x ``height`` px in ``widget``, waited for: ``(layer,
    slide, view)`` of the new layer (selected in the widget)."""
    widget.synthetic_box.width_spin.setValue(width)
    widget.synthetic_box.height_spin.setValue(height)
    job = widget.new_synthetic_slide()
    assert job.wait(30_000) and job.state == "done", job.error
    layer = widget.edit_box.image_combo.layer()  # the new slide is selected
    return layer, _layers.slide_of(layer), widget.views[id(layer)]


@pytest.fixture(autouse=True)
def _automatic_gc_after_the_test():
    """The dock switches Python's automatic collection off for the process (``_gc.py``); the
    tests after this one may run no event loop to collect, so it is switched back on."""
    yield
    stop_collecting_on_gui_thread()


@pytest.fixture
def he_widget(make_napari_viewer, tmp_path, monkeypatch):
    """``(viewer, widget, real)``: the CytoSyn widget docked in a shown viewer, its cache under
    ``tmp_path``, the quick GRF model at 3 steps, and the H&E sample opened (``real``)."""
    monkeypatch.setenv("NAPARI_CYTOSYN_CONFIG", str(tmp_path / "widget.json"))
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1300, 800)
    widget = CytoSynWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model_box.cache_edit.setText(str(tmp_path / "cache"))
    widget._save_config()
    widget.models.override = GRFModel()
    widget.sampling.steps_spin.setValue(3)
    [real] = viewer.open_sample("napari-cytosyn", "he_slide")
    wait_loaded(real)
    yield viewer, widget, real
    widget.close_views()
