"""Inserting a layer in steps (``_layers.insert_layer`` with ``steps``): napari's canvas visual
and layer controls of a new layer are built in later turns of the event loop, and whatever
napari does meanwhile (removing, selecting, closing) still works."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Image

from napari_cytosyn._napari import _layers


@pytest.fixture
def viewer(make_napari_viewer):
    v = make_napari_viewer(show=True)
    v.window._qt_window.resize(900, 700)
    return v


def _red() -> Image:
    rgb = np.zeros((64, 96, 3), np.uint8)
    rgb[..., 0] = 255
    return Image(rgb, rgb=True, name="red")


def _red_px(viewer) -> int:
    shot = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    return int(((shot[..., 0] > 200) & (shot[..., 1] < 60) & (shot[..., 2] < 60)).sum())


def _built(viewer, layer) -> tuple[bool, bool]:
    """Whether napari has built ``layer``'s canvas visual and its layer controls (private
    napari names, checked here so that a napari that renames them fails loudly)."""
    qt_viewer = viewer.window._qt_viewer
    controls = qt_viewer.controls.widgets.get(layer)  # napari's, or the plugin's stand-in
    return layer in qt_viewer.canvas.layer_to_visual, getattr(controls, "layer", None) is layer


def test_a_layer_inserted_in_steps_is_built_and_drawn_by_them(viewer, qtbot):
    first = viewer.add_image(np.zeros((64, 96, 3), np.uint8), rgb=True, name="first")
    layer, steps = _red(), []
    _layers.insert_layer(viewer, layer, 0, select=True, steps=steps)
    # in the layer list at once, hidden, napari's Qt parts not built, not selected yet
    assert list(viewer.layers) == [layer, first] and not layer.visible
    assert _built(viewer, layer) == (False, False)
    assert viewer.layers.selection.active is first
    make, visual, show, make_controls, controls, select = steps
    make()  # napari's vispy layer, not in the canvas yet
    assert _built(viewer, layer) == (False, False)
    visual()
    assert _built(viewer, layer) == (True, False)
    show()
    assert layer.visible
    make_controls()  # napari's controls, not in its panel yet
    assert _built(viewer, layer) == (True, False)
    controls()
    assert _built(viewer, layer) == (True, True)
    select()
    assert viewer.layers.selection.active is layer
    first.visible = False
    viewer.reset_view()
    qtbot.waitUntil(lambda: _red_px(viewer) > 1000, timeout=5000)


def test_without_steps_the_layer_is_inserted_whole_and_selected_only_if_asked(viewer):
    first = viewer.add_image(np.zeros((8, 8, 3), np.uint8), rgb=True, name="first")
    layer = _red()
    _layers.insert_layer(viewer, layer)
    assert _built(viewer, layer) == (True, True)
    assert viewer.layers.selection.active is first
    other = _red()
    _layers.insert_layer(viewer, other, select=True)
    assert viewer.layers.selection.active is other


@pytest.mark.parametrize("action", ["remove", "select", "select another", "clear"])
def test_removing_or_selecting_before_the_steps_builds_what_napari_needs(viewer, action):
    first = viewer.add_image(np.zeros((8, 8, 3), np.uint8), rgb=True, name="first")
    second = viewer.add_image(np.zeros((8, 8, 3), np.uint8), rgb=True, name="second")
    layer, steps = _red(), []
    _layers.insert_layer(viewer, layer, steps=steps)
    assert viewer.layers.selection.active is second
    if action == "remove":
        viewer.layers.remove(layer)
        assert list(viewer.layers) == [first, second]
    elif action == "clear":
        viewer.layers.clear()
        assert len(viewer.layers) == 0
    else:  # napari shows the controls of the selected layer: they are built first
        viewer.layers.selection.active = layer if action == "select" else first
        assert _built(viewer, layer) == (True, action == "select")
        controls = viewer.window._qt_viewer.controls
        assert controls.currentWidget() is controls.widgets[viewer.layers.selection.active]
    for step in steps:  # the steps have nothing left to build, and do not fail
        step()
    if layer in viewer.layers:  # controls only for a layer that was selected
        assert _built(viewer, layer) == (True, action == "select") and layer.visible


def test_controls_of_a_layer_not_selected_are_built_when_it_is_first_selected(viewer):
    first = viewer.add_image(np.zeros((8, 8, 3), np.uint8), rgb=True, name="first")
    layer, steps = _red(), []
    _layers.insert_layer(viewer, layer, steps=steps)
    for step in steps:
        step()
    assert _built(viewer, layer) == (True, False)  # napari shows the selected layer's alone
    viewer.layers.selection.active = first
    assert _built(viewer, layer) == (True, False)
    viewer.layers.selection.active = layer
    assert _built(viewer, layer) == (True, True)
    controls = viewer.window._qt_viewer.controls
    assert controls.currentWidget() is controls.widgets[layer]
    viewer.layers.remove(layer)
    assert layer not in controls.widgets and controls.currentWidget() is not None


def test_napari_shows_an_empty_panel_until_the_controls_are_built(viewer):
    """However the layer gets selected (napari's own handlers run before the plugin's)."""
    first = viewer.add_image(np.zeros((8, 8, 3), np.uint8), rgb=True, name="first")
    layer, steps = _red(), []
    _layers.insert_layer(viewer, layer, steps=steps)
    controls = viewer.window._qt_viewer.controls
    viewer.layers.selection.clear()
    viewer.layers.selection.add(layer)  # no "active" event before napari's handler
    assert _built(viewer, layer) == (True, True)
    assert controls.currentWidget() is controls.widgets[layer]
    viewer.layers.selection.add(first)  # several selected: napari's panel of both
    viewer.layers.selection.active = first
    assert controls.currentWidget() is controls.widgets[first]


@pytest.mark.parametrize("action", ["remove", "clear", "remove another"])
def test_a_layer_whose_controls_were_never_built_can_be_removed(viewer, qtbot, action):
    first = viewer.add_image(np.zeros((8, 8, 3), np.uint8), rgb=True, name="first")
    layer, steps = _red(), []
    _layers.insert_layer(viewer, layer, steps=steps)
    for step in steps:
        step()
    assert _built(viewer, layer) == (True, False)
    if action == "remove":
        viewer.layers.remove(layer)
    elif action == "clear":
        viewer.layers.clear()
    else:
        viewer.layers.remove(first)
        assert _built(viewer, layer) == (True, False)  # nothing built for another's removal
    qtbot.wait(10)
    controls = viewer.window._qt_viewer.controls
    assert set(controls.widgets) == set(viewer.layers)  # napari's, or a stand-in
    assert set(viewer.window._qt_viewer.canvas.layer_to_visual) == set(viewer.layers)


def test_a_layer_hidden_before_its_show_step_stays_hidden(viewer):
    layer, steps = _red(), []
    _layers.insert_layer(viewer, layer, steps=steps)
    layer.visible = False  # a user or script hides it meanwhile
    for step in steps:
        step()
    assert not layer.visible


def test_a_layer_added_before_the_select_step_keeps_the_selection(viewer):
    """A sample's steps run on after it is shown: the Shapes layer a user adds meanwhile (napari
    selects it) stays selected; a second layer of the plugin's still takes it from the first."""
    layer, steps = _red(), []
    _layers.insert_layer(viewer, layer, select=True, steps=steps)
    shapes = viewer.add_shapes(name="mask")  # the user, before the last step
    for step in steps:
        step()
    assert viewer.layers.selection.active is shapes and len(viewer.layers.selection) == 1
    assert _built(viewer, layer) == (True, True)
    first, second, steps_1, steps_2 = _red(), _red(), [], []
    _layers.insert_layer(viewer, first, select=True, steps=steps_1)
    _layers.insert_layer(viewer, second, select=True, steps=steps_2)
    for step in steps_1 + steps_2:
        step()
    assert viewer.layers.selection.active is second and len(viewer.layers.selection) == 1


def test_a_layer_from_a_layer_data_tuple_is_built_in_later_steps(viewer, qtbot):
    """Samples return layer data tuples, which napari inserts itself."""
    first = viewer.add_image(np.zeros((8, 8, 3), np.uint8), rgb=True, name="first")
    found = []
    _layers._inserted_in_steps(viewer, lambda ly: ly.name == "red", found.append)
    # napari makes and inserts the layer of a tuple as add_image does
    layer = viewer.add_image(np.zeros((64, 96, 3), np.uint8), name="red", rgb=True, visible=False)
    assert found == [layer] and _built(viewer, layer) == (False, False)
    assert viewer.layers.selection.active is first  # selected by the last step
    qtbot.waitUntil(lambda: viewer.layers.selection.active is layer, timeout=5000)
    assert _built(viewer, layer) == (True, True) and layer.visible
    # napari builds later layers as it always does
    other = viewer.add_image(np.zeros((8, 8, 3), np.uint8), rgb=True, name="other")
    assert _built(viewer, other) == (True, True)


@pytest.mark.parametrize("action", ["remove", "select"])
def test_a_vispy_layer_made_but_not_in_the_canvas_yet_is_put_there_first(viewer, action):
    first = viewer.add_image(np.zeros((8, 8, 3), np.uint8), rgb=True, name="first")
    layer, steps = _red(), []
    _layers.insert_layer(viewer, layer, steps=steps)
    steps[0]()  # napari's vispy layer made
    assert _built(viewer, layer) == (False, False)
    canvas = viewer.window._qt_viewer.canvas
    if action == "remove":
        viewer.layers.remove(layer)  # napari's canvas removes (and closes) it
        assert set(canvas.layer_to_visual) == {first}
    else:
        viewer.layers.selection.active = layer
        assert _built(viewer, layer) == (True, True)
    for step in steps[1:]:
        step()
    assert set(canvas.layer_to_visual) == set(viewer.layers)


def test_controls_made_but_not_in_the_panel_are_dropped_with_the_layer(viewer, qtbot):
    first = viewer.add_image(np.zeros((8, 8, 3), np.uint8), rgb=True, name="first")
    layer, steps = _red(), []
    _layers.insert_layer(viewer, layer, select=True, steps=steps)
    for step in steps[:4]:  # ... up to napari's controls made
        step()
    viewer.layers.remove(layer)
    for step in steps[4:]:
        step()
    qtbot.wait(10)
    controls = viewer.window._qt_viewer.controls
    assert set(controls.widgets) == {first} and viewer.layers.selection.active is not layer


def test_making_the_controls_draws_nothing_and_keeps_the_colormap(viewer, qtbot):
    """napari's colormap control, when made, sets the layer's colormap to the one it has: that
    redrew the whole canvas for nothing."""
    from qtpy.QtWidgets import QComboBox

    layer, steps = Image(np.zeros((64, 96), np.uint8), colormap="viridis", name="grey"), []
    _layers.insert_layer(viewer, layer, select=True, steps=steps)
    make, visual, show, make_controls, controls, select = steps
    for step in (make, visual, show):
        step()
    qtbot.wait(200)
    draws, colormaps = [], []
    viewer.window._qt_viewer.canvas._scene_canvas.events.draw.connect(draws.append)
    layer.events.colormap.connect(colormaps.append)
    make_controls()
    qtbot.wait(200)
    assert draws == [] and colormaps == []
    controls()
    select()
    combo = viewer.window._qt_viewer.controls.widgets[layer].findChild(
        QComboBox, "colormapComboBox"
    )
    assert combo.currentData() == "viridis"
    combo.setCurrentIndex(combo.findData("magma"))  # the user's choice still applies
    assert layer.colormap.name == "magma" and len(colormaps) == 1
    qtbot.waitUntil(lambda: len(draws) > 0, timeout=5000)


def test_a_new_outline_is_styled_without_a_slice_per_style(viewer, monkeypatch):
    """Setting its contour sliced it (napari's contour: 11 ms) in the turn that inserts it
    hidden; it is sliced styled when its show step shows it."""
    from napari.layers import Labels

    from napari_cytosyn._napari._qt._controller import _outline_steps

    region = viewer.add_image(np.zeros((64, 96, 3), np.uint8), rgb=True, name="region")
    sliced = []  # the contour of each refresh that slices
    refresh = Labels.refresh

    def counted(self, *args, **kwargs):
        if self.visible and not self._refresh_blocked:
            sliced.append(self.contour)
        return refresh(self, *args, **kwargs)

    monkeypatch.setattr(Labels, "refresh", counted)
    [add] = _outline_steps(viewer, region, None)
    steps = add()
    assert 3 not in sliced  # napari's own slices of a new Labels only
    n = len(sliced)
    for step in steps:
        step()
    labels = _layers.mask_layer_of(region)
    assert sliced[n:] == [3] and labels.visible and not labels.editable


def test_a_timer_due_after_a_step_ends_runs_before_the_next_step(qtbot):
    """Qt composes the window after a step; a timer due meanwhile ran after the next step
    when that one was due 1 ms after the step before."""
    import time

    from qtpy.QtCore import QTimer

    order = []

    def slow() -> None:
        QTimer.singleShot(25, lambda: order.append("timer"))  # due 5 ms after this step
        time.sleep(0.02)
        order.append("slow")

    _layers.later(slow, lambda: order.append("next"))
    qtbot.waitUntil(lambda: len(order) == 3, timeout=5000)
    assert order == ["slow", "timer", "next"]


def test_a_timer_due_during_the_compose_after_a_step_runs_before_the_next_step(qtbot):
    """The next step waits for the window's repaint of what a step changed: timed from the
    step's end, a short step's successor fell due during the compose and ran before the timers
    that fell due then (napari's controls in the same gap as the new layer's first draw)."""
    import time

    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QWidget

    order = []

    class Slow(QWidget):
        def paintEvent(self, event) -> None:  # a window compose that takes 40 ms
            time.sleep(0.04)
            order.append("paint")

    widget = Slow()
    qtbot.addWidget(widget)
    widget.resize(100, 100)
    widget.show()
    qtbot.waitExposed(widget)
    qtbot.wait(50)
    order.clear()

    def step() -> None:  # 2 ms: the next step is due 2 ms after it, during the paint
        widget.update()
        QTimer.singleShot(10, lambda: order.append("timer"))  # due during the paint too
        time.sleep(0.002)
        order.append("step")

    _layers.later(step, lambda: order.append("next"))
    qtbot.waitUntil(lambda: "next" in order, timeout=5000)
    assert order == ["step", "paint", "timer", "next"]
