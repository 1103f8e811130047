"""Samplers on the exact GRF denoiser: convergence, agreement, NaN detection."""

from __future__ import annotations

import math

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


# -- parity with the reference samplers (tests/models/reference/samplers.json) ---------------


def _velocity_denoiser():
    """A fixed, non-linear velocity field ``v(x, t)`` seen through the x0 protocol
    (``x0 = x - t v`` on the linear path), and ``v`` itself for the formulas."""
    gen = torch.Generator().manual_seed(3)
    w = torch.randn(4, 4, generator=gen, dtype=torch.float64) / 2

    def velocity(x, t):
        return torch.einsum("oc,bchw->bohw", w, torch.tanh(x)) + 0.3 * t

    def denoise(x, t):
        return x - t * velocity(x, t)

    return denoise, velocity


def test_one_euler_step_is_repa_e_euler():
    from napari_cytosyn.models.protocol import FlowInterpolant

    denoise, v = _velocity_denoiser()
    x = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for t0, t1 in ((1.0, 0.75), (0.7, 0.45), (0.2, 0.0)):
        out = get_sampler("euler")(denoise, x, [t0, t1], FlowInterpolant())
        torch.testing.assert_close(out, x + (t1 - t0) * v(x, t0), rtol=1e-12, atol=1e-12)
    grid = time_grid(4, sampler="euler")
    assert grid == [1.0, 0.75, 0.5, 0.25, 0.0]  # linspace(1, 0, num_steps + 1)


def test_euler_maruyama_grid_steps_and_last_step_are_repa_e():
    from napari_cytosyn.models.protocol import FlowInterpolant

    grid = time_grid(5, sampler="euler_maruyama")
    expected = [*torch.linspace(1.0, 0.04, 5, dtype=torch.float64).tolist(), 0.0]
    assert grid == pytest.approx(expected, abs=1e-15)
    denoise, v = _velocity_denoiser()
    x = torch.randn(1, 4, 6, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    z = torch.randn(1, 4, 6, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    sampler = get_sampler("euler_maruyama")
    t0, t1 = grid[1], grid[2]  # 0.76 -> 0.52
    out = sampler(denoise, x, [t0, t1], FlowInterpolant(), noise=lambda i: z, step_offset=1)
    drift = x + (2.0 - t0) * v(x, t0)  # v - w/2 score with w(t) = 2t
    dt = t1 - t0
    expected = x + drift * dt + (2.0 * t0) ** 0.5 * abs(dt) ** 0.5 * z
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    # last step 0.04 -> 0: the drift's mean step, no noise
    last = sampler(denoise, x, [0.04, 0.0], FlowInterpolant(), noise=lambda i: z * 1e9)
    torch.testing.assert_close(
        last, x + (x + 1.96 * v(x, 0.04)) * (0.0 - 0.04), rtol=1e-12, atol=1e-12
    )


def _dpm_discrete_alpha(t_dpm: float, alphas_cumprod: torch.Tensor) -> float:
    """PixCell's NoiseScheduleVP('discrete'): log alpha piecewise linear over t = k / 1000."""
    t_array = torch.linspace(0.0, 1.0, 1001, dtype=torch.float64)[1:]
    log_alpha = 0.5 * torch.log(alphas_cumprod)
    k = int(torch.searchsorted(t_array, torch.tensor(t_dpm, dtype=torch.float64)).clamp(1, 999))
    lo, hi = t_array[k - 1], t_array[k]
    w = (t_dpm - lo) / (hi - lo)
    return float(torch.exp(log_alpha[k - 1] + w * (log_alpha[k] - log_alpha[k - 1])))


def test_dpmpp_2m_grid_schedule_and_second_order_step_are_pixcell_dpm_solver():
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    ac = torch.cumprod(1 - betas, 0)
    vp = VPInterpolant(ac)
    grid = time_grid(20, sampler="dpmpp_2m")
    # our uniform grid is DPM-Solver's time_uniform grid t_dpm: 1 -> 1/1000, model time
    # (t_dpm - 1/1000) * 1000 = our timestep t * 999
    for t in grid:
        t_dpm = (t * 999 + 1) / 1000
        assert float(vp.timestep(torch.tensor(t))) == pytest.approx((t_dpm - 1e-3) * 1000)
        alpha = float(vp.alpha(torch.tensor([t], dtype=torch.float64))[0])
        assert alpha == pytest.approx(_dpm_discrete_alpha(t_dpm, ac), rel=1e-9)
    # one multistep update from x0 predictions at t0, t1 to t2 (Lu et al. 2022, Alg. 2)
    t0, t1, t2 = grid[3], grid[4], grid[5]
    gen = torch.Generator().manual_seed(0)
    m0, m1, x = (torch.randn(1, 4, 4, 4, generator=gen, dtype=torch.float64) for _ in range(3))
    outputs = iter([m0, m1])
    state = get_sampler("dpmpp_2m")(lambda x, t: next(outputs), x, [t0, t1, t2], vp, step_offset=3)

    def lam(t):
        a = float(vp.alpha(torch.tensor([t], dtype=torch.float64))[0])
        s = float(vp.sigma(torch.tensor([t], dtype=torch.float64))[0])
        return a, s, math.log(a / s)

    _, s0, l0 = lam(t0)
    a1, s1, l1 = lam(t1)
    a2, s2, l2 = lam(t2)
    x1 = (s1 / s0) * x - a1 * math.expm1(-(l1 - l0)) * m0  # first step of a call: 1st order
    h, r = l2 - l1, (l1 - l0) / (l2 - l1)
    d = (1 + 1 / (2 * r)) * m1 - 1 / (2 * r) * m0
    torch.testing.assert_close(state, (s2 / s1) * x1 - a2 * math.expm1(-h) * d)


def test_dpmpp_2m_lower_order_final_below_ten_steps():
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    vp = VPInterpolant(torch.cumprod(1 - betas, 0))
    gen = torch.Generator().manual_seed(0)
    m = [torch.randn(1, 4, 4, 4, generator=gen, dtype=torch.float64) for _ in range(3)]
    x = torch.zeros(1, 4, 4, 4, dtype=torch.float64)

    def run(steps):
        ts = time_grid(steps, sampler="dpmpp_2m")[-3:]
        outputs = iter(m)
        return get_sampler("dpmpp_2m")(
            lambda x, t: next(outputs), x, ts, vp, step_offset=steps - 2
        ), ts

    out, ts = run(5)  # 5 < 10: the last step is first order
    a1, s1 = (float(f(torch.tensor([ts[1]], dtype=torch.float64))[0]) for f in (vp.alpha, vp.sigma))
    a2, s2 = (float(f(torch.tensor([ts[2]], dtype=torch.float64))[0]) for f in (vp.alpha, vp.sigma))
    a0, s0 = (float(f(torch.tensor([ts[0]], dtype=torch.float64))[0]) for f in (vp.alpha, vp.sigma))
    x1 = (s1 / s0) * x - a1 * math.expm1(-(math.log(a1 / s1) - math.log(a0 / s0))) * m[0]
    h = math.log(a2 / s2) - math.log(a1 / s1)
    torch.testing.assert_close(out, (s2 / s1) * x1 - a2 * math.expm1(-h) * m[1])
    out20, _ = run(20)
    assert not torch.allclose(out20, out)  # 20 steps: second order to the end


def test_sampler_names_live_in_one_table():
    from napari_cytosyn.sampling import samplers
    from napari_cytosyn.sampling.sampler_table import SAMPLER_TABLE, STOCHASTIC_SAMPLERS
    from napari_cytosyn.sampling.settings import SamplerSettings

    assert tuple(SAMPLER_TABLE) == SAMPLERS
    for name in SAMPLER_TABLE:
        assert get_sampler(name) is getattr(samplers, f"sample_{name}")
        assert SamplerSettings(sampler=name).stochastic == (name in STOCHASTIC_SAMPLERS)
    with pytest.raises(ValueError, match="choose one of euler, euler_maruyama"):
        get_sampler("lms")
