"""What this plugin writes opens with what is synthetic in it: exports come back as image +
"synthetic" labels, a synthetic slide's store and an edit store open by drag and drop."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cytosyn._napari import _actions, _layers
from napari_cytosyn._napari._qt._wait import wait_loaded
from napari_cytosyn._napari._qt._widget import CytoSynWidget
from napari_cytosyn._napari._reader import napari_get_reader, read_slides
from napari_cytosyn.models.grf import GRFModel

PLUGIN = "napari-cytosyn"


@pytest.fixture
def setup(make_napari_viewer, tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_CYTOSYN_CONFIG", str(tmp_path / "widget.json"))
    viewer = make_napari_viewer(show=True)
    widget = CytoSynWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model_box.cache_edit.setText(str(tmp_path / "cache"))
    widget._save_config()
    widget.models.override = GRFModel()
    widget.sampling.steps_spin.setValue(3)
    yield viewer, widget
    widget.close_views()


def _inpainted(viewer, widget):
    [real] = viewer.open_sample(PLUGIN, "he_slide")
    wait_loaded(real)
    shapes = viewer.add_shapes(
        [np.array([[100, 60], [100, 110], [130, 110], [130, 60]], float)], shape_type="rectangle"
    )
    widget.edit_box.image_combo.select(real)
    widget.edit_box.mask_combo.select(shapes)
    job = widget.inpaint()
    assert job.wait(90_000) and job.state == "done", job.error
    edited = viewer.layers[f"{real.name} (edited)"]
    widget.edit_box.image_combo.select(edited)
    return real, edited


@pytest.mark.parametrize("fmt", ["OME-Zarr", "OME-TIFF"])
def test_reopened_export_gives_image_and_synthetic_labels(setup, tmp_path, fmt, qtbot):
    viewer, widget = setup
    _real, edited = _inpainted(viewer, widget)
    composite = _layers.slide_of(edited)
    out = tmp_path / f"case{_actions.EXPORT_FORMATS[fmt]}"
    job = widget.export(str(out), fmt)
    assert job.wait(90_000) and job.state == "done", job.error
    layers = viewer.open(str(out), plugin=PLUGIN)
    kinds = [type(ly).__name__ for ly in layers]
    assert kinds == ["Image", "Labels"], kinds
    image, labels = layers
    # napari builds their Qt parts and shows them in the turns after the insert
    assert not image.visible and not labels.visible
    qtbot.waitUntil(lambda: image.visible and labels.visible, timeout=10_000)
    assert set(viewer.window._qt_viewer.canvas.layer_to_visual) >= {image, labels}
    assert "cytosyn-insert" not in image.metadata
    assert labels.name == f"{image.name} synthetic"
    np.testing.assert_allclose(labels.scale, image.scale)
    h, w = composite.level_shapes[0]
    np.testing.assert_array_equal(
        np.asarray(labels.data[0][:h, :w]) > 0, composite.mask_region(0, 0, 0, h, w)
    )


def test_synthetic_store_opens_by_drag_and_drop(setup, qtbot):
    viewer, widget = setup
    widget.synthetic_box.width_spin.setValue(512)
    widget.synthetic_box.height_spin.setValue(512)
    job = widget.new_synthetic_slide()
    assert job.wait(30_000) and job.state == "done", job.error
    slide = _layers.slide_of(widget.edit_box.image_combo.layer())
    job = widget.render_all()
    assert job.wait(60_000) and job.state == "done", job.error
    widget.close_views()
    viewer.layers.clear()

    assert slide.path.suffix == ".cytosyn"
    assert napari_get_reader(str(slide.path)) is read_slides
    [image] = viewer.open(str(slide.path), plugin=PLUGIN)  # all synthetic: no labels layer
    assert type(image).__name__ == "Image"
    reopened = _layers.slide_of(image)
    assert _layers.is_synthetic(reopened) and reopened.path == slide.path
    np.testing.assert_array_equal(
        np.asarray(image.data[0][:, :]), slide.read_region(0, 0, 0, 512, 512, generate=False)
    )
    _layers.view_of(image).close()


def test_edit_store_opens_by_drag_and_drop_with_its_real_slide(setup, qtbot):
    viewer, widget = setup
    _real, edited = _inpainted(viewer, widget)
    composite = _layers.slide_of(edited)
    expected = np.asarray(edited.data[0][:, :])
    viewer.layers.clear()
    layers = viewer.open(str(composite.path), plugin=PLUGIN)
    assert [type(ly).__name__ for ly in layers] == ["Image", "Image", "Labels"]
    real2, edited2, labels = layers
    visuals = viewer.window._qt_viewer.canvas.layer_to_visual
    qtbot.waitUntil(lambda: set(visuals) >= {real2, edited2, labels}, timeout=10_000)
    qtbot.waitUntil(lambda: real2.visible and edited2.visible and labels.visible, timeout=10_000)
    assert edited2.name == f"{real2.name} (edited)"
    assert _layers.is_composite(_layers.slide_of(edited2))
    np.testing.assert_array_equal(np.asarray(edited2.data[0][:, :]), expected)
    assert np.asarray(labels.data[0][400:520, 240:440]).all()
