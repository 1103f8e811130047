"""The embedded default model ``cytosyn-tiny``: offline loading, tiles, determinism, size."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch

from napari_cytosyn.models.embedded import WEIGHTS_DIR, embedded_config, load_embedded
from napari_cytosyn.models.protocol import LatentDiffusionModel
from napari_cytosyn.sampling import SamplerSettings, generate_region


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return load_embedded(device="cpu")


def test_loads_from_the_package_with_the_network_blocked(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted while loading the embedded model")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    m = load_embedded(device="cpu")
    assert isinstance(m, LatentDiffusionModel)
    assert (m.mpp, m.tile_px, m.latent_factor, m.latent_channels) == (0.5, 224, 8, 4)
    assert m.target == "flow"
    assert m.interpolant.name == "flow"
    assert m.provenance()["name"] == "cytosyn-tiny"


def test_shipped_weights_are_safetensors_within_30_mb():
    files = [p for p in WEIGHTS_DIR.rglob("*") if p.is_file()]
    weights = [p for p in files if p.suffix not in {".json", ".md"}]
    assert weights and all(p.suffix == ".safetensors" for p in weights)
    assert sum(p.stat().st_size for p in files) <= 30 * 1024**2
    cfg = embedded_config()
    assert len(cfg["latent_scale"]) == len(cfg["latent_shift"]) == 4


def test_tile_has_shape_dtype_and_tissue_like_range(model):
    rgb = generate_region(model, SamplerSettings(steps=4, seed=1), 0, 0, 224, 224)
    assert rgb.shape == (224, 224, 3)
    assert rgb.dtype == np.uint8
    # H&E: pink/purple, not black, not white, not grey: red and blue above green on average
    mean = rgb.reshape(-1, 3).mean(0)
    assert 60 < mean.mean() < 235
    assert mean[0] > mean[1] and mean[2] > mean[1]
    assert rgb.std() > 10


def test_same_seed_same_pixels_other_seed_other_pixels(model):
    s = SamplerSettings(steps=3, seed=7)
    a = generate_region(model, s, 0, 0, 64, 96)
    b = generate_region(model, s, 0, 0, 64, 96)
    c = generate_region(model, SamplerSettings(steps=3, seed=8), 0, 0, 64, 96)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c.astype(int)).mean() > 5


def test_decode_of_encode_is_close_to_the_generated_tile(model):
    rgb = generate_region(model, SamplerSettings(steps=4, seed=2), 0, 0, 224, 224)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 127.5 - 1
    z = model.encode(x)
    assert z.shape == (1, 4, 28, 28)
    assert abs(float(z.std()) - 1.0) < 0.6  # per-channel scaling brings latents near unit std
    back = model.decode(z)
    assert float((back - x).abs().mean()) < 0.15


# ---------------------------------------------------------------- v2: 40x, conditioning


@pytest.fixture(scope="module")
def model40():
    torch.set_num_threads(1)
    return load_embedded(device="cpu", scale="40x")


@pytest.fixture(scope="module")
def references():
    """Two 224 px patches of the shipped 40x sample at 0.5 um/px: dense and sparse tissue."""
    from napari_cytosyn._napari._sample_data import sample_image
    from napari_cytosyn.chunk_grid import downsample_area

    rgb = downsample_area(sample_image().rgb, 2)  # 0.25 -> 0.5 um/px
    a, b = rgb[:224, :224], rgb[-224:, -224:]
    to_t = lambda p: torch.from_numpy(np.ascontiguousarray(p)).permute(2, 0, 1)[None] / 127.5 - 1  # noqa: E731
    return to_t(a), to_t(b), rgb


def test_40x_model_loads_offline_and_gives_finite_native_tiles(model40, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted while loading the embedded model")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    m = load_embedded(device="cpu", scale="40x")
    assert (m.mpp, m.tile_px, m.latent_factor, m.latent_channels) == (0.25, 448, 16, 4)
    assert m.name == "cytosyn-tiny-40x"
    rgb = generate_region(model40, SamplerSettings(steps=2, seed=3), 0, 0, 192, 160)
    assert rgb.shape == (192, 160, 3) and rgb.dtype == np.uint8
    mean = rgb.reshape(-1, 3).mean(0)
    assert 60 < mean.mean() < 235 and mean[0] > mean[1] and mean[2] > mean[1]
    # same latents as the 20x model, decoded to twice the pixels: the 2x2 average of the 40x
    # decode stays close to the 20x decode
    z = torch.randn(1, 4, 12, 12, generator=torch.Generator().manual_seed(0))
    d20, d40 = load_embedded(device="cpu").decode(z), model40.decode(z)
    assert d40.shape == (1, 3, 192, 192) and torch.isfinite(d40).all()
    pooled = torch.nn.functional.avg_pool2d(d40, 2)
    assert float((pooled - d20).abs().mean()) < 0.12


def test_embed_is_a_deterministic_normalised_descriptor(model, model40, references):
    from napari_cytosyn.models.tissue_descriptor import FEATURES

    a, b, _ = references
    e1, e2 = model.embed(a), model.embed(a)
    assert e1.shape == (1, len(FEATURES)) and e1.dtype == torch.float32
    torch.testing.assert_close(e1, e2, rtol=0, atol=0)
    assert float((model.embed(b) - e1).abs().max()) > 0.3
    assert float(e1.abs().max()) < 10  # normalised with the training statistics
    # the 40x model takes 0.25 um/px pixels: their 2x2 average gives the same descriptor
    a40 = torch.nn.functional.interpolate(a, scale_factor=2, mode="nearest")
    torch.testing.assert_close(model40.embed(a40), e1, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model.embed(a[0])


def test_conditioning_changes_the_output_and_the_same_reference_gives_the_same_pixels(
    model, references
):
    a, b, _ = references
    s = SamplerSettings(steps=3, seed=11)
    ca, cb = model.embed(a), model.embed(b)
    ya1 = generate_region(model, s, 0, 0, 96, 96, cond=ca)
    ya2 = generate_region(model, s, 0, 0, 96, 96, cond=model.embed(a))
    yb = generate_region(model, s, 0, 0, 96, 96, cond=cb)
    yu = generate_region(model, s, 0, 0, 96, 96)
    np.testing.assert_array_equal(ya1, ya2)
    assert np.abs(ya1.astype(int) - yb.astype(int)).mean() > 2
    assert np.abs(ya1.astype(int) - yu.astype(int)).mean() > 2
    # the null condition is the unconditional branch (what guidance mixes against)
    np.testing.assert_array_equal(yu, generate_region(model, s, 0, 0, 96, 96, cond="uncond"))
    with pytest.raises(ValueError, match="descriptor of shape"):
        generate_region(model, s, 0, 0, 64, 64, cond=torch.zeros(1, 3))


def test_40x_slides_pick_the_40x_model_and_say_so():
    from napari_cytosyn.models.embedded import match_slide_scale

    name, why = match_slide_scale("cytosyn-tiny", 0.2527)
    assert name == "cytosyn-tiny-40x" and "0.2527 um/px" in why and "no upsampling" in why
    assert match_slide_scale("cytosyn-tiny", 0.5) == ("cytosyn-tiny", None)
    assert match_slide_scale("cytosyn-tiny", None) == ("cytosyn-tiny", None)
    assert match_slide_scale("cytosyn", 0.25) == ("cytosyn", None)
    from napari_cytosyn.models import load_model

    m = load_model("cytosyn-tiny-40x", device="cpu")
    assert (m.name, m.mpp, m.tile_px) == ("cytosyn-tiny-40x", 0.25, 448)
    from napari_cytosyn.models import model_for_slide

    tiny = load_model("cytosyn-tiny", device="cpu")
    assert model_for_slide(tiny, 0.5) == (tiny, None)
    picked, why = model_for_slide(tiny, 0.25)
    assert picked.name == "cytosyn-tiny-40x" and "40x" in why
    assert model_for_slide(tiny, 0.25)[0] is picked  # loaded once
