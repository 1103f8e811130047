"""Cancel stops every kind of job within 2 s and leaves nothing half-written; napari exits
cleanly (exit status 0) while a synthetic slide is rendering."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from napari_cytosyn._napari import _actions, _layers
from napari_cytosyn._napari._qt._wait import wait_loaded
from napari_cytosyn._napari._qt._widget import CytoSynWidget
from napari_cytosyn.models.grf import GRFModel
from napari_cytosyn.sampling import Cancelled

from .conftest import new_slide

PLUGIN = "napari-cytosyn"
CANCEL_S = 2.0


@pytest.fixture
def widget(make_napari_viewer, tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_CYTOSYN_CONFIG", str(tmp_path / "widget.json"))
    viewer = make_napari_viewer(show=True)
    w = CytoSynWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.model_box.cache_edit.setText(str(tmp_path / "cache"))
    w._save_config()
    w.models.override = GRFModel()
    yield w
    w.close_views()


def _cancel_after_first_progress(widget, job) -> dict:
    """Press Cancel at the job's first progress report; returns when it was pressed and when
    the job ended."""
    times: dict = {}

    def on_progress(done, total):
        if "cancel" not in times and done >= 1:
            times["cancel"] = time.monotonic()
            widget.progress.cancel_button.click()

    job.progressed.connect(on_progress)
    job.finished.connect(lambda: times.setdefault("end", time.monotonic()))
    assert job.wait(120_000)
    return times


def _rect(viewer, y0, x0, y1, x1):
    return viewer.add_shapes(
        [np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], float)], shape_type="rectangle"
    )


def test_cancel_inpaint_and_region_within_2_s(widget):
    viewer = widget.viewer
    [real] = viewer.open_sample(PLUGIN, "he_slide")
    wait_loaded(real)
    shapes = _rect(viewer, 50, 50, 200, 200)
    widget.edit_box.image_combo.select(real)
    widget.edit_box.mask_combo.select(shapes)
    widget.sampling.steps_spin.setValue(1000)
    for start in (widget.inpaint, widget.synthesize_region):
        job = start()
        assert job is not None, widget.status.text()
        times = _cancel_after_first_progress(widget, job)
        assert job.state == "cancelled"
        assert times["end"] - times["cancel"] <= CANCEL_S
    assert f"{real.name} (edited)" not in viewer.layers
    assert not list((widget.config.cache_path() / "edits").glob("*"))  # no store left behind
    assert "synthesized region 1" not in viewer.layers


def test_cancel_render_all_within_2_s_and_nothing_half_written(widget, qtbot):
    widget.sampling.steps_spin.setValue(400)  # each chunk takes many model calls
    _, slide, view = new_slide(widget, 1024, 1024)
    view.close(timeout=30)  # only Render all works on the slide
    job = widget.render_all()
    qtbot.wait(1000)  # in the middle of the first chunk (400 steps of several windows)
    assert job.running
    t_cancel = time.monotonic()
    widget.cancel()
    assert job.wait(60_000)
    assert job.state == "cancelled"
    assert time.monotonic() - t_cancel <= CANCEL_S
    done = slide.store.completion(0).count()
    for cy, cx in slide.missing_chunks(0):  # an unfinished chunk has no file
        assert not slide.store.chunk_file(0, cy, cx).exists()
    assert done == slide.compute_count


@pytest.mark.parametrize("fmt", ["OME-Zarr", "OME-TIFF"])
def test_cancelled_export_stops_within_2_s_and_leaves_nothing(widget, tmp_path, fmt):
    viewer = widget.viewer
    widget.sampling.steps_spin.setValue(3)
    [real] = viewer.open_sample(PLUGIN, "he_slide")
    wait_loaded(real)
    widget.edit_box.image_combo.select(real)
    widget.edit_box.mask_combo.select(_rect(viewer, 100, 60, 130, 110))
    job = widget.inpaint()
    assert job.wait(90_000) and job.state == "done", job.error
    composite = _layers.slide_of(viewer.layers[f"{real.name} (edited)"])
    out = tmp_path / "out" / f"case{_actions.EXPORT_FORMATS[fmt]}"
    out.parent.mkdir()
    cancel, times = threading.Event(), {}

    def progress(done, total):
        if done >= 1 and not cancel.is_set():
            times["cancel"] = time.monotonic()
            cancel.set()

    with pytest.raises(Cancelled):
        _actions.export_work(composite, out, fmt)(progress, cancel)
    assert time.monotonic() - times["cancel"] <= CANCEL_S
    assert list(out.parent.iterdir()) == []  # no partial file, no temporary left


def test_cancel_while_an_export_renders_missing_chunks_leaves_no_file(widget, qtbot, tmp_path):
    widget.sampling.steps_spin.setValue(400)  # each chunk takes many model calls
    _, slide, view = new_slide(widget, 1024, 1024)
    view.close(timeout=30)  # only the export renders the slide
    widget.confirm = lambda text: True
    out = tmp_path / "out" / "seed.ome.tif"
    out.parent.mkdir()
    job = widget.export(str(out), "OME-TIFF")
    assert widget.session.job.title == "Render and export OME-TIFF"
    qtbot.wait(1000)  # in the middle of the first chunk
    assert job.running
    t_cancel = time.monotonic()
    widget.progress.cancel_button.click()
    assert job.wait(60_000)
    assert job.state == "cancelled"
    assert time.monotonic() - t_cancel <= CANCEL_S
    assert list(out.parent.iterdir()) == []  # the writer never started
    assert slide.missing_chunks(0)  # and the render stopped
    for cy, cx in slide.missing_chunks(0):
        assert not slide.store.chunk_file(0, cy, cx).exists()


def test_napari_exits_cleanly_while_a_synthetic_slide_renders(tmp_path):
    script = textwrap.dedent(
        f"""
        import os, time
        os.environ["NAPARI_CYTOSYN_CONFIG"] = {str(tmp_path / "w.json")!r}
        import napari
        from qtpy.QtCore import QTimer
        from napari_cytosyn._napari._qt._widget import CytoSynWidget
        from napari_cytosyn.models.grf import GRFModel

        viewer = napari.Viewer(show=True)
        w = CytoSynWidget(viewer)
        viewer.window.add_dock_widget(w)
        w.model_box.cache_edit.setText({str(tmp_path / "cache")!r})
        w._save_config()
        w.models.override = GRFModel()
        w.sampling.steps_spin.setValue(2000)  # a chunk takes long: it is in flight at exit
        w.synthetic_box.width_spin.setValue(4096)
        w.synthetic_box.height_spin.setValue(4096)
        job = w.new_synthetic_slide()
        assert job.wait(30_000) and job.state == "done"
        t0 = time.monotonic()
        QTimer.singleShot(2500, viewer.close)
        napari.run()
        print("closed after", round(time.monotonic() - t0, 1))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "terminate called" not in result.stderr
    assert "closed after" in result.stdout
