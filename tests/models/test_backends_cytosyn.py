"""CytoSyn backend on tiny same-structure SiT models saved in the repository layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cytosyn.models import ModelAccessError, RemoteCodeRefused, load_model
from napari_cytosyn.models.protocol import LatentDiffusionModel
from napari_cytosyn.models.sit import SiTTransformer, sincos_2d
from napari_cytosyn.sampling import RegionConfig, SamplerSettings, generate_region


def test_native_folder_loads_with_cytosyn_geometry_and_repa_e_latent_scaling(cytosyn_native):
    model = load_model(f"cytosyn:{cytosyn_native}", device="cpu")
    assert isinstance(model, LatentDiffusionModel)
    assert (model.tile_px, model.latent_factor, model.latent_channels, model.mpp) == (
        224,
        8,
        4,
        0.5,
    )
    assert model.target == "flow" and model.interpolant.name == "flow"
    assert model.info["load_route"] == "native" and model.info["commit"] is None
    assert model.name == f"cytosyn:{cytosyn_native}"  # reloads the same local copy
    assert model.info["latent_scaling_from"] == "bn"
    # batch-norm stats saved in the checkpoint: mean (0.5, -0.2, 0.1, 0), var (4, 1, 0.25, 1);
    # REPA-E: latents_scale = running_var ** -0.5, latents_bias = running_mean
    scale = torch.tensor(model.scaling.scale)
    torch.testing.assert_close(scale, torch.tensor([0.5, 1.0, 2.0, 1.0]))
    torch.testing.assert_close(
        torch.tensor(model.scaling.shift), torch.tensor([0.5, -0.2, 0.1, 0.0])
    )


def test_denoise_turns_sit_velocity_into_x0(cytosyn_native):
    model = load_model(f"cytosyn:{cytosyn_native}", device="cpu")
    sit = SiTTransformer.from_pretrained(cytosyn_native / "transformer")
    z = torch.randn(2, 4, 28, 28)
    t = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        v = sit(z, t)
    # REPA linear path: x_t = (1 - t) x0 + t eps, v = eps - x0  =>  x0 = x_t - t v
    expected = z - t[:, None, None, None] * v
    torch.testing.assert_close(model.denoise(z, t), expected, atol=1e-5, rtol=1e-5)
    # learn_sigma: the network outputs 8 channels; only the first 4 are the velocity
    assert sit.final_layer.linear.out_features == 2 * 2 * 8


def test_velocity_matches_exact_flow_on_a_constructed_point(cytosyn_native):
    """At t = 1 the flow x_t is pure noise and x0 = eps - v; check the sign convention."""
    model = load_model(f"cytosyn:{cytosyn_native}", device="cpu")
    z = torch.randn(1, 4, 28, 28)
    v = model.net(z, torch.ones(1), None)
    torch.testing.assert_close(model.denoise(z, torch.ones(1)), z - v, atol=1e-5, rtol=1e-5)


def test_position_table_puts_x_in_the_first_half():
    table = sincos_2d(2, 3, 8)  # rows y, columns x
    assert table.shape == (6, 8)
    # tokens in the same column share the x half; tokens in the same row share the y half
    torch.testing.assert_close(table[0, :4], table[3, :4])
    torch.testing.assert_close(table[0, 4:], table[1, 4:])
    assert not torch.allclose(table[0, :4], table[1, :4])


def test_remote_code_needs_opt_in_and_warns_naming_the_repository(cytosyn_remote):
    with pytest.raises(RemoteCodeRefused) as err:
        load_model(f"cytosyn:{cytosyn_remote}", device="cpu")
    message = str(err.value)
    assert "pipeline.py" in message and "transformer/repo_sit.py" in message
    assert "trust_remote_code=True" in message
    with pytest.warns(UserWarning, match=f"running Python code from {cytosyn_remote}"):
        model = load_model(f"cytosyn:{cytosyn_remote}", device="cpu", trust_remote_code=True)
    assert model.info["load_route"] == "remote_code"
    assert type(model.net.transformer).__name__ == "RepoSiT"
    # the repository's class carries the same weights; our adapter must call it identically
    sit = SiTTransformer.from_pretrained(cytosyn_remote / "transformer")
    z, t = torch.randn(1, 4, 28, 28), torch.tensor([0.5])
    with torch.no_grad():
        expected = z - 0.5 * sit(z, t)
    torch.testing.assert_close(model.denoise(z, t), expected, atol=1e-5, rtol=1e-5)


def test_reference_conditioning_with_an_injected_encoder_and_guidance(cytosyn_native):
    calls = []

    def stand_in_h0_mini(rgb):  # (B, 3, H, W) -> (B, 16) features
        calls.append(tuple(rgb.shape))
        return rgb.mean(dim=(2, 3)).repeat(1, 6)[:, :16]

    model = load_model(f"cytosyn:{cytosyn_native}", device="cpu", embedder=stand_in_h0_mini)
    ref = torch.rand(1, 3, 224, 224) * 2 - 1
    cond = model.embed(ref)
    assert cond.shape == (1, 16) and calls == [(1, 3, 224, 224)]
    z, t = torch.randn(2, 4, 28, 28), torch.tensor([0.5, 0.5])
    uncond = model.denoise(z, t)
    conditioned = model.denoise(z, t, cond=cond)
    guided = model.denoise(z, t, cond=cond, guidance=2.5)
    assert not torch.allclose(uncond, conditioned)
    # CFG on the velocity is affine, so on x0 too: x0_g = x0_u + 2.5 (x0_c - x0_u)
    torch.testing.assert_close(guided, uncond + 2.5 * (conditioned - uncond), atol=1e-4, rtol=1e-4)


def test_h0_mini_missing_gives_a_clear_message(cytosyn_native):
    model = load_model(f"cytosyn:{cytosyn_native}", device="cpu")
    try:
        import timm  # noqa: F401

        expected = "bioptimus/H0-mini"
    except ImportError:
        expected = "pip install timm"
    with pytest.raises(ModelAccessError, match=expected):
        model.embed(torch.zeros(1, 3, 224, 224))


def test_generates_a_tiled_region_through_the_sampler(cytosyn_native):
    torch.set_num_threads(1)
    model = load_model(f"cytosyn:{cytosyn_native}", device="cpu")
    settings = SamplerSettings(sampler="euler", steps=3, seed=7, region=RegionConfig(batch_size=4))
    rgb = generate_region(model, settings, 16, 40, 96, 300)
    assert rgb.shape == (96, 300, 3) and rgb.dtype == np.uint8
    assert rgb.std() > 0
    again = generate_region(model, settings, 16, 40, 96, 300)
    np.testing.assert_array_equal(rgb, again)


def test_bfloat16_runs_close_to_float32(cytosyn_native):
    fp32 = load_model(f"cytosyn:{cytosyn_native}", device="cpu", dtype="float32")
    bf16 = load_model(f"cytosyn:{cytosyn_native}", device="cpu", dtype="bf16")
    assert bf16.dtype == torch.bfloat16
    assert next(bf16.net.parameters()).dtype == torch.bfloat16
    z, t = torch.randn(1, 4, 28, 28), torch.tensor([0.7])
    a, b = fp32.denoise(z, t), bf16.denoise(z, t)
    assert b.dtype == torch.float32
    assert (a - b).abs().mean() < 0.05 * a.abs().mean()


class _FakeTimm:
    """Just enough of timm's surface for the reference encoder: create_model + data config."""

    def __init__(self, fail: Exception | None = None):
        import types

        self.fail = fail
        self.created = []
        self.layers = types.SimpleNamespace(SwiGLUPacked=object)
        self.data = types.SimpleNamespace(
            resolve_data_config=lambda cfg, model: {"mean": (0.5, 0.5, 0.5), "std": (0.25,) * 3}
        )

    def create_model(self, name, pretrained, **kwargs):
        self.created.append((name, pretrained, kwargs))
        if self.fail is not None:
            raise self.fail

        class Vit(torch.nn.Module):
            def forward_features(self, x):  # (B, 3, 224, 224) -> (B, 1 + 4, 3) tokens
                cls = x.mean(dim=(2, 3))
                return torch.cat([cls[:, None], torch.zeros(x.shape[0], 4, 3)], dim=1)

        return Vit()


def test_h0_mini_encoder_normalises_resizes_and_takes_the_class_token(monkeypatch, cytosyn_native):
    import sys

    fake = _FakeTimm()
    monkeypatch.setitem(sys.modules, "timm", fake)
    model = load_model(f"cytosyn:{cytosyn_native}", device="cpu")
    rgb = torch.zeros(2, 3, 448, 448)  # mid-grey in [-1, 1] -> 0.5 in [0, 1] -> 0 normalised
    rgb[1] = 1.0  # white -> (1 - 0.5) / 0.25 = 2
    feats = model.embed(rgb)
    torch.testing.assert_close(feats, torch.tensor([[0.0] * 3, [2.0] * 3]))
    name, pretrained, kwargs = fake.created[0]
    assert (name, pretrained) == ("hf-hub:bioptimus/H0-mini", True)
    assert kwargs["act_layer"] is torch.nn.SiLU


def test_h0_mini_without_access_names_the_gated_repository(monkeypatch, cytosyn_native):
    import sys

    monkeypatch.setitem(sys.modules, "timm", _FakeTimm(fail=OSError("401 gated")))
    model = load_model(f"cytosyn:{cytosyn_native}", device="cpu")
    with pytest.raises(ModelAccessError) as err:
        model.embed(torch.zeros(1, 3, 224, 224))
    assert "401 gated" in str(err.value)
    assert "https://huggingface.co/bioptimus/H0-mini" in str(err.value)


def test_pickled_weights_are_refused_before_any_remote_code_runs(cytosyn_remote, tmp_path):
    import shutil

    from napari_cytosyn.models import PickleWeightsRefused

    folder = shutil.copytree(cytosyn_remote, tmp_path / "pickled_remote")
    weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(PickleWeightsRefused, match="transformer"):
        load_model(f"cytosyn:{folder}", device="cpu", trust_remote_code=True)
