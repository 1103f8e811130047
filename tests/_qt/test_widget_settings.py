"""Dock widget controls: persisted settings, model information, sampler settings, seeds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from napari_cytosyn._napari._config import WidgetConfig, load_config, save_config
from napari_cytosyn._napari._qt._widget import GENERIC, CytoSynWidget
from napari_cytosyn.models import get_info
from napari_cytosyn.sampling import SAMPLERS, SamplerSettings


@pytest.fixture
def config_path(tmp_path):
    return str(tmp_path / "conf" / "widget.json")


def test_model_device_and_cache_folder_persist_across_widgets(
    make_napari_viewer, config_path, tmp_path
):
    viewer = make_napari_viewer()
    first = CytoSynWidget(viewer, config_path=config_path)
    first.model_box.model_combo.setCurrentText("cytosyn")
    first.model_box.source_edit.setText("/data/CytoSyn")
    first.model_box.source_edit.editingFinished.emit()
    first.model_box.device_combo.setCurrentText("cpu")
    first.model_box.cache_edit.setText(str(tmp_path / "stores"))
    first.model_box.cache_edit.editingFinished.emit()
    first.model_box.trust_remote_code.setChecked(True)

    stored = json.loads(Path(config_path).read_text())
    assert stored == {
        "model": "cytosyn",
        "source": "/data/CytoSyn",
        "device": "cpu",
        "cache_dir": str(tmp_path / "stores"),
        "autocast": "auto",
        "export_dir": "",
    }  # trust_remote_code is never remembered
    second = CytoSynWidget(viewer, config_path=config_path)
    assert second.model_box.model_combo.currentText() == "cytosyn"
    assert second.model_box.source_edit.text() == "/data/CytoSyn"
    assert second.model_box.device_combo.currentText() == "cpu"
    assert second.model_box.cache_edit.text() == str(tmp_path / "stores")
    assert second.config.cache_path() == tmp_path / "stores"
    assert not second.model_box.trust_remote_code.isChecked()


def test_broken_settings_file_gives_defaults(tmp_path):
    path = tmp_path / "widget.json"
    path.write_text("{not json")
    assert load_config(path) == WidgetConfig()
    save_config(WidgetConfig(model="pixcell-256"), path)
    assert load_config(path).model == "pixcell-256"


def test_model_picker_shows_licence_and_gating(make_napari_viewer, config_path):
    widget = CytoSynWidget(make_napari_viewer(), config_path=config_path)
    names = [
        widget.model_box.model_combo.itemText(i)
        for i in range(widget.model_box.model_combo.count())
    ]
    assert names[0] == "cytosyn-tiny" and "cytosyn" in names and names[-1] == GENERIC
    widget.model_box.model_combo.setCurrentText("cytosyn")
    text = widget.model_box.model_info.text()
    assert "CC-BY-NC-ND" in text and "Gated" in text and "request access" in text
    assert "0.5 µm/px" in widget.synthetic_box.mpp_label.text()
    widget.model_box.model_combo.setCurrentText("cytosyn-tiny")
    assert "BSD-3-Clause" in widget.model_box.model_info.text()
    assert "Access: open" in widget.model_box.model_info.text()


def test_model_name_combines_picker_and_source(make_napari_viewer, config_path):
    widget = CytoSynWidget(make_napari_viewer(), config_path=config_path)
    widget.model_box.model_combo.setCurrentText("cytosyn")
    widget.model_box.source_edit.setText("/models/CytoSyn")
    assert widget.model_box.model_name() == "cytosyn:/models/CytoSyn"
    widget.model_box.model_combo.setCurrentText("cytosyn-tiny")
    assert widget.model_box.model_name() == "cytosyn-tiny"  # embedded: no source
    widget.model_box.model_combo.setCurrentText(GENERIC)
    assert widget.model_box.model_name() == "diffusers:/models/CytoSyn"
    widget.model_box.source_edit.setText("")
    with pytest.raises(ValueError, match="hub id or choose a folder"):
        widget.model_box.model_name()


def test_sampler_controls_make_sampler_settings(make_napari_viewer, config_path):
    widget = CytoSynWidget(make_napari_viewer(), config_path=config_path)
    assert [
        widget.sampling.sampler_combo.itemText(i)
        for i in range(widget.sampling.sampler_combo.count())
    ] == list(SAMPLERS)
    widget.sampling.sampler_combo.setCurrentText("heun")
    widget.sampling.steps_spin.setValue(12)
    widget.sampling.guidance_spin.setValue(2.5)
    widget.sampling.seed_spin.setValue(1234)
    # the default model is conditional: its settings carry the registry's guidance interval
    interval = get_info(widget.model_box.model_combo.currentText()).defaults["guidance_interval"]
    assert widget.sampler_settings() == SamplerSettings(
        sampler="heun", steps=12, guidance=2.5, seed=1234, guidance_interval=tuple(interval)
    )
    assert widget.model_box.autocast_combo.currentText() == "auto"
    widget.model_box.autocast_combo.setCurrentText("off")
    assert widget.sampler_settings().autocast == "off"
    # remembered like the device: a new widget starts with it
    again = CytoSynWidget(make_napari_viewer(), config_path=config_path)
    assert again.model_box.autocast_combo.currentText() == "off"


def test_random_seed_button_draws_new_seeds(make_napari_viewer, config_path):
    widget = CytoSynWidget(make_napari_viewer(), config_path=config_path)
    seeds = {widget.sampling.random_seed() for _ in range(5)}
    assert len(seeds) == 5
    assert widget.sampling.seed_spin.value() in seeds
    assert all(0 <= s < 2**31 for s in seeds)


def test_actions_without_inputs_explain_what_is_missing(make_napari_viewer, config_path):
    widget = CytoSynWidget(make_napari_viewer(), config_path=config_path)
    assert widget.inpaint() is None
    assert "choose a slide layer and a mask layer" in widget.status.text()
    assert widget.render_all() is None
    assert "select a synthetic slide" in widget.status.text()
    assert widget.export("/tmp/x.ome.zarr", "OME-Zarr") is None
    assert "select a synthetic slide or an edited" in widget.status.text()


def test_steps_follow_the_chosen_models_recommendation(make_napari_viewer, config_path):
    from napari_cytosyn.models import get_info

    widget = CytoSynWidget(make_napari_viewer(), config_path=config_path)
    widget.model_box.model_combo.setCurrentText("cytosyn-tiny")
    assert widget.sampling.steps_spin.value() == get_info("cytosyn-tiny").defaults["steps"] == 8
    widget.model_box.model_combo.setCurrentText("cytosyn")
    assert widget.sampling.steps_spin.value() == get_info("cytosyn").defaults["steps"] == 250


def test_vae_field_reaches_load_model_for_models_that_take_one(
    make_napari_viewer, config_path, monkeypatch, tmp_path
):
    import napari_cytosyn.models as models

    calls = []
    monkeypatch.setattr(models, "load_model", lambda name, **kw: calls.append((name, kw)) or name)
    widget = CytoSynWidget(make_napari_viewer(), config_path=config_path)
    box = widget.model_box
    box.model_combo.setCurrentText("cytosyn-tiny")
    assert not box.vae_edit.isEnabled()  # the embedded model has its own autoencoder
    box.model_combo.setCurrentText("pixcell-256")
    assert box.vae_edit.isEnabled()
    box.vae_edit.setText(str(tmp_path / "sd35-vae"))
    widget._snapshot_model_choice()
    assert widget.get_model() == "pixcell-256"
    assert calls[-1][1]["vae"] == str(tmp_path / "sd35-vae")
    box.vae_edit.clear()
    widget._snapshot_model_choice()
    widget.get_model()
    assert "vae" not in calls[-1][1]
