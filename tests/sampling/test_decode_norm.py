"""``DecodeConfig.norm``: region mode and inpainting decode with the model's local
(frozen-GroupNorm) decoder where it ships one; recorded in the recipe; pixels independent of the
tiling's worker count."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_cytosyn.models.embedded import load_embedded
from napari_cytosyn.sampling import (
    DecodeConfig,
    SamplerSettings,
    generate_region,
    inpaint,
    make_recipe,
    resolve_settings,
    settings_of,
)
from napari_cytosyn.sampling.threads import WORKERS_ENV
from napari_cytosyn.sampling.tiling import decode_tiled


@pytest.fixture(scope="module")
def tiny():
    return load_embedded(device="cpu")


def test_auto_resolves_per_model_and_recipes_store_the_resolved_norm(tiny, grf):
    assert DecodeConfig().norm == "auto"
    assert DecodeConfig().resolve(tiny).norm == "frozen"
    assert DecodeConfig().resolve(grf).norm == "crop"
    assert DecodeConfig(norm="crop").resolve(tiny).norm == "crop"
    with pytest.raises(ValueError, match=r"'frozen' needs .*'grf'.* does not"):
        DecodeConfig(norm="frozen").resolve(grf)
    with pytest.raises(ValueError, match="unknown decode norm 'local'"):
        DecodeConfig(norm="local")
    settings = resolve_settings(SamplerSettings(steps=2, autocast="off"), tiny)
    recipe = json.loads(json.dumps(make_recipe(tiny, settings, "region")))
    assert recipe["decode"] == {"tile_latent": 64, "halo_latent": 8, "blend_latent": 2,
                                "norm": "frozen"}  # fmt: skip
    assert settings_of(recipe) == settings
    # a recipe made before the field existed was decoded with each tile's own statistics
    del recipe["decode"]["norm"]
    assert settings_of(recipe).decode.norm == "crop"


def test_the_local_decode_by_tiles_equals_one_whole_decode_and_needs_no_cross_fade(tiny):
    z = torch.randn(4, 40, 40, generator=torch.Generator().manual_seed(1))
    whole = tiny.frozen_norm_model.decode(z[None])[0].clamp(-1, 1)
    # the local decoder sees ~12 latents: with that halo, 9 tiles of 16 give the whole decode
    tiled = decode_tiled(tiny, z, None, DecodeConfig(16, 12, 2, norm="frozen"))
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)
    default = decode_tiled(tiny, z, None, DecodeConfig(16, norm="frozen"))  # halo 8
    assert (default - whole).abs().max() < 2 / 255  # at most a level of difference
    crop = decode_tiled(tiny, z, None, DecodeConfig(16, norm="crop"))
    assert (crop - whole).abs().mean() > 1e-3  # the plain decoder: each tile's statistics


def test_region_and_inpaint_pixels_follow_the_norm_not_the_workers(tiny, monkeypatch):
    settings = SamplerSettings(steps=2, seed=3, autocast="off")
    small = DecodeConfig(tile_latent=8, halo_latent=8)  # 4 tiles for a 128 px region
    out = {}
    for norm, workers in (("auto", "1"), ("auto", "2"), ("frozen", "2"), ("crop", "2")):
        monkeypatch.setenv(WORKERS_ENV, workers)
        st = settings.replace(decode=small.replace(norm=norm))
        out[norm, workers] = generate_region(tiny, st, 8, -16, 128, 128)
    assert out["auto", "1"].std() > 1.0
    np.testing.assert_array_equal(out["auto", "1"], out["auto", "2"])
    np.testing.assert_array_equal(out["auto", "1"], out["frozen", "2"])
    diff = np.abs(out["crop", "2"].astype(int) - out["auto", "1"]).mean()
    assert 0 < diff < 12  # the same tissue, another decoder's statistics

    image = out["auto", "1"]
    mask = np.zeros(image.shape[:2], bool)
    mask[40:90, 30:100] = True
    filled = {}
    for norm in ("auto", "frozen", "crop"):
        st = settings.replace(seed=4, decode=small.replace(norm=norm))
        filled[norm] = inpaint(tiny, image, mask, st)
        np.testing.assert_array_equal(filled[norm][~mask], image[~mask])
    np.testing.assert_array_equal(filled["auto"], filled["frozen"])
    assert np.abs(filled["crop"].astype(int) - filled["auto"]).mean() > 0
