"""SamplerSettings validation/round trip, counter-based noise, time grids."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_cytosyn.models.grf import GRFModel
from napari_cytosyn.sampling import (
    Cancelled,
    DecodeConfig,
    InpaintConfig,
    LazySpec,
    RegionConfig,
    SamplerSettings,
    make_recipe,
    noise,
    noise_field,
    recipe_differences,
    settings_of,
    time_grid,
)


def test_settings_round_trip_through_json_gives_equal_settings():
    s = SamplerSettings(sampler="dpmpp_2m", steps=13, guidance=2.5, guidance_interval=(0, 0.75))
    back = SamplerSettings.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back == s
    assert back.guidance_interval == (0.0, 0.75)


@pytest.mark.parametrize(
    ("cls", "kw", "fragment"),
    [
        (SamplerSettings, {"sampler": "ddpm++"}, "unknown sampler"),
        (SamplerSettings, {"steps": 0}, "steps"),
        (SamplerSettings, {"guidance_interval": (0.8, 0.2)}, "guidance_interval"),
        (SamplerSettings, {"seed": -1}, "seed"),
        (SamplerSettings, {"region": {"overlap": 0.5}}, "region must be a RegionConfig"),
        (RegionConfig, {"overlap": 1.0}, "overlap"),
        (RegionConfig, {"weights": "box"}, "weights"),
        (RegionConfig, {"batch_size": 0}, "batch_size"),
        (DecodeConfig, {"halo_latent": 1, "blend_latent": 2}, "blend_latent"),
        (InpaintConfig, {"resample_n": 0}, "resample_n"),
    ],
)
def test_settings_reject_bad_values_naming_the_field(cls, kw, fragment):
    with pytest.raises(ValueError, match=fragment):
        cls(**kw)


def test_settings_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown SamplerSettings keys"):
        SamplerSettings.from_dict({"steps": 3, "cfg": 2})
    with pytest.raises(ValueError, match=r"unknown RegionConfig keys \['overlap_px'\]"):
        SamplerSettings.from_dict({"region": {"overlap_px": 3}})


def test_a_recipe_holds_only_what_its_mode_reads():
    model = GRFModel()
    st = SamplerSettings(steps=3, seed=9, region=RegionConfig(overlap=0.5))
    region = make_recipe(model, st, "region")
    assert sorted(region) == ["core", "decode", "mode", "model", "region", "version"]
    assert region["core"]["seed"] == 9 and region["region"]["overlap"] == 0.5
    assert sorted(make_recipe(model, st, "inpaint")) == sorted([*region, "inpaint"])
    assert settings_of(json.loads(json.dumps(region))) == st
    # lazy mode reads no region, decode or inpaint config: changing them leaves it unchanged
    spec = LazySpec(settings=st, chunk_px=64)
    lazy = make_recipe(model, st, "lazy", lazy=spec)
    assert sorted(lazy) == ["core", "lazy", "mode", "model", "version"]
    other = st.replace(region=RegionConfig(overlap=0.0), inpaint=InpaintConfig(feather_px=0))
    assert make_recipe(model, other, "lazy", lazy=LazySpec(settings=other, chunk_px=64)) == lazy
    assert LazySpec(settings=other, chunk_px=64).fingerprint() == spec.fingerprint()
    assert json.dumps(lazy).count('"seed"') == 1  # the seed lives in one place


def test_recipe_differences_name_every_differing_field():
    a = {"version": 2, "core": {"steps": 4, "seed": 1}, "lazy": {"batch": 4}}
    b = {"version": 2, "core": {"steps": 8, "seed": 1}, "lazy": {"batch": 4, "extra": 1}}
    assert recipe_differences(a, b) == [
        "core.steps: 4 (stored) != 8 (given)",
        "lazy.extra: '<absent>' (stored) != 1 (given)",
    ]
    with pytest.raises(ValueError, match="recipe version 1 is not 2"):
        settings_of({"version": 1, "core": {}})


def test_cancelled_is_an_exception():
    assert issubclass(Cancelled, Exception)


def test_noise_depends_only_on_seed_stream_cell():
    a = noise(1, "init", (3, -4), (4, 8, 8))
    b = noise(1, "init", (3, -4), (4, 8, 8))
    c = noise(1, "init", (3, -3), (4, 8, 8))
    d = noise(2, "init", (3, -4), (4, 8, 8))
    assert a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, d)


def test_noise_field_windows_agree_where_they_overlap():
    big = noise_field(5, "init", -40, -10, 100, 90, 4)
    small = noise_field(5, "init", 7, 33, 21, 40, 4)
    assert torch.equal(big[:, 47:68, 43:83], small)
    assert abs(float(big.std()) - 1.0) < 0.05


def test_time_grid_runs_from_one_to_zero_and_shift_moves_steps_to_noise():
    g = time_grid(10)
    assert g[0] == 1.0 and g[-1] == 0.0 and len(g) == 11
    assert np.all(np.diff(g) < 0)
    shifted = time_grid(10, shift=3.0)
    assert shifted[5] > g[5]
