"""The frozen-GroupNorm decode of lazy chunks (``LazySpec.decode_norm="frozen"``): a local
decoder shipped with cytosyn-tiny, recorded in the slide's recipe, order-independent."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cytosyn.models.embedded import FROZEN_HALO_LATENT, load_embedded
from napari_cytosyn.models.tiny_nets import (
    FrozenGroupNorm,
    _LocalResnet,
    decoder_norms,
    frozen_norm_vae,
)
from napari_cytosyn.sampling import (
    LazySpec,
    MemoryPhaseCache,
    SamplerSettings,
    render_chunk,
    render_region_lazy,
)
from napari_cytosyn.sampling.lazy import lazy_defaults
from napari_cytosyn.sampling.threads import WORKERS_ENV
from napari_cytosyn.slide.synthetic import SyntheticSlide


@pytest.fixture(scope="module")
def tiny():
    return load_embedded(device="cpu")


def test_frozen_group_norm_equals_group_norm_given_the_inputs_own_statistics():
    torch.manual_seed(0)
    norm = torch.nn.GroupNorm(4, 8)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2.0)
        norm.bias.uniform_(-1.0, 1.0)
    x = torch.randn(1, 8, 6, 5) * 3 + 1
    xg = x.reshape(1, 4, -1)
    frozen = FrozenGroupNorm(norm, xg.mean(-1)[0], xg.var(-1, unbiased=False)[0])
    torch.testing.assert_close(frozen(x), norm(x), atol=1e-5, rtol=1e-5)
    # fixed statistics: another input is not normalised by its own
    assert not torch.allclose(frozen(x * 2), norm(x * 2), atol=1e-2)


@pytest.mark.parametrize("shortcut", [False, True])
def test_the_local_resnet_block_gives_the_diffusers_blocks_exact_output(shortcut):
    from diffusers.models.resnet import ResnetBlock2D

    torch.manual_seed(1)
    c_in = 16 if shortcut else 8
    block = ResnetBlock2D(in_channels=c_in, out_channels=8, temb_channels=None, groups=4).eval()
    for name in ("norm1", "norm2"):
        norm = getattr(block, name)
        stats = torch.rand(4) + 0.1
        setattr(block, name, FrozenGroupNorm(norm, stats - 0.5, stats))
    x = torch.randn(2, c_in, 9, 7).to(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.equal(_LocalResnet(block)(x.clone()), block(x, None))


def test_the_shipped_frozen_decoder_runs_all_its_resnet_blocks_locally(tiny):
    from diffusers.models.resnet import ResnetBlock2D

    kinds = [type(m) for m in tiny.frozen_norm_model.vae.decoder.modules()]
    assert kinds.count(_LocalResnet) == 10  # 2 in the mid block + 4 up blocks x 2
    assert ResnetBlock2D not in kinds


def test_statistics_that_do_not_fit_the_decoder_are_refused(tiny):
    stats = {
        f"{name}.{s}": torch.ones(norm.num_groups)
        for name, norm in decoder_norms(tiny.vae).items()
        for s in ("mean", "var")
    }
    frozen_norm_vae(tiny.vae, stats)  # fits
    first = next(iter(stats))
    with pytest.raises(ValueError, match=r"missing \[.*norm"):
        frozen_norm_vae(tiny.vae, {k: v for k, v in stats.items() if k != first})
    with pytest.raises(ValueError, match="must have shape"):
        frozen_norm_vae(tiny.vae, {**stats, first: torch.ones(3)})


@pytest.mark.parametrize("scale", ["20x", "40x"])
def test_the_shipped_local_decoder_is_local_and_the_plain_one_is_not(tiny, scale):
    model = tiny if scale == "20x" else load_embedded(device="cpu", scale="40x")
    local = model.frozen_norm_model
    assert decoder_norms(local.vae) == {}
    assert lazy_defaults(model) == {
        "decode_norm": "frozen",
        "decode_halo_latent": FROZEN_HALO_LATENT[scale],
    }
    assert any(isinstance(m, FrozenGroupNorm) for m in local.vae.modules())
    z = torch.randn(1, 4, 8, 40, generator=torch.Generator().manual_seed(3))
    far = z.clone()
    far[..., 28:] += 1.0  # latents >= 28 changed; the receptive field is < 20 latents
    keep = 8 * model.latent_factor  # pixels of the first 8 latent columns
    a, b = local.decode(z)[..., :keep], local.decode(far)[..., :keep]
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    plain_a, plain_b = model.decode(z)[..., :keep], model.decode(far)[..., :keep]
    assert (plain_a - plain_b).abs().max() > 1e-3  # GroupNorm statistics of the whole crop
    # the same picture, up to the statistics (random latents, 40x: 0.041 before the
    # 40x decoder's stain run, 0.055 after; on the model's own latents the frozen 40x decode is
    # 36.6 dB from a whole-region decode, the crop decode 34.6: frozen_norm_decoder.py)
    assert (a - plain_a).abs().mean() < 0.06


def test_frozen_chunks_do_not_depend_on_order_region_or_workers(tiny, monkeypatch):
    spec = LazySpec(
        settings=SamplerSettings(steps=2, seed=9, autocast="off"),
        chunk_px=64,
        decode_norm="frozen",
    )
    monkeypatch.setenv(WORKERS_ENV, "1")
    alone = render_chunk(tiny, spec, 1, 1, MemoryPhaseCache())
    monkeypatch.setenv(WORKERS_ENV, "2")
    region = render_region_lazy(tiny, spec, 0, 0, 192, 192, MemoryPhaseCache())
    assert alone.shape == (64, 64, 3) and alone.std() > 1.0
    np.testing.assert_array_equal(region[64:128, 64:128], alone)
    crop = LazySpec(settings=spec.settings, chunk_px=64)  # cross-faded decode: other pixels
    other = render_chunk(tiny, crop, 1, 1, MemoryPhaseCache())
    assert 0 < np.abs(other.astype(int) - alone.astype(int)).mean() < 12


def test_slides_record_their_decode_and_recipes_without_it_are_refused(tmp_path, tiny, grf):
    settings = SamplerSettings(steps=2, seed=1, autocast="off")
    slide = SyntheticSlide.create(tmp_path / "t.cytosyn", tiny, 128, 128, settings, chunk_px=64)
    assert slide.recipe["lazy"]["decode_norm"] == "frozen"
    assert slide.recipe["lazy"]["decode_halo_latent"] == FROZEN_HALO_LATENT["20x"] == 2
    slide.close()
    assert lazy_defaults(grf) == {}
    plain = SyntheticSlide.create(tmp_path / "g.cytosyn", grf, 128, 128, settings, chunk_px=64)
    assert plain.recipe["lazy"]["decode_norm"] == "crop"  # stored whatever its value
    older = {k: v for k, v in plain.recipe["lazy"].items() if k != "decode_norm"}
    with pytest.raises(ValueError, match=r"missing \['decode_norm'\]"):
        LazySpec.from_dict(older, settings)  # no legacy reading: the store is made again
    plain.close()
    spec = LazySpec(settings=settings, decode_norm="frozen")
    assert LazySpec.from_dict(spec.to_dict(), settings) == spec
    assert spec.fingerprint() != LazySpec(settings=settings).fingerprint()
    with pytest.raises(ValueError, match="decode_norm must be one of crop, frozen"):
        LazySpec(decode_norm="batch")
    # a slide made with the frozen decode, opened with a model that does not ship it
    lone = SyntheticSlide.create(
        tmp_path / "f.cytosyn", grf, 128, 128, settings, chunk_px=64, lazy={"decode_norm": "frozen"}
    )
    with pytest.raises(ValueError, match=r"frozen GroupNorm statistics.*does not ship"):
        lone.ensure_chunk(0, 0, 0)
    lone.close()
