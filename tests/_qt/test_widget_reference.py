"""Dock widget, references: inpainting conditioned on a drawn region or the surrounding tissue,
the synthetic twin of a real slide, and guidance disabled for unconditional models."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_cytosyn._napari import _layers
from napari_cytosyn._napari._qt._reference_box import AROUND, REGION
from napari_cytosyn._napari._qt._wait import wait_loaded
from napari_cytosyn._napari._qt._widget import CytoSynWidget
from napari_cytosyn.models.grf import ConditionalGRFModel, GRFModel

PLUGIN = "napari-cytosyn"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def setup(make_napari_viewer, tmp_path, cache_dir, monkeypatch):
    monkeypatch.setenv("NAPARI_CYTOSYN_CONFIG", str(tmp_path / "widget.json"))
    viewer = make_napari_viewer(show=True)
    widget = CytoSynWidget(viewer)
    viewer.window.add_dock_widget(widget)
    widget.model_box.cache_edit.setText(str(cache_dir))
    widget._save_config()
    widget.models.override = ConditionalGRFModel(tile_px=64)
    widget.update_conditioning()
    widget.sampling.steps_spin.setValue(2)
    [real] = viewer.open_sample(PLUGIN, "he_slide")
    wait_loaded(real)
    yield viewer, widget, real
    shutil.rmtree(cache_dir / "edits", ignore_errors=True)
    widget.close_views()


def test_guidance_and_references_are_disabled_for_unconditional_models(setup):
    _viewer, widget, _real = setup
    box, guidance = widget.reference_box, widget.sampling.guidance_spin
    assert guidance.isEnabled() and box.twin_button.isEnabled() and box.mode_combo.isEnabled()
    widget.models.override = GRFModel()
    widget.update_conditioning()
    assert not guidance.isEnabled() and not box.twin_button.isEnabled()
    assert "grf is unconditional" in guidance.toolTip()
    assert "unconditional" in box.note.text()
    # without an override the registry says: the embedded cytosyn-tiny is unconditional today
    widget.models.override = None
    widget.update_conditioning()
    name = widget.model_box.model_combo.currentText()
    from napari_cytosyn._napari._qt._reference_box import embedded_takes_reference
    from napari_cytosyn.models import get_info

    info = get_info(name)
    conditioning = info.conditioning or ""
    expected = (
        embedded_takes_reference()  # the shipped weights decide (v2: a conditioning head)
        if info.backend == "embedded"
        else bool(conditioning and "mask" not in conditioning)
    )
    assert guidance.isEnabled() == expected
    if expected:  # the registry's conditioned scale (cytosyn-tiny: 2, see its twin figures)
        assert guidance.value() == info.defaults["guidance_conditioned"]
    widget.model_box.model_combo.setCurrentText("cytosyn")  # H0-mini: a reference model
    assert guidance.isEnabled() and widget.reference_box.twin_button.isEnabled()
    assert guidance.value() == 2.5  # CytoSyn's conditioned guidance
    widget.model_box.model_combo.setCurrentText("cytosyn-tiny-cells")  # nucleus masks
    assert not guidance.isEnabled()


def _inpaint(viewer, widget, real, mode):
    mask = viewer.add_shapes(
        [np.array([[100, 60], [100, 110], [130, 110], [130, 60]], float)],
        shape_type="rectangle",
        name=f"mask-{mode}",
    )
    widget.edit_box.image_combo.select(real)
    widget.edit_box.mask_combo.select(mask)
    widget.reference_box.mode_combo.setCurrentText(mode)
    job = widget.inpaint()
    assert job is not None
    assert job.wait(90_000) and job.state == "done", job.error
    composite = _layers.slide_of(viewer.layers[f"{real.name} (edited)"])
    return composite.edits[-1]


def test_inpaint_conditions_on_a_drawn_region_or_on_the_tissue_around(setup):
    viewer, widget, real = setup
    # the reference region: world um at 0.25 um/px -> level-0 px 200-300 x 400-520
    viewer.add_shapes(
        [np.array([[50, 100], [50, 130], [75, 130], [75, 100]], float)],
        shape_type="rectangle",
        name="reference",
    )
    widget.reference_box.region_combo.select(viewer.layers["reference"])
    record = _inpaint(viewer, widget, real, REGION)
    assert record["reference"]["mode"] == "region"
    assert record["reference"]["region"] == [200, 400, 101, 121]  # vertices included
    record = _inpaint(viewer, widget, real, AROUND)
    assert record["reference"]["mode"] == "surround"
    assert record["reference"]["ring_um"] == pytest.approx(32.0)  # one 64 px tile at 0.5 um/px


def test_synthetic_twin_of_this_slide_appears_over_the_real_slide(setup, qtbot):
    _viewer, widget, real = setup
    real.translate = (10.0, 20.0)
    widget.edit_box.image_combo.select(real)
    job = widget.synthetic_twin()
    assert job is not None
    assert job.wait(90_000) and job.state == "done", job.error
    twin = widget.edit_box.image_combo.layer()
    slide = _layers.slide_of(twin)
    assert twin is not real
    assert slide.metadata()["reference"]["file"] == Path(real.metadata["path"]).name
    # same physical extent and origin: 1000 px at 0.25 um/px = 500 px at the model's 0.5
    assert slide.level_shapes[0] == (500, 500)
    np.testing.assert_allclose(twin.scale, (0.5, 0.5))
    np.testing.assert_allclose(twin.translate, real.translate)
    assert twin.metadata["twin_of"] == real.name
    assert "twin of" in widget.status.text()
    # the view renders the chunks it shows, each window conditioned on the real slide
    qtbot.waitUntil(lambda: slide.store.completion(0).count() > 0, timeout=120_000)
    assert "failed" not in widget.status.text()
