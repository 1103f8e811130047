"""CLI ``--vae`` / ``--trust-remote-code`` reach ``load_model`` (and dask workers), and the
registry's recommended sampler and steps apply when no flag is given."""

from __future__ import annotations

import pickle
import warnings

import pytest

from napari_cytosyn.cli import (
    build_parser,
    load_cli_model,
    model_source,
    sampler_settings,
)
from napari_cytosyn.models import RemoteCodeRefused

from .conftest import build_pixcell, tiny_vae


def _args(*argv: str):
    base = ["synthesize", "--width", "64", "--height", "64", "--seed", "1"]
    return build_parser().parse_args([*base, *argv])


@pytest.mark.parametrize(
    ("model", "sampler", "steps"),
    [
        ("cytosyn-tiny", "euler", 8),
        ("pixcell-256", "dpmpp_2m", 20),
        ("cytosyn", "euler_maruyama", 250),
    ],
)
def test_recommended_sampler_and_steps_unless_given(model, sampler, steps):
    settings = sampler_settings(_args("--out", "x.ome.zarr", "--model", model), seed=1)
    assert (settings.sampler, settings.steps) == (sampler, steps)
    given = _args("--out", "x.ome.zarr", "--model", model, "--sampler", "heun", "--steps", "3")
    assert (sampler_settings(given, 1).sampler, sampler_settings(given, 1).steps) == ("heun", 3)


def test_vae_flag_loads_pixcell_with_the_given_vae_and_workers_get_it(tmp_path):
    folder = build_pixcell(tmp_path / "PixCell-256", tokens=1, sample_size=16, vae_weights=False)
    tiny_vae(16, 1.5305, 0.0609).save_pretrained(tmp_path / "sd35" / "vae")
    name = f"pixcell-256:{folder}"
    args = _args("--out", "x.ome.zarr", "--model", name, "--vae", str(tmp_path / "sd35"))
    model = load_cli_model(name, "cpu", args)
    assert model.info["vae_source"] == str(tmp_path / "sd35")
    source = pickle.loads(pickle.dumps(model_source(name, args)))
    assert source.keywords == {"device": "auto", "vae": str(tmp_path / "sd35")}
    assert source().info["vae_source"] == str(tmp_path / "sd35")
    assert model_source("cytosyn-tiny", _args("--out", "x.ome.zarr")) == "cytosyn-tiny"


def test_trust_remote_code_is_off_unless_the_flag_is_given(cytosyn_remote):
    name = f"cytosyn:{cytosyn_remote}"
    with pytest.raises(RemoteCodeRefused, match="--trust-remote-code"):
        load_cli_model(name, "cpu", _args("--out", "x.ome.zarr", "--model", name))
    args = _args("--out", "x.ome.zarr", "--model", name, "--trust-remote-code")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model = load_cli_model(name, "cpu", args)
    assert model.info["load_route"] == "remote_code"
