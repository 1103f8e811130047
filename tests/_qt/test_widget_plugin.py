"""The dock widget opened as users and scripts open it: the Plugins menu and
``add_plugin_dock_widget`` (napari hands the widget a PublicOnlyProxy of the viewer); one job
queue per viewer, shared by every dock."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cytosyn._napari import _layers
from napari_cytosyn._napari._qt._wait import wait_loaded
from napari_cytosyn._napari._qt._widget import CytoSynWidget
from napari_cytosyn.models.grf import GRFModel

PLUGIN = "napari-cytosyn"


@pytest.fixture
def viewer(make_napari_viewer, tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_CYTOSYN_CONFIG", str(tmp_path / "widget.json"))
    v = make_napari_viewer(show=True)
    v.window._qt_window.resize(1300, 800)
    return v


def _prepare(widget: CytoSynWidget, cache) -> None:
    widget.model_box.cache_edit.setText(str(cache))
    widget._save_config()
    widget.models.override = GRFModel()
    widget.sampling.steps_spin.setValue(3)


def _rectangle(viewer, y0, x0, y1, x1, name="mask"):
    return viewer.add_shapes(
        [np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], float)],
        shape_type="rectangle",
        name=name,
    )


def _menu_action(qt_window, *texts: str):
    """The QAction whose text is one of ``texts`` anywhere under the window's Plugins menu (a
    plugin with one widget gets "Widget (Plugin)", with several a submenu of widgets)."""
    pending = [a.menu() for a in qt_window.menuBar().actions() if "Plugins" in a.text()]
    while pending:
        menu = pending.pop()
        for action in menu.actions():
            if action.menu() is not None:
                pending.append(action.menu())
            elif action.text().replace("&", "") in texts:
                return action
    raise AssertionError(f"no {texts} action in the Plugins menu")


def test_add_plugin_dock_widget_then_inpaint_and_synthesize(viewer, tmp_path, qtbot):
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "CytoSyn")
    assert isinstance(widget, CytoSynWidget)
    assert type(widget.viewer).__name__ == "Viewer"  # the proxy was unwrapped
    _prepare(widget, tmp_path / "cache")
    [real] = viewer.open_sample(PLUGIN, "he_slide")
    wait_loaded(real)
    shapes = _rectangle(viewer, 100, 60, 130, 110)
    widget.edit_box.image_combo.select(real)
    widget.edit_box.mask_combo.select(shapes)
    job = widget.inpaint()
    assert job is not None, widget.status.text()
    assert job.wait(90_000) and job.state == "done", job.error
    edited = viewer.layers[f"{real.name} (edited)"]
    composite = _layers.slide_of(edited)
    assert len(composite.edits) == 1
    # the outline comes a turn of the event loop after the edited layer (one layer per turn)
    qtbot.waitUntil(lambda: _layers.mask_layer_of(edited) is not None)
    labels = _layers.mask_layer_of(edited)
    assert labels.name == f"{edited.name} synthetic"
    np.testing.assert_array_equal(
        np.asarray(labels.data[0][380:540, 220:460]),
        composite.mask_region(0, 380, 220, 160, 240).astype(np.uint8),
    )
    assert labels.data[0][400:520, 240:440].all()  # the rectangle, 0.25 um/px
    # the plugin's new layers leave the selection on the mask layer the user draws on
    assert viewer.layers.selection.active is shapes and len(viewer.layers.selection) == 1

    widget.edit_box.mask_combo.select(shapes)
    job = widget.synthesize_region()
    assert job is not None, widget.status.text()
    assert job.wait(90_000) and job.state == "done", job.error
    region = viewer.layers["synthesized region 1"]
    assert region.data.shape[2] == 3 and region.data.std() > 1
    qtbot.waitUntil(lambda: _layers.mask_layer_of(region) is not None)
    outline = _layers.mask_layer_of(region).data  # ones in a frame of zeros (one pixel)
    assert outline.shape == (region.data.shape[0] + 2, region.data.shape[1] + 2)
    assert outline[1:-1, 1:-1].all() and not outline[0].any() and not outline[:, -1].any()
    assert viewer.layers.selection.active is shapes


def test_plugins_menu_opens_the_widget_and_it_inpaints(viewer, tmp_path):
    _menu_action(viewer.window._qt_window, "CytoSyn (CytoSyn)", "CytoSyn").trigger()
    docks = getattr(viewer.window, "dock_widgets", None)  # the inner widgets (napari >= 0.6)
    if docks is None:
        docks = {k: d.widget() for k, d in viewer.window._dock_widgets.items()}
    [widget] = [w for w in docks.values() if isinstance(w, CytoSynWidget)]
    _prepare(widget, tmp_path / "cache")
    [real] = viewer.open_sample(PLUGIN, "he_slide")
    wait_loaded(real)
    shapes = _rectangle(viewer, 150, 150, 170, 180)
    widget.edit_box.image_combo.select(real)
    widget.edit_box.mask_combo.select(shapes)
    job = widget.inpaint()
    assert job is not None, widget.status.text()
    assert job.wait(90_000) and job.state == "done", job.error
    assert f"{real.name} (edited)" in viewer.layers


def test_one_job_per_viewer_buttons_disabled_in_every_dock(viewer, tmp_path, qtbot):
    first = CytoSynWidget(viewer)
    second = CytoSynWidget(viewer)
    viewer.window.add_dock_widget(first, name="first")
    viewer.window.add_dock_widget(second, name="second")
    _prepare(first, tmp_path / "cache")
    assert second.models is first.models  # one model cache per viewer
    [real] = viewer.open_sample(PLUGIN, "he_slide")
    wait_loaded(real)
    shapes = _rectangle(viewer, 50, 50, 200, 200)
    for w in (first, second):
        w.edit_box.image_combo.select(real)
        w.edit_box.mask_combo.select(shapes)
    first.sampling.steps_spin.setValue(400)  # long enough to look at the buttons
    job = first.inpaint()
    assert job is not None
    for w in (first, second):
        assert not w.edit_box.inpaint_button.isEnabled()
        assert not w.edit_box.region_button.isEnabled()
        assert not w.synthetic_box.new_slide_button.isEnabled()
        assert not w.export_box.export_button.isEnabled()
        assert w.progress.cancel_button.isEnabled()
    assert second.synthesize_region() is None  # refused, not queued behind the first
    assert "still running" in second.status.text()
    qtbot.waitUntil(lambda: first.session.job.done >= 1, timeout=60_000)
    assert "/ " in first.progress.bar.format() and "steps" in first.progress.bar.format()
    second.progress.cancel_button.click()  # Cancel in either dock stops the viewer's job
    assert job.wait(60_000) and job.state == "cancelled"
    for w in (first, second):
        assert w.edit_box.inpaint_button.isEnabled()
        assert not w.progress.cancel_button.isEnabled()
    first.close_views()
    second.close_views()
