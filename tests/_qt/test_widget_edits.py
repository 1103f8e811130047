"""Edit management in the dock widget: the edit list, undo, remove, the synthetic labels layer
following the edits, and what persists between sessions (only what is reopened on purpose)."""

from __future__ import annotations

import numpy as np

from napari_cytosyn._napari import _layers
from napari_cytosyn._napari._qt._wait import wait_loaded
from napari_cytosyn._napari._qt._widget import CytoSynWidget
from napari_cytosyn.models.grf import GRFModel

PLUGIN = "napari-cytosyn"


def _inpaint(viewer, widget, real, box_um, seed):
    (y0, x0), (y1, x1) = box_um
    shapes = viewer.add_shapes(
        [np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], float)], shape_type="rectangle"
    )
    widget.edit_box.image_combo.select(real)
    widget.edit_box.mask_combo.select(shapes)
    widget.sampling.seed_spin.setValue(seed)
    job = widget.inpaint()
    assert job is not None, widget.status.text()
    assert job.wait(90_000) and job.state == "done", job.error
    return viewer.layers[f"{real.name} (edited)"]


def _levels(layer) -> list[np.ndarray]:
    return [np.asarray(level[:, :]) for level in layer.data]


def _run(job):
    assert job is not None
    assert job.wait(60_000) and job.state == "done", job.error


def test_edit_list_undo_and_remove_give_back_the_real_pixels_bit_for_bit(he_widget):
    viewer, widget, real = he_widget
    real_levels = _levels(real)
    edited = _inpaint(viewer, widget, real, ((100, 60), (130, 110)), seed=1)
    edited = _inpaint(viewer, widget, real, ((150, 150), (170, 180)), seed=2)
    composite = _layers.slide_of(edited)
    widget.edit_box.image_combo.select(edited)
    items = [widget.edits_box.edit_list.item(i).text() for i in range(2)]
    assert items[0].startswith("1. ") and "seed 1" in items[0] and "3 steps" in items[0]
    assert items[1].startswith("2. ") and "seed 2" in items[1] and "UTC" in items[1]
    labels = _layers.mask_layer_of(edited)
    assert labels.data[0][620:680, 620:700].all() and labels.data[0][400:520, 240:440].all()

    # Remove the first edit: its rectangle is real again, the second stays.
    widget.edits_box.edit_list.setCurrentRow(0)
    widget.edits_box.remove_button.click()
    _run(widget.job)
    assert [e["recipe"]["core"]["seed"] for e in composite.edits] == [2]
    assert widget.edits_box.edit_list.count() == 1
    now = _levels(edited)
    np.testing.assert_array_equal(now[0][400:520, 240:440], real_levels[0][400:520, 240:440])
    assert not labels.data[0][400:520, 240:440].any()
    assert labels.data[0][620:680, 620:700].all()

    # Undo the last one: the edited layer equals the real slide at every level, bit for bit.
    widget.edits_box.undo_button.click()
    _run(widget.job)
    assert composite.edits == [] and widget.edits_box.edit_list.count() == 0
    assert not widget.edits_box.undo_button.isEnabled()
    for k, (a, b) in enumerate(zip(_levels(edited), real_levels, strict=True)):
        np.testing.assert_array_equal(a, b, err_msg=f"level {k}")
    assert not np.asarray(labels.data[0][:, :]).any()


def test_edits_do_not_come_back_in_a_new_session_unless_reopened(
    he_widget, make_napari_viewer, qtbot
):
    viewer, widget, real = he_widget
    edited = _inpaint(viewer, widget, real, ((100, 60), (130, 110)), seed=1)
    store = _layers.slide_of(edited).path
    assert store.suffix == ".cytosyn"

    # A new session (another viewer) inpainting the same slide starts a new edit store.
    other = make_napari_viewer(show=False)
    second = CytoSynWidget(other)
    second.models.override = GRFModel()
    second.sampling.steps_spin.setValue(3)
    [real2] = other.open_sample(PLUGIN, "he_slide")
    wait_loaded(real2)
    edited2 = _inpaint(other, second, real2, ((150, 150), (170, 180)), seed=2)
    composite2 = _layers.slide_of(edited2)
    assert composite2.path != store and len(composite2.edits) == 1

    # Reopening the first store is explicit, and brings exactly its edit back.
    layer = second.open_edit_store(str(store))
    assert layer is not None and len(_layers.slide_of(layer).edits) == 1
    assert _layers.slide_of(layer).edits[0]["recipe"]["core"]["seed"] == 1
    assert second.edits_box.edit_list.count() == 1
    # its real slide, edited layer and outline are built and shown in the turns after
    outline = _layers.mask_layer_of(layer)
    visuals = other.window._qt_viewer.canvas.layer_to_visual
    qtbot.waitUntil(lambda: {layer, outline} <= set(visuals) and outline.visible, timeout=10_000)
    assert layer.visible and other.layers.index(outline) == other.layers.index(layer) + 1
    second.close_views()
