"""``diffusers:<folder>``: unconditional latent diffusion folders built from diffusers classes."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from diffusers import UNet2DModel

from napari_cytosyn.models import ModelAccessError, load_model
from napari_cytosyn.sampling import RegionConfig, SamplerSettings, generate_region

from .conftest import tiny_unet


def _eps(folder, z, timestep):
    unet = UNet2DModel.from_pretrained(folder / "unet").eval()
    with torch.no_grad():
        return unet(z, timestep).sample


def test_generic_ddpm_folder_loads_and_converts_epsilon(generic_ddpm):
    model = load_model(f"diffusers:{generic_ddpm}", device="cpu")
    assert (model.tile_px, model.latent_channels, model.latent_factor) == (128, 4, 8)
    assert model.scaling.scale == 0.5 and model.target == "epsilon"
    z, t = torch.randn(1, 4, 16, 16), torch.tensor([0.4])
    eps = _eps(generic_ddpm, z, t * 999)
    a, s = model.interpolant.alpha(t), model.interpolant.sigma(t)
    torch.testing.assert_close(model.denoise(z, t), (z - s * eps) / a, atol=1e-4, rtol=1e-4)


def test_v_prediction_and_flow_schedulers_set_the_target(generic_ddpm, tmp_path):
    folder = shutil.copytree(generic_ddpm, tmp_path / "v")
    cfg_path = folder / "scheduler" / "scheduler_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "prediction_type": "v_prediction"}))
    model = load_model(f"diffusers:{folder}", device="cpu")
    assert model.target == "v"
    z, t = torch.randn(1, 4, 16, 16), torch.tensor([0.4])
    v = _eps(folder, z, t * 999)
    a, s = model.interpolant.alpha(t), model.interpolant.sigma(t)
    torch.testing.assert_close(model.denoise(z, t), a * z - s * v, atol=1e-4, rtol=1e-4)

    index = json.loads((folder / "model_index.json").read_text())
    index["scheduler"] = ["diffusers", "FlowMatchEulerDiscreteScheduler"]
    (folder / "model_index.json").write_text(json.dumps(index))
    cfg_path.write_text(json.dumps({"_class_name": "FlowMatchEulerDiscreteScheduler"}))
    model = load_model(f"diffusers:{folder}", device="cpu")
    assert model.target == "flow" and model.interpolant.name == "flow"
    v = _eps(folder, z, t * 1000)
    torch.testing.assert_close(model.denoise(z, t), z - t * v, atol=1e-4, rtol=1e-4)


def test_non_diffusers_or_text_conditioned_components_are_refused(generic_ddpm, tmp_path):
    folder = shutil.copytree(generic_ddpm, tmp_path / "odd")
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "unet": ["my_code", "MyUNet"]}))
    with pytest.raises(ModelAccessError, match=r"my_code\.MyUNet, not a diffusers class"):
        load_model(f"diffusers:{folder}", device="cpu")
    (folder / "model_index.json").write_text(
        json.dumps({**index, "unet": ["diffusers", "UNet2DConditionModel"]})
    )
    with pytest.raises(ModelAccessError, match="conditioned on text"):
        load_model(f"diffusers:{folder}", device="cpu")
    del index["vae"]
    (folder / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ModelAccessError, match="not a latent diffusion folder"):
        load_model(f"diffusers:{folder}", device="cpu")


def test_generic_model_refuses_a_reference(generic_ddpm):
    model = load_model(f"diffusers:{generic_ddpm}", device="cpu")
    with pytest.raises(ValueError, match="unconditional"):
        model.embed(torch.zeros(1, 3, 64, 64))


def test_generic_model_generates_a_tiled_region(generic_ddpm):
    torch.set_num_threads(1)
    model = load_model(f"diffusers:{generic_ddpm}", device="cpu")
    settings = SamplerSettings(sampler="euler", steps=3, seed=1, region=RegionConfig(batch_size=4))
    rgb = generate_region(model, settings, 8, 8, 72, 180)
    assert rgb.shape == (72, 180, 3) and rgb.dtype == np.uint8 and rgb.std() > 0


def test_class_conditional_unet_is_refused(generic_ddpm, tmp_path):
    folder = shutil.copytree(generic_ddpm, tmp_path / "classes")
    shutil.rmtree(folder / "unet")
    tiny_unet(num_class_embeds=10).save_pretrained(folder / "unet")
    with pytest.raises(ModelAccessError, match="conditioned on class labels"):
        load_model(f"diffusers:{folder}", device="cpu")
