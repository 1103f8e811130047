"""Samplers on the exact GRF denoiser: convergence, agreement, NaN detection."""

from __future__ import annotations

import pytest
import torch

from napari_cytosyn.models.grf import GRFModel
from napari_cytosyn.models.latent import NonFiniteOutputError
from napari_cytosyn.models.protocol import VPInterpolant
from napari_cytosyn.sampling import SAMPLERS, get_sampler, model_denoiser, noise, time_grid


def _run(model, name, steps, seed=0, size=24):
    x = noise(seed, "init", (0, 0), (1, 4, size, size))
    sampler = get_sampler(name)
    return sampler(
        model_denoiser(model),
        x,
        time_grid(steps),
        model.interpolant,
        noise=lambda i: noise(seed, f"step{i}", (0, 0), (1, 4, size, size)),
    )


def test_deterministic_samplers_converge_to_a_fine_euler_reference_at_their_order():
    model = GRFModel()
    ref = _run(model, "euler", 400)

    def err(name, steps):
        return float((_run(model, name, steps) - ref).abs().mean() / ref.abs().mean())

    assert err("euler", 40) < 0.06
    assert 1.7 < err("euler", 10) / err("euler", 20) < 2.3  # first order
    assert err("heun", 20) < 0.015
    assert err("dpmpp_2m", 40) < 0.015
    assert err("heun", 10) / err("heun", 20) > 3.0  # second order
    assert err("dpmpp_2m", 10) / err("dpmpp_2m", 20) > 2.5


@pytest.mark.parametrize("name", SAMPLERS)
def test_every_sampler_produces_prior_like_samples(name):
    model = GRFModel()
    out = torch.cat([_run(model, name, 12, seed=s) for s in range(4)])
    assert torch.isfinite(out).all()
    # Exact posterior-mean ODE/SDE samples of a unit-variance prior have std close to 1.
    assert 0.75 < float(out.std()) < 1.2, float(out.std())


def test_stochastic_samplers_use_the_noise_source():
    model = GRFModel()
    a = _run(model, "ancestral", 10, seed=0)
    x = noise(0, "init", (0, 0), (1, 4, 24, 24))
    b = get_sampler("ancestral")(
        model_denoiser(model),
        x,
        time_grid(10),
        model.interpolant,
        noise=lambda i: noise(99, f"step{i}", (0, 0), (1, 4, 24, 24)),
    )
    assert not torch.equal(a, b)
    with pytest.raises(ValueError, match="noise source"):
        get_sampler("euler_maruyama")(model_denoiser(model), x, time_grid(3), model.interpolant)


def test_vp_interpolant_ddim_gives_finite_prior_like_samples():
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    model = GRFModel(interpolant=VPInterpolant(torch.cumprod(1 - betas, 0)))
    for name in ("euler", "dpmpp_2m", "heun", "ancestral"):
        out = _run(model, name, 20)
        assert torch.isfinite(out).all()
        assert 0.6 < float(out.std()) < 1.3, (name, float(out.std()))


class _NaNAfter(GRFModel):
    def __init__(self, bad_call: int):
        super().__init__()
        self.bad_call = bad_call

    def denoise(self, z_t, t, cond=None, guidance=1.0):
        out = super().denoise(z_t, t, cond, guidance)
        if self.calls == self.bad_call:
            out[0, 0, 0, 0] = float("nan")
        return out


@pytest.mark.parametrize("name", ["euler", "dpmpp_2m"])
def test_nan_from_the_model_raises_naming_step_and_dtype(name):
    with pytest.raises(NonFiniteOutputError, match=r"step 3 .*float32"):
        _run(_NaNAfter(bad_call=4), name, 6)


def test_grf_model_fulfils_the_protocol_with_json_provenance():
    import json

    from napari_cytosyn.models.protocol import LatentDiffusionModel

    model = GRFModel()
    assert isinstance(model, LatentDiffusionModel)
    assert json.loads(json.dumps(model.provenance()))["name"] == "grf"
    rgb = torch.rand(1, 3, 32, 48) * 2 - 1
    assert model.encode(rgb).shape == (1, 4, 4, 6)
    assert model.decode(model.encode(rgb)).shape == (1, 3, 32, 48)
