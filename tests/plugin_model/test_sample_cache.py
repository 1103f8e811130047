"""The synthetic sample's cached store: reopened when its recipe is the sample's, made again
when it is not (another version, model or steps), never mixed."""

from __future__ import annotations

import napari_cytosyn.models as models
from napari_cytosyn._napari import _sample_data
from napari_cytosyn.models.grf import GRFModel
from napari_cytosyn.sampling import SamplerSettings
from napari_cytosyn.slide.synthetic import SyntheticSlide


def test_a_cached_sample_of_another_recipe_is_made_again(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "load_model", lambda name, device="auto", **kw: GRFModel())
    monkeypatch.setattr(_sample_data, "SYNTHETIC_STEPS", 3)
    monkeypatch.setattr(_sample_data, "SYNTHETIC_PX", 256)
    store = tmp_path / "sample.cytosyn"
    old = SyntheticSlide.create(store, GRFModel(), 128, 128, SamplerSettings(steps=2, seed=9))
    old.close()
    slide = _sample_data._open_synthetic_sample(store, "cpu")
    assert slide.seed == 1 and slide.recipe["core"]["steps"] == 3
    assert slide.level_shapes[0] == (256, 256)
    slide.ensure_chunk(0, 0, 0)
    slide.close()
    again = _sample_data._open_synthetic_sample(store, "cpu")  # the same recipe: reopened
    assert again.is_done(0, 0, 0)
    again.close()
