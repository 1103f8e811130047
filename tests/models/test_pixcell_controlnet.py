"""The mask-guided PixCell ControlNet, native, in the published repository layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from napari_cytosyn.models import load_model
from napari_cytosyn.models.pixcell_layout import build_pixcell_controlnet

from .conftest import build_pixcell, pixcell_config


@pytest.fixture(scope="module")
def controlnet_repo(tmp_path_factory) -> Path:
    """PixCell-256-Cell-ControlNet layout: transformer/, controlnet/, vae/ (with weights)."""
    folder = build_pixcell(tmp_path_factory.mktemp("CN"), tokens=1, sample_size=16)
    config = {**pixcell_config(1, 16, 24), "n_controlnet_blocks": 1, "num_layers": 2}
    controlnet = build_pixcell_controlnet(config)
    with torch.no_grad():  # the published init zeroes cond_pos_embed and controlnet_blocks
        for p in controlnet.parameters():
            p.normal_(0.0, 0.05)
    out = folder / "controlnet"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"_class_name": "PixCellControlNet", **config}))
    state = {k: v.contiguous() for k, v in controlnet.state_dict().items()}
    save_file(state, out / "diffusion_pytorch_model.safetensors")
    index = json.loads((folder / "model_index.json").read_text())
    index |= {
        "_class_name": "PixCellControlNetPipeline",
        "controlnet": ["pixcell_controlnet", "PixCellControlNet"],
        "transformer": ["pixcell_controlnet_transformer", "PixCellTransformer2DModelControlNet"],
    }
    (folder / "model_index.json").write_text(json.dumps(index))
    (out / "pixcell_controlnet.py").write_text("from diffusers.models.controlnet import x\n")
    return folder


def _mask() -> torch.Tensor:
    mask = torch.zeros(1, 1, 128, 128)
    mask[..., 20:50, 30:70] = 1.0
    mask[..., 80:110, 60:90] = 1.0
    return mask


def test_controlnet_loads_natively_and_conditions_on_a_mask(controlnet_repo):
    model = load_model(f"pixcell-256-cell-controlnet:{controlnet_repo}", device="cpu")
    assert model.info["controlnet"] is True
    z, t = torch.randn(1, 16, 16, 16), torch.tensor([0.5])
    plain = model.denoise(z, t)
    guided = model.denoise(z, t, cond={"mask": _mask()})
    other = model.denoise(z, t, cond={"mask": 1.0 - _mask()})
    assert not torch.allclose(plain, guided) and not torch.allclose(guided, other)
    # the residual hooks add nothing once the call is over
    torch.testing.assert_close(model.denoise(z, t), plain)
    # conditioning_scale 0: the ControlNet adds nothing
    model.net.conditioning_scale = 0.0
    torch.testing.assert_close(model.denoise(z, t, cond={"mask": _mask()}), plain)


def test_controlnet_residual_is_added_after_the_first_transformer_block(controlnet_repo):
    model = load_model(f"pixcell-256-cell-controlnet:{controlnet_repo}", device="cpu")
    net = model.net
    seen = {}

    def record(_module, args, _kwargs):
        seen["input"] = args[0].clone()

    net.transformer.transformer_blocks[1].register_forward_pre_hook(record, with_kwargs=True)
    z, t = torch.randn(1, 16, 16, 16), torch.tensor([0.3])
    mask = _mask()
    model.denoise(z, t, cond={"mask": mask})
    with_control = seen.pop("input")
    model.denoise(z, t)
    without = seen.pop("input")
    # the residual of ControlNet block 0, from the mask's scaled VAE latent
    with torch.no_grad():
        rgb = mask.expand(-1, 3, -1, -1) * 2 - 1
        latent = model.scaling.to_model(model.vae.encode(rgb).latent_dist.mean)
        cn = net.controlnet
        hidden = cn.pos_embed(z) + cn.cond_pos_embed(latent)
        temb, _ = cn.adaln_single(
            t * 999, {"resolution": None, "aspect_ratio": None}, batch_size=1, hidden_dtype=z.dtype
        )
        tokens = cn.caption_projection(net.uncond_tokens[None]).view(1, -1, hidden.shape[-1])
        hidden = cn.transformer_blocks[0](hidden, encoder_hidden_states=tokens, timestep=temb)
        residual = cn.controlnet_blocks[0](hidden)
    torch.testing.assert_close(with_control - without, residual, atol=1e-5, rtol=1e-4)


def test_a_mask_for_a_model_without_controlnet_or_of_the_wrong_size_is_refused(
    controlnet_repo, pixcell_256
):
    plain = load_model(f"pixcell-256:{pixcell_256}", device="cpu")
    with pytest.raises(ValueError, match="pixcell-256-cell-controlnet"):
        plain.denoise(torch.randn(1, 16, 32, 32), torch.tensor([0.5]), cond={"mask": _mask()})
    model = load_model(f"pixcell-256-cell-controlnet:{controlnet_repo}", device="cpu")
    with pytest.raises(ValueError, match=r"cond\['mask'\] must be \(B, 1, 128, 128\)"):
        model.denoise(
            torch.randn(1, 16, 16, 16), torch.tensor([0.5]), cond={"mask": _mask()[..., :64]}
        )


def test_the_test_kit_synthesizes_a_layout_through_the_controlnet(controlnet_repo):
    """Per-window masks (the test kit's LayoutCondition) reach the ControlNet through tiling."""
    import numpy as np

    from napari_cytosyn.sampling import RegionConfig, SamplerSettings
    from napari_cytosyn.testkit.layouts import procedural_layout
    from napari_cytosyn.testkit.synthesis import synthesize

    torch.set_num_threads(1)
    model = load_model(f"pixcell-256-cell-controlnet:{controlnet_repo}", device="cpu")
    layout = procedural_layout((64, 128), seed=2)
    settings = SamplerSettings(
        sampler="dpmpp_2m", steps=2, seed=4, region=RegionConfig(batch_size=4)
    )
    rgb = synthesize(layout, model, settings=settings, glass=False)
    assert rgb.shape == (64, 128, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, synthesize(layout, model, settings=settings, glass=False))
    model.net.conditioning_scale = 0.0  # the same run without the ControlNet's residuals
    assert not np.array_equal(rgb, synthesize(layout, model, settings=settings, glass=False))


def test_controlnet_calls_side_by_side_in_threads_equal_calls_in_turn(controlnet_repo, monkeypatch):
    """The residual hooks belong to the calling thread: two masks denoised at once in two model
    threads give what each gives alone (hooks per call added one call's residuals to the other)."""
    from napari_cytosyn.sampling.threads import parallel_calls

    monkeypatch.setenv("NAPARI_CYTOSYN_MODEL_WORKERS", "2")
    model = load_model(f"pixcell-256-cell-controlnet:{controlnet_repo}", device="cpu")
    z, t = torch.randn(1, 16, 16, 16), torch.tensor([0.5])
    masks = [_mask(), 1.0 - _mask()] * 4

    def call(mask: torch.Tensor) -> torch.Tensor:
        return model.denoise(z, t, cond={"mask": mask})

    with torch.no_grad():
        alone = [call(m) for m in masks]
    for together, one in zip(parallel_calls(call, masks), alone, strict=True):
        torch.testing.assert_close(together, one, rtol=0, atol=0)
