"""Dock widget, synthetic slides: lazy layer rendered where the camera looks, render all with
cancel, export."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from napari_cytosyn._napari import _chunk_cache
from napari_cytosyn._napari._qt._widget import CytoSynWidget
from napari_cytosyn.models.grf import GRFModel

from .conftest import new_slide

SHOTS = os.environ.get("CYTOSYN_TEST_SHOTS")  # folder to keep the test's screenshots in


def grf_model() -> GRFModel:
    return GRFModel()


@pytest.fixture
def widget(make_napari_viewer, tmp_path):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1300, 800)
    w = CytoSynWidget(viewer, config_path=str(tmp_path / "widget.json"))
    viewer.window.add_dock_widget(w)
    w.model_box.cache_edit.setText(str(tmp_path / "cache"))
    w._save_config()
    w.models.override = grf_model()
    w.sampling.steps_spin.setValue(3)
    w.sampling.seed_spin.setValue(7)
    w.chunk_px = 256  # small chunks keep the test fast
    torch.set_num_threads(1)  # the CI machine has few cores; oversubscription slows it down
    yield w
    w.close_views()


def _wait_until(qtbot, condition, timeout_s: float = 40.0, about: object = None) -> None:
    end = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < end, f"timed out; {about}"
        qtbot.wait(20)


def test_new_slide_renders_the_chunks_in_view_and_the_canvas_shows_them(widget, qtbot):
    layer, slide, view = new_slide(widget, 1536, 1024)
    assert slide.level_shapes[0] == (1024, 1536)
    assert slide.seed == 7
    np.testing.assert_allclose(layer.scale, (0.5, 0.5))
    viewer = widget.viewer
    # Look closely at the top-right corner: level-0 chunk (0, 5) (px 0-255 x 1280-1535).
    camera = getattr(viewer, "scene", viewer).camera  # napari >= 0.9: viewer.scene
    camera.center = (0, 64.0, 704.0)  # um = px (128, 1408)
    camera.zoom = 4.0
    _wait_until(qtbot, lambda: slide.is_done(0, 0, 5), about=view.renderer.stats)
    _wait_until(qtbot, lambda: view.refreshes > 0 and not view._refresh.isActive())
    qtbot.wait(200)
    assert layer.data_level == 0
    # Far from the view nothing was generated (the margin is one ring of chunks).
    assert not slide.is_done(0, 3, 0)
    expected = slide.read_region(0, 0, 1280, 256, 256, generate=False)
    np.testing.assert_array_equal(np.asarray(layer.data[0][0:256, 1280:1536]), expected)
    assert expected.mean() < 235  # tissue, not white glass
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3]
    if SHOTS:
        from skimage.io import imsave

        imsave(f"{SHOTS}/synthetic_view.png", shot)
    H, W = shot.shape[:2]
    centre = shot[H // 2 - 20 : H // 2 + 20, W // 2 - 20 : W // 2 + 20].astype(float)
    assert centre.mean() < 235 and centre.std() > 2  # rendered texture on screen

    # Moving the camera elsewhere renders there.
    camera = getattr(viewer, "scene", viewer).camera  # napari >= 0.9: viewer.scene
    camera.center = (0, 448.0, 64.0)  # px (896, 128): chunk (3, 0)
    _wait_until(qtbot, lambda: slide.is_done(0, 3, 0), about=view.renderer.stats)
    assert view.renderer.stats.requests >= 2


def test_cancel_stops_render_all_within_one_chunk(widget, qtbot):
    _layer, slide, view = new_slide(widget, 2048, 2048)
    view.close()  # only "render all" works on this slide from here on
    total = len(slide.missing_chunks(0))
    job = widget.render_all()
    pressed_at = []  # chunks made when Cancel was pressed (a loaded GUI thread presses late)

    def press(done: int, n: int) -> None:
        if done >= 2 and not pressed_at:
            pressed_at.append(slide.compute_count)
            widget.cancel()

    job.progressed.connect(press)
    assert job.wait(60_000)
    assert job.state == "cancelled"
    made = slide.compute_count
    assert 2 <= pressed_at[0] <= made <= pressed_at[0] + 1  # the chunk in flight may finish
    qtbot.wait(500)
    assert slide.compute_count == made  # and nothing runs after the cancel
    assert len(slide.missing_chunks(0)) == total - made
    assert not widget.progress.cancel_button.isEnabled()


def test_render_all_fills_the_slide_and_export_writes_it(widget, qtbot, tmp_path):
    import zarr

    layer, slide, view = new_slide(widget, 512, 512)
    job = widget.render_all()
    assert job.wait(60_000) and job.state == "done", job.error
    assert slide.missing_chunks(0) == []
    _wait_until(qtbot, lambda: not view._refresh.isActive())
    level0 = np.asarray(layer.data[0][:, :])
    assert level0.shape == (512, 512, 3)
    assert (level0 == 255).all(axis=-1).mean() < 0.01  # no white (unrendered) chunk left

    out = tmp_path / "export.ome.zarr"
    job = widget.export(str(out), "OME-Zarr")
    assert job.wait(60_000) and job.state == "done", job.error
    root = zarr.open_group(str(out), mode="r")
    written = np.moveaxis(np.asarray(root["0"]), 0, -1)
    np.testing.assert_array_equal(written, level0)
    assert root.attrs["napari_cytosyn"]["seed"] == 7


def test_export_of_an_incomplete_slide_renders_and_writes_in_one_job(widget, tmp_path):
    import zarr

    _layer, slide, view = new_slide(widget, 768, 512)
    view.close()  # nothing renders the slide but the export
    missing = len(slide.missing_chunks(0))
    assert missing == 6
    # Declined confirmation: nothing rendered, nothing written.
    widget.confirm_mpx = 0.1
    asked = []
    widget.confirm = lambda text: asked.append(text) or False
    out = tmp_path / "export.ome.zarr"
    assert widget.export(str(out), "OME-Zarr") is None
    assert "Export: 6 chunks" in asked[0] and "not started" in widget.status.text()
    assert slide.compute_count == 0 and not out.exists()

    widget.confirm = lambda text: True
    reports, show = [], widget.session.progress
    widget.session.progress = lambda done, total: reports.append((done, total)) or show(done, total)
    job = widget.export(str(out), "OME-Zarr")
    assert job.wait(60_000) and job.state == "done", job.error
    assert widget.session.job.title == "Render and export OME-Zarr"
    assert slide.missing_chunks(0) == [] and slide.compute_count == missing
    assert (missing, missing) in reports  # the chunks, then the writer's tiles
    assert reports[-1] != (missing, missing) and reports[-1][0] == reports[-1][1]
    root = zarr.open_group(str(out), mode="r")
    written = np.moveaxis(np.asarray(root["0"]), 0, -1)
    np.testing.assert_array_equal(written, slide.read_region(0, 0, 0, 512, 768, generate=False))
    assert (written == 255).all(axis=-1).mean() < 0.01  # rendered tissue, not white chunks
    assert root.attrs["napari_cytosyn"]["seed"] == 7
    assert f"Exported to {out}" in widget.status.text()


def test_zoomed_out_huge_slide_shows_provisional_pixels_and_says_where_generation_starts(
    widget, qtbot
):
    layer, slide, view = new_slide(widget, 100_000, 100_000)
    _wait_until(qtbot, lambda: "Zoomed out" in widget.synthetic_box.view_note.text())
    note = widget.synthetic_box.view_note.text()
    assert "only the 64 nearest the centre are generated" in note and "Zoom in about" in note
    level = int(layer.data_level)
    assert level > 0
    _wait_until(qtbot, lambda: view.chunks_landed >= 1 and view.refreshes >= 1, 120)
    # The coarse chunk over the middle is provisional (not stored) and shows the finished pixels.
    H, W = slide.level_shapes[level]
    shown = np.asarray(layer.data[level][:, :])
    assert not slide.is_done(level, (H // 2) // slide.chunk_px, (W // 2) // slide.chunk_px)
    greys = np.isin(shown, _chunk_cache.CHECKER_GREYS).all(axis=-1)
    assert 0 < (~greys).sum() < greys.sum()  # some pixels generated, most not yet
    assert not (shown == 255).all(axis=-1).any()  # nothing looks like glass
    # The layer list's thumbnail shows them too (not a blank square).
    _wait_until(qtbot, lambda: np.asarray(layer.thumbnail)[..., :3].std() > 1, 30)


def test_render_all_of_a_large_slide_asks_first_with_an_estimate(widget):
    _layer, slide, view = new_slide(widget, 4096, 4096)
    view.close()
    asked = []
    widget.confirm_mpx = 1.0
    widget.confirm = lambda text: asked.append(text) or False
    assert widget.render_all() is None
    assert "256 chunks (17 megapixels)" in asked[0] and "time unknown" in asked[0]
    assert "not started" in widget.status.text() and slide.compute_count == 0
    widget.confirm = lambda text: True
    job = widget.render_all()
    assert job is not None and job.running
    job.cancel()
    assert job.wait(60_000)


def test_every_control_of_the_widget_has_a_tooltip(widget):
    from qtpy.QtWidgets import QAbstractButton, QAbstractSpinBox, QComboBox, QLineEdit

    boxes = (
        widget.model_box,
        widget.sampling,
        widget.edit_box,
        widget.edits_box,
        widget.synthetic_box,
        widget.export_box,
        widget.progress,
    )
    missing = [
        f"{type(box).__name__}: {type(c).__name__} {getattr(c, 'text', lambda: '')()!r}"
        for box in boxes
        for kind in (QAbstractButton, QAbstractSpinBox, QComboBox, QLineEdit)
        for c in box.findChildren(kind)
        if not c.toolTip() and not isinstance(c.parent(), QAbstractSpinBox | QComboBox)
    ]
    assert missing == []
