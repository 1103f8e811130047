"""SamplerSettings validation/round trip, counter-based noise, time grids."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_cytosyn.sampling import Cancelled, SamplerSettings, noise, noise_field, time_grid


def test_settings_round_trip_through_json_gives_equal_settings():
    s = SamplerSettings(sampler="dpmpp_2m", steps=13, guidance=2.5, guidance_interval=(0, 0.75))
    back = SamplerSettings.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back == s
    assert back.guidance_interval == (0.0, 0.75)


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"sampler": "ddpm++"}, "unknown sampler"),
        ({"steps": 0}, "steps"),
        ({"guidance_interval": (0.8, 0.2)}, "guidance_interval"),
        ({"overlap": 1.0}, "overlap"),
        ({"weights": "box"}, "weights"),
        ({"seed": -1}, "seed"),
    ],
)
def test_settings_reject_bad_values_naming_the_field(kw, fragment):
    with pytest.raises(ValueError, match=fragment):
        SamplerSettings(**kw)


def test_settings_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match="unknown SamplerSettings keys"):
        SamplerSettings.from_dict({"steps": 3, "cfg": 2})


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
