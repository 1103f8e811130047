"""Dock widget, inpainting: sample slide + drawn mask -> composite layer; the slide is untouched.

The sample is the real 1000 x 1000 px H&E image at 0.25 um/px (250 um a side); the test model
generates at 0.5 um/px, so every inpaint here also crosses the two pixel sizes."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading

import numpy as np
import pytest

from napari_cytosyn._napari import _layers
from napari_cytosyn._napari._masks import DrawnMask, read_mask
from napari_cytosyn._napari._qt._wait import wait_loaded
from napari_cytosyn._napari._qt._widget import CytoSynWidget
from napari_cytosyn.models.grf import GRFModel

PLUGIN = "napari-cytosyn"
SHOTS = os.environ.get("CYTOSYN_TEST_SHOTS")  # folder to keep the test's screenshots in


def grf_model() -> GRFModel:
    return GRFModel()


def _select_rectangle(viewer, widget, real, y0, x0, y1, x1):
    """A rectangle (world um) as the mask of an inpaint of ``real``."""
    shapes = viewer.add_shapes(
        [np.array([[y0, x0], [y0, x1], [y1, x1], [y1, x0]], float)], shape_type="rectangle"
    )
    widget.edit_box.image_combo.select(real)
    widget.edit_box.mask_combo.select(shapes)
    return shapes


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One cache folder per module: the sample slide is written once, edit stores differ."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def setup(make_napari_viewer, qtbot, tmp_path, cache_dir, monkeypatch):
    # The sample data and the widget share the settings file, which points at tmp_path.
    monkeypatch.setenv("NAPARI_CYTOSYN_CONFIG", str(tmp_path / "widget.json"))
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1300, 800)
    widget = CytoSynWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model_box.cache_edit.setText(str(cache_dir))
    widget._save_config()
    widget.models.override = grf_model()
    widget.sampling.steps_spin.setValue(3)
    [real] = viewer.open_sample(PLUGIN, "he_slide")
    wait_loaded(real)
    yield viewer, widget, real
    # Each test starts from the untouched slide: drop the edits this test made.
    shutil.rmtree(cache_dir / "edits", ignore_errors=True)
    widget.close_views()


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _level0(layer, y, x, h, w) -> np.ndarray:
    return np.asarray(layer.data[0][y : y + h, x : x + w])


def test_sample_opens_as_multiscale_slide(setup):
    _viewer, widget, real = setup
    assert real.multiscale and real.rgb
    np.testing.assert_allclose(real.scale, (0.25, 0.25))
    assert real.data[0].shape[:2] == (1000, 1000)
    assert "TIA Centre" in real.metadata["credit"]
    assert widget.edit_box.image_combo.layer() is real


def test_inpaint_shapes_changes_composite_inside_mask_only(setup, qtbot):
    viewer, widget, real = setup
    path = real.metadata["path"]
    sha_before = _sha(path)
    # A rectangle and an ellipse, in world um (0.25 um/px): px boxes 400-520 x 240-440 and
    # 520-600 x 600-720.
    shapes = viewer.add_shapes(
        [
            np.array([[100, 60], [100, 110], [130, 110], [130, 60]], float),
            np.array([[130, 150], [130, 180], [150, 180], [150, 150]], float),
        ],
        shape_type=["rectangle", "ellipse"],
        name="mask",
    )
    widget.edit_box.image_combo.select(real)
    widget.edit_box.mask_combo.select(shapes)
    job = widget.inpaint()
    assert job is not None
    assert job.wait(90_000) and job.state == "done", job.error

    composite = viewer.layers[f"{real.name} (edited)"]
    assert _layers.slide_of(composite) is not None
    assert viewer.layers.index(composite) == viewer.layers.index(real) + 1
    (y, x, h, w), mask = read_mask(shapes, real).rasterise(real.data[0].shape[:2])
    m = 64  # margin around the mask's bounding box
    y0, x0 = y - m, x - m
    box = (y0, x0, h + 2 * m, w + 2 * m)
    before, after = _level0(real, *box), _level0(composite, *box)
    inside = np.zeros(before.shape[:2], bool)
    inside[m : m + h, m : m + w] = mask
    np.testing.assert_array_equal(after[~inside], before[~inside])
    changed = np.any(after != before, axis=-1)
    assert changed[inside].mean() > 0.9
    # Coarser levels of the composite show the edit too.
    assert np.any(_level0(composite, 0, 0, 1, 1) == _level0(real, 0, 0, 1, 1))
    lv1_real = np.asarray(real.data[1][y // 2 : (y + h) // 2, x // 2 : (x + w) // 2])
    lv1_comp = np.asarray(composite.data[1][y // 2 : (y + h) // 2, x // 2 : (x + w) // 2])
    assert np.any(lv1_real != lv1_comp)
    # The real slide (file and layer) is untouched.
    assert _sha(path) == sha_before
    assert "(edited)" not in real.name

    # On screen: with the composite shown, the rectangle's centre differs from the real slide;
    # far from the mask the two views are identical.
    shapes.visible = False  # the shapes' fill would cover what is under it
    # the edited layer is shown by a step a few event-loop turns after the job ends
    qtbot.waitUntil(lambda: composite.visible, timeout=10_000)
    camera = getattr(viewer, "scene", viewer).camera  # napari >= 0.9: viewer.scene
    camera.center = (0, 115.0, 85.0)  # the rectangle's centre, um
    camera.zoom = 6.0  # 1.5 screen px per level-0 px: the view lies inside the slide
    qtbot.wait(300)
    shown = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    composite.visible = False
    qtbot.wait(300)
    hidden = viewer.screenshot(canvas_only=True, flash=False)[..., :3].astype(int)
    composite.visible = True
    if SHOTS:
        from skimage.io import imsave

        imsave(f"{SHOTS}/inpaint_shown.png", shown.astype(np.uint8))
        imsave(f"{SHOTS}/inpaint_hidden.png", hidden.astype(np.uint8))
    H, W = shown.shape[:2]
    centre = np.abs(shown - hidden)[H // 2 - 5 : H // 2 + 5, W // 2 - 5 : W // 2 + 5]
    assert centre.max() > 20
    corner = np.abs(shown - hidden)[:10, :10]
    assert corner.max() == 0


def test_inpaint_painted_labels_at_coarse_scale(setup, monkeypatch):
    viewer, widget, real = setup
    threads = []  # where the mask is rasterised: in the job, never on the GUI thread
    rasterise = DrawnMask.rasterise
    monkeypatch.setattr(
        DrawnMask,
        "rasterise",
        lambda self, hw: threads.append(threading.current_thread()) or rasterise(self, hw),
    )
    # Paint on a labels layer 8x coarser than level 0 (2 um per labels px).
    labels_data = np.zeros((125, 125), np.uint8)
    labels_data[40:50, 60:75] = 1
    labels = viewer.add_labels(labels_data, scale=(2.0, 2.0), name="painted")
    widget.edit_box.image_combo.select(real)
    widget.edit_box.mask_combo.select(labels)
    job = widget.inpaint()
    assert job.wait(90_000) and job.state == "done", job.error
    assert threads and threading.main_thread() not in threads
    composite = viewer.layers[f"{real.name} (edited)"]
    (y, x, h, w), mask = read_mask(labels, real).rasterise(real.data[0].shape[:2])
    # Labels px i spans level-0 px [8i - 4, 8i + 4) (pixel centres at 2 um * i = 0.25 um * 8i).
    assert (y, x, h, w) == (316, 476, 80, 120)
    assert mask.all()
    before, after = (
        _level0(real, y - 8, x - 8, h + 16, w + 16),
        _level0(composite, y - 8, x - 8, h + 16, w + 16),
    )
    inside = np.zeros(before.shape[:2], bool)
    inside[8:-8, 8:-8] = True
    np.testing.assert_array_equal(after[~inside], before[~inside])
    assert np.any(after[inside] != before[inside])


def test_inpaint_cancel_stops_and_leaves_no_edit(setup):
    viewer, widget, real = setup
    _select_rectangle(viewer, widget, real, 50, 50, 200, 200)
    widget.sampling.steps_spin.setValue(200)  # long enough to be cancelled in flight
    job = widget.inpaint()
    job.progressed.connect(lambda done, total: widget.cancel() if done >= 1 else None)
    assert job.wait(90_000)
    assert job.state == "cancelled"
    assert f"{real.name} (edited)" not in viewer.layers
    assert "cancelled" in widget.status.text()


def test_inpaint_with_line_shape_is_refused_with_a_message(setup):
    viewer, widget, real = setup
    shapes = viewer.add_shapes([np.array([[10, 10], [50, 50]], float)], shape_type="line")
    widget.edit_box.image_combo.select(real)
    widget.edit_box.mask_combo.select(shapes)
    assert widget.inpaint() is None
    assert "encloses no area" in widget.status.text()


def test_inpaint_of_a_mask_off_the_slide_fails_with_a_message_and_leaves_no_edit(setup):
    viewer, widget, real = setup
    _select_rectangle(viewer, widget, real, 500, 500, 600, 600)
    job = widget.inpaint()  # the mask is rasterised in the job: the job says what is wrong
    assert job.wait(90_000) and job.state == "failed"
    assert "outside the slide" in widget.status.text()
    assert f"{real.name} (edited)" not in viewer.layers
    assert not list((widget.config.cache_path() / "edits").glob("*"))


def test_second_inpaint_of_the_same_slide_lands_in_the_same_edited_layer(setup):
    viewer, widget, real = setup
    boxes = [((100, 125), (110, 140)), ((200, 225), (210, 240))]  # world um
    for (y0, x0), (y1, x1) in boxes:
        _select_rectangle(viewer, widget, real, y0, x0, y1, x1)  # the real slide both times
        job = widget.inpaint()
        assert job.wait(90_000) and job.state == "done", job.error
    edited = [ly for ly in viewer.layers if ly.name.endswith("(edited)")]
    assert len(edited) == 1
    composite = edited[0]
    assert len(_layers.slide_of(composite).edits) == 2
    for (y0, x0), _ in boxes:
        box = (int(y0 * 4) + 4, int(x0 * 4) + 4, 30, 50)  # inside the rectangle, level-0 px
        assert np.any(_level0(composite, *box) != _level0(real, *box))
