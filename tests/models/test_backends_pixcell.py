"""PixCell backend on tiny PixArt transformers saved in the PixCell repository layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import PixArtTransformer2DModel

from napari_cytosyn.models import load_model
from napari_cytosyn.models.latent import LatentScaling
from napari_cytosyn.sampling import RegionConfig, SamplerSettings, generate_region


def _reference_eps(folder, z, timestep, tokens):
    """What the PixCell forward computes: PixArt on (UNI tokens + positions) -> first C channels."""
    net = PixArtTransformer2DModel.from_pretrained(folder / "transformer").eval()
    with torch.no_grad():
        out = net(
            z,
            encoder_hidden_states=tokens,
            timestep=timestep,
            added_cond_kwargs={"resolution": None, "aspect_ratio": None},
            return_dict=False,
        )[0]
    return out[:, : z.shape[1]]


def test_pixcell_256_loads_natively_with_sd35_vae_scaling(pixcell_256):
    model = load_model(f"pixcell-256:{pixcell_256}", device="cpu")
    assert (model.tile_px, model.latent_channels, model.latent_factor) == (256, 16, 8)
    assert model.target == "epsilon" and model.interpolant.name == "vp"
    assert model.scaling == LatentScaling(scale=1.5305, shift=0.0609)
    assert model.info["uni_tokens"] == 1


def test_unconditional_denoise_uses_the_learned_uncond_token_and_epsilon_to_x0(pixcell_256):
    from safetensors.torch import load_file

    model = load_model(f"pixcell-256:{pixcell_256}", device="cpu")
    weights = load_file(pixcell_256 / "transformer" / "diffusion_pytorch_model.safetensors")
    uncond = weights["caption_projection.uncond_embedding"][None]  # (1, 1, D)
    z = torch.randn(1, 16, 32, 32)
    t = torch.tensor([0.6])
    eps = _reference_eps(pixcell_256, z, t * 999, uncond)
    a, s = model.interpolant.alpha(t), model.interpolant.sigma(t)
    torch.testing.assert_close(model.denoise(z, t), (z - s * eps) / a, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(a**2 + s**2, torch.ones(1))


def test_pixcell_1024_adds_token_positions_to_a_4x4_uni_grid(pixcell_1024):
    from safetensors.torch import load_file

    seen = []

    def stand_in_uni(rgb):  # (B, 3, h, w) -> (B, 24)
        seen.append(tuple(rgb.shape))
        return torch.arange(24.0)[None].repeat(rgb.shape[0], 1) * rgb.mean(dim=(1, 2, 3))[:, None]

    model = load_model(f"pixcell-1024:{pixcell_1024}", device="cpu", embedder=stand_in_uni)
    ref = torch.linspace(-1, 1, 128)[None, None, :, None].expand(1, 3, 128, 128)
    tokens = model.embed(ref)
    assert tokens.shape == (1, 16, 24) and seen == [(16, 3, 32, 32)]
    # row-major crops: the first row of crops is darkest (the image brightens downwards)
    assert tokens[0, 0, 1] < tokens[0, 4, 1] < tokens[0, 8, 1] < tokens[0, 12, 1]
    weights = load_file(pixcell_1024 / "transformer" / "diffusion_pytorch_model.safetensors")
    pos = weights["y_pos_embed.y_pos_embed"]
    z, t = torch.randn(1, 16, 16, 16), torch.tensor([0.3])
    eps = _reference_eps(pixcell_1024, z, t * 999, tokens + pos)
    a, s = model.interpolant.alpha(t), model.interpolant.sigma(t)
    x0 = model.denoise(z, t, cond=tokens)
    torch.testing.assert_close(x0, (z - s * eps) / a, atol=1e-4, rtol=1e-4)
    guided = model.denoise(z, t, cond=tokens, guidance=2.0)
    uncond = model.denoise(z, t)
    torch.testing.assert_close(guided, uncond + 2.0 * (x0 - uncond), atol=1e-3, rtol=1e-3)


def test_wrong_token_count_is_refused(pixcell_1024):
    model = load_model(f"pixcell-1024:{pixcell_1024}", device="cpu")
    with pytest.raises(ValueError, match=r"\(B, 16, 24\)"):
        model.denoise(torch.randn(1, 16, 16, 16), torch.tensor([0.5]), cond=torch.zeros(1, 1, 24))


def test_pixcell_generates_a_tiled_region(pixcell_1024):
    torch.set_num_threads(1)
    model = load_model(f"pixcell-1024:{pixcell_1024}", device="cpu")
    settings = SamplerSettings(
        sampler="dpmpp_2m", steps=3, seed=3, region=RegionConfig(batch_size=4)
    )
    rgb = generate_region(model, settings, 0, 0, 64, 200)
    assert rgb.shape == (64, 200, 3) and rgb.dtype == np.uint8 and rgb.std() > 0
