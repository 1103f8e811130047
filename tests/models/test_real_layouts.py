"""Reduced-width models with the published key names, saved in the published folder layouts and
loaded strictly through ``load_model``; the refusals name the key, the places looked, the VAE."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from napari_cytosyn.models import ModelAccessError, load_model
from napari_cytosyn.models.cytosyn import LatentStatsNotFound
from napari_cytosyn.models.sit import CheckpointMismatch, SiTTransformer

from .conftest import build_pixcell, tiny_sit, tiny_vae

WEIGHTS = "diffusion_pytorch_model.safetensors"


def _save_state(folder: Path, state: dict[str, torch.Tensor], name: str = WEIGHTS) -> None:
    for old in folder.glob("*.safetensors"):
        old.unlink()
    save_file({k: v.contiguous() for k, v in state.items()}, folder / name)


@pytest.fixture
def cytosyn_copy(cytosyn_native, tmp_path) -> Path:
    return Path(shutil.copytree(cytosyn_native, tmp_path / "CytoSyn"))


def test_repa_e_ema_container_with_projectors_loads_strictly(cytosyn_copy):
    """A REPA-E training checkpoint (ema/model/vae entries, projector MLP) saved as safetensors."""
    sit = SiTTransformer.from_pretrained(cytosyn_copy / "transformer")
    state = sit.state_dict()
    container = {f"ema.{k}": v for k, v in state.items()}
    container |= {f"model.{k}": torch.zeros_like(v) for k, v in state.items()}  # not the EMA
    container["ema.projectors.0.0.weight"] = torch.randn(64, 32)
    container["ema.projectors.0.4.bias"] = torch.randn(16)
    _save_state(cytosyn_copy / "transformer", container, "0400000.safetensors")
    model = load_model(f"cytosyn:{cytosyn_copy}", device="cpu")
    z, t = torch.randn(1, 4, 28, 28), torch.tensor([0.4])
    with torch.no_grad():
        expected = z - 0.4 * sit(z, t)
    torch.testing.assert_close(model.denoise(z, t), expected, atol=1e-5, rtol=1e-5)


def test_a_missing_key_is_named(cytosyn_copy):
    folder = cytosyn_copy / "transformer"
    state = load_file(folder / WEIGHTS)
    del state["blocks.1.attn.qkv.weight"]
    _save_state(folder, state)
    with pytest.raises(CheckpointMismatch, match=r"missing key\(s\) blocks\.1\.attn\.qkv\.weight"):
        load_model(f"cytosyn:{cytosyn_copy}", device="cpu")


def test_a_wrong_shape_is_named_with_both_shapes(cytosyn_copy):
    folder = cytosyn_copy / "transformer"
    state = load_file(folder / WEIGHTS)
    state["final_layer.linear.weight"] = torch.zeros(16, 32)
    _save_state(folder, state)
    with pytest.raises(CheckpointMismatch) as err:
        load_model(f"cytosyn:{cytosyn_copy}", device="cpu")
    assert "final_layer.linear.weight: checkpoint (16, 32) vs model (32, 32)" in str(err.value)


def test_an_unexpected_key_is_named(cytosyn_copy):
    folder = cytosyn_copy / "transformer"
    state = load_file(folder / WEIGHTS)
    state["t_embedder.0.weight"] = torch.zeros(2)  # our old layout's name
    _save_state(folder, state)
    with pytest.raises(CheckpointMismatch, match=r"unexpected key\(s\) t_embedder\.0\.weight"):
        load_model(f"cytosyn:{cytosyn_copy}", device="cpu")


def _drop_bn(folder: Path) -> None:
    state = load_file(folder / "transformer" / WEIGHTS)
    _save_state(folder / "transformer", {k: v for k, v in state.items() if not k.startswith("bn.")})


def test_without_latent_statistics_the_error_lists_every_place_looked(cytosyn_copy):
    _drop_bn(cytosyn_copy)  # a REPA (sihyun-yu) checkpoint: no bn buffers
    (cytosyn_copy / "sdvae-f8d4-latents-stats.pt").write_bytes(b"pickle")
    with pytest.raises(LatentStatsNotFound) as err:
        load_model(f"cytosyn:{cytosyn_copy}", device="cpu")
    message = str(err.value)
    for place in (
        "bn.running_mean/bn.running_var",
        "latents_stats.safetensors",
        "latents_mean/latents_std in vae/config.json",
        "sdvae-f8d4-latents-stats.pt: pickles are refused",
    ):
        assert place in message


def test_latent_statistics_from_a_stats_file_then_the_vae_config(cytosyn_copy):
    _drop_bn(cytosyn_copy)
    config_path = cytosyn_copy / "vae" / "config.json"
    config = json.loads(config_path.read_text())
    config |= {"latents_mean": [0.0, 1.0, 0.0, 0.0], "latents_std": [2.0, 2.0, 2.0, 2.0]}
    config_path.write_text(json.dumps(config))
    model = load_model(f"cytosyn:{cytosyn_copy}", device="cpu")
    assert model.info["latent_scaling_from"] == "vae_config"
    assert model.scaling.scale == (0.5,) * 4 and model.scaling.shift == (0.0, 1.0, 0.0, 0.0)
    # a stats file comes before the VAE config (REPA-E's latents_scale / latents_bias)
    stats = {
        "latents_scale": torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 4, 1, 1),
        "latents_bias": torch.tensor([0.1, 0.2, 0.3, 0.4]).reshape(1, 4, 1, 1),
    }
    save_file(stats, cytosyn_copy / "vae" / "e2e-sdvae-latents-stats.safetensors")
    model = load_model(f"cytosyn:{cytosyn_copy}", device="cpu")
    assert model.info["latent_scaling_from"] == "file:vae/e2e-sdvae-latents-stats.safetensors"
    torch.testing.assert_close(torch.tensor(model.scaling.scale), torch.tensor([1.0, 2, 3, 4]))
    z = torch.ones(1, 4, 2, 2)
    expected = (z - stats["latents_bias"]) * stats["latents_scale"]
    torch.testing.assert_close(model.scaling.to_model(z), expected)


def test_repa_e_named_vae_is_renamed_into_autoencoderkl_and_decodes_the_same(cytosyn_copy):
    """REPA-E's VAE keys (LDM names, 1x1-conv attention) through the reference rename map."""
    ref = json.loads((Path(__file__).parent / "reference" / "repae_vae.json").read_text())
    to_diffusers = ref["diffusers_compatibility"]["mapping"]
    to_repae = {v: k for k, v in to_diffusers.items()}
    vae = tiny_vae(4, 0.18215, None)
    vae_dir = cytosyn_copy / "vae"
    state = {}
    for key, value in vae.state_dict().items():
        if key.endswith(("to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight")):
            value = value[:, :, None, None]  # LDM keeps them as 1x1 convolutions
        state[to_repae[key]] = value
    _save_state(vae_dir, state, "e2e-sdvae.safetensors")
    model = load_model(f"cytosyn:{cytosyn_copy}", device="cpu")
    assert model.info["vae_naming"] == "repa-e"
    z = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        expected = vae.decode(model.scaling.to_vae(z)).sample.clamp(-1, 1)
    torch.testing.assert_close(model.decode(z), expected, atol=1e-5, rtol=1e-5)


def test_an_injected_vae_folder_replaces_the_repository_one(cytosyn_copy, tmp_path):
    other = tiny_vae(4, 0.18215, None)
    other.save_pretrained(tmp_path / "my_vae" / "vae")
    model = load_model(f"cytosyn:{cytosyn_copy}", device="cpu", vae=str(tmp_path / "my_vae"))
    assert model.info["vae_source"] == str(tmp_path / "my_vae")
    z = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        expected = other.decode(model.scaling.to_vae(z)).sample.clamp(-1, 1)
    torch.testing.assert_close(model.decode(z), expected, atol=1e-5, rtol=1e-5)


REPAE_STYLE_SIT = '''import torch
from napari_cytosyn.models.sit import SiTTransformer


class RepaeSiT(SiTTransformer):
    """REPA-E's calling convention: forward() trains (needs zs and losses), inference() samples."""

    def forward(self, x, y, zs, loss_kwargs, time_input=None, noises=None):
        raise RuntimeError("the training forward must not be called for sampling")

    def inference(self, x, t, y):
        assert y.dtype == torch.long, "REPA-E passes integer labels (num_classes = null)"
        return SiTTransformer.forward(self, x, t, y)
'''

REPAE_STYLE_VAE = '''from types import SimpleNamespace

from diffusers import AutoencoderKL


class RepaeVAE(AutoencoderKL):
    """REPA-E's VAE surface: encode() -> posterior with .mean, decode() -> object with .sample."""

    def encode(self, x, return_dict=True):
        posterior = super().encode(x).latent_dist
        return SimpleNamespace(mean=posterior.mean, sample=posterior.sample)

    def decode(self, z, return_dict=True, generator=None):
        return SimpleNamespace(sample=super().decode(z).sample)
'''

STATS_PIPELINE = """import torch
from diffusers import DiffusionPipeline


class StatsPipeline(DiffusionPipeline):
    def __init__(self, transformer, vae, scheduler):
        super().__init__()
        self.register_modules(transformer=transformer, vae=vae, scheduler=scheduler)
        self.latents_scale = torch.tensor([2.0, 1.0, 1.0, 0.5]).reshape(1, 4, 1, 1)
        self.latents_bias = torch.tensor([0.0, 0.1, 0.0, 0.0]).reshape(1, 4, 1, 1)
"""


def test_remote_repa_e_signature_null_label_foreign_vae_and_pipeline_statistics(tmp_path):
    from diffusers import FlowMatchEulerDiscreteScheduler

    folder = tmp_path / "repae_remote"
    sit = tiny_sit(num_classes=4, class_dropout_prob=0.1, cond_dim=None, learn_sigma=False)
    with torch.no_grad():  # statistics live in the pipeline, not in the batch norm
        sit.bn.reset_running_stats()
    sit.save_pretrained(folder / "transformer")
    tiny_vae(4, 0.18215, None).save_pretrained(folder / "vae")
    FlowMatchEulerDiscreteScheduler().save_pretrained(folder / "scheduler")
    (folder / "transformer" / "repae_sit.py").write_text(REPAE_STYLE_SIT)
    (folder / "vae" / "repae_vae.py").write_text(REPAE_STYLE_VAE)
    (folder / "stats_pipeline.py").write_text(STATS_PIPELINE)
    (folder / "model_index.json").write_text(
        json.dumps(
            {
                "_class_name": ["stats_pipeline", "StatsPipeline"],
                "transformer": ["repae_sit", "RepaeSiT"],
                "vae": ["repae_vae", "RepaeVAE"],
                "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
            }
        )
    )
    with pytest.warns(UserWarning, match="vae/repae_vae.py"):
        model = load_model(f"cytosyn:{folder}", device="cpu", trust_remote_code=True)
    assert model.info["latent_scaling_from"] == "pipeline.latents_scale"
    assert model.scaling.scale == (2.0, 1.0, 1.0, 0.5)
    z, t = torch.randn(2, 4, 28, 28), torch.tensor([0.5, 0.9])
    with torch.no_grad():  # the null label is y = num_classes = 4
        v = SiTTransformer.forward(sit, z, t, torch.tensor([4, 4]))
    torch.testing.assert_close(
        model.denoise(z, t), z - t[:, None, None, None] * v, atol=1e-5, rtol=1e-5
    )
    rgb = torch.rand(1, 3, 32, 32) * 2 - 1
    assert model.encode(rgb).shape == (1, 4, 4, 4)
    assert model.decode(model.encode(rgb)).shape == (1, 3, 32, 32)


# -- PixCell -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pixcell_published(tmp_path_factory) -> Path:
    """PixCell-256 as published: vae/ holds config.json only."""
    return build_pixcell(
        tmp_path_factory.mktemp("PixCell-256"), tokens=1, sample_size=32, vae_weights=False
    )


def test_pixcell_without_a_reachable_vae_names_the_sd35_repository_and_how_to_pass_one(
    pixcell_published,
):
    with pytest.raises(ModelAccessError) as err:
        load_model(f"pixcell-256:{pixcell_published}", device="cpu")
    message = str(err.value)
    assert "stabilityai/stable-diffusion-3.5-large" in message and "gated" in message
    assert "vae=" in message and "--vae" in message


def test_pixcell_loads_with_an_injected_vae_and_applies_its_shift_and_scale(
    pixcell_published, tmp_path
):
    sd35 = tiny_vae(16, 1.5305, 0.0609)
    sd35.save_pretrained(tmp_path / "sd35" / "vae")  # a local copy of the SD3.5 repo layout
    model = load_model(f"pixcell-256:{pixcell_published}", device="cpu", vae=str(tmp_path / "sd35"))
    assert model.info["vae_source"] == str(tmp_path / "sd35")
    rgb = torch.rand(1, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        z_vae = sd35.encode(rgb).latent_dist.mean
    # z_model = (z - 0.0609) * 1.5305, decode: z = z_model / 1.5305 + 0.0609
    torch.testing.assert_close(model.encode(rgb), (z_vae - 0.0609) * 1.5305, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        expected = sd35.decode(z_vae).sample.clamp(-1, 1)
    torch.testing.assert_close(model.decode(model.encode(rgb)), expected, atol=1e-4, rtol=1e-4)


def test_pixcell_takes_the_first_16_of_32_output_channels_as_epsilon(pixcell_published, tmp_path):
    model = load_model(
        f"pixcell-256:{pixcell_published}", device="cpu", vae=str(_vae_copy(tmp_path))
    )
    transformer = model.net.transformer
    z, t = torch.randn(1, 16, 32, 32), torch.tensor([0.5])
    tokens = transformer.caption_projection.uncond_embedding[None]
    with torch.no_grad():
        out = transformer(
            z,
            encoder_hidden_states=tokens,
            timestep=t * 999,
            added_cond_kwargs={"resolution": None, "aspect_ratio": None},
            return_dict=False,
        )[0]
    assert out.shape == (1, 32, 32, 32)
    a, s = model.interpolant.alpha(t), model.interpolant.sigma(t)
    x0 = model.denoise(z, t)
    torch.testing.assert_close(x0, (z - s * out[:, :16]) / a, atol=1e-4, rtol=1e-4)
    # the learned-variance half does not enter: change only the weights that produce it
    with torch.no_grad():
        proj = transformer.proj_out.weight.view(2, 2, 32, -1)  # (p, q, C, hidden)
        proj[:, :, 16:] += 1.0
    torch.testing.assert_close(model.denoise(z, t), x0)


def _vae_copy(tmp_path: Path) -> Path:
    tiny_vae(16, 1.5305, 0.0609).save_pretrained(tmp_path / "vae16")
    return tmp_path / "vae16"


def test_pixcell_checkpoint_with_a_foreign_key_is_refused_naming_it(tmp_path):
    folder = build_pixcell(tmp_path / "P", tokens=1, sample_size=16)
    weights = folder / "transformer" / WEIGHTS
    state = load_file(weights)
    state["caption_projection.y_embedding"] = torch.zeros(1, 24)
    save_file(state, weights)
    with pytest.raises(
        CheckpointMismatch, match=r"unexpected key\(s\) caption_projection\.y_embedding"
    ):
        load_model(f"pixcell-256:{folder}", device="cpu")


def test_pixcell_1024_reads_interpolation_scale_and_token_positions_from_the_checkpoint(
    pixcell_1024,
):
    config = json.loads((pixcell_1024 / "transformer" / "config.json").read_text())
    model = load_model(f"pixcell-1024:{pixcell_1024}", device="cpu")
    transformer = model.net.transformer
    assert transformer.pos_embed.interpolation_scale == config["interpolation_scale"] == 2
    weights = load_file(pixcell_1024 / "transformer" / WEIGHTS)
    torch.testing.assert_close(model.net.token_pos, weights["y_pos_embed.y_pos_embed"])
    torch.testing.assert_close(
        model.net.uncond_tokens, weights["caption_projection.uncond_embedding"]
    )


def test_cytosyn_fixture_uses_the_published_key_names(cytosyn_native):
    keys = set(load_file(cytosyn_native / "transformer" / WEIGHTS))
    assert {
        "x_embedder.proj.weight",
        "t_embedder.mlp.0.weight",
        "final_layer.linear.weight",
    } <= keys
    assert {"bn.running_mean", "bn.running_var", "pos_embed"} <= keys


def test_a_repa_e_pt_checkpoint_converts_into_a_native_folder_that_loads_strictly(tmp_path):
    """REPA-E's pickle container, read with torch's weights-only unpickler, then loaded natively."""
    from napari_cytosyn.models.repae_convert import convert_repae_checkpoint

    ref = json.loads((Path(__file__).parent / "reference" / "repae_vae.json").read_text())
    to_repae = {v: k for k, v in ref["diffusers_compatibility"]["mapping"].items()}
    sit = tiny_sit(num_classes=10, class_dropout_prob=0.1, cond_dim=None, learn_sigma=False)
    vae = tiny_vae(4, 0.18215, None)
    vae_state = {}
    for key, value in vae.state_dict().items():
        if key.endswith(("to_q.weight", "to_k.weight", "to_v.weight", "to_out.0.weight")):
            value = value[:, :, None, None]
        vae_state[to_repae[key]] = value
    ema = dict(sit.state_dict()) | {"projectors.0.0.weight": torch.randn(64, 32)}
    ckpt = {"model": ema, "ema": ema, "vae": vae_state, "args": {"cfg_prob": 0.1}}
    torch.save(ckpt, tmp_path / "0400000.pt")
    with pytest.raises(ValueError, match="attention heads"):  # not in the shapes nor the args
        convert_repae_checkpoint(tmp_path / "0400000.pt", tmp_path / "unknown")
    out = convert_repae_checkpoint(
        tmp_path / "0400000.pt", tmp_path / "native", num_heads=2, norm_num_groups=8
    )
    model = load_model(f"cytosyn:{out}", device="cpu")
    assert model.info["load_route"] == "native" and model.info["latent_scaling_from"] == "bn"
    z, t = torch.randn(1, 4, 28, 28), torch.tensor([0.6])
    with torch.no_grad():
        expected = z - 0.6 * sit(z, t)
    torch.testing.assert_close(model.denoise(z, t), expected, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        decoded = vae.decode(model.scaling.to_vae(z)).sample.clamp(-1, 1)
    torch.testing.assert_close(model.decode(z), decoded, atol=1e-5, rtol=1e-5)
