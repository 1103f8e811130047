"""``SamplerSettings.autocast``: how the networks run, resolved and stored with what it made.

A real (tiny, random) diffusers VAE and UNet under ``torch.autocast``. The suite pins ``auto``
to ``off`` (tests/conftest.py); tests that need ``auto`` unpin it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cytosyn.models.grf import GRFModel
from napari_cytosyn.sampling import SamplerSettings, generate_region, precision
from napari_cytosyn.sampling.lazy import (
    BATCH_BF16,
    BATCH_DEFAULT,
    LazySpec,
    MemoryPhaseCache,
    render_chunk,
)
from napari_cytosyn.slide.store import StoreMismatchError
from napari_cytosyn.slide.synthetic import SyntheticSlide


@pytest.fixture(scope="module")
def tiny(tiny_diffusion):
    return tiny_diffusion(2, tile_px=32)


@pytest.fixture
def native(monkeypatch):
    """``auto`` as on a machine with native bfloat16."""
    monkeypatch.delenv(precision.AUTO_ENV, raising=False)
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)


def test_settings_default_to_auto_and_round_trip():
    s = SamplerSettings()
    assert s.autocast == "auto"
    for value in ("auto", "off", "bfloat16"):
        t = SamplerSettings(autocast=value)
        assert SamplerSettings.from_dict(t.to_dict()) == t
    assert SamplerSettings(autocast="off").to_dict()["autocast"] == "off"
    with pytest.raises(ValueError, match="unknown autocast 'fp8'"):
        SamplerSettings(autocast="fp8")


def test_the_precision_is_part_of_the_lazy_fingerprint():
    spec = LazySpec(settings=SamplerSettings(steps=4, autocast="off"), chunk_px=32)
    assert LazySpec.from_dict(spec.to_dict(), spec.settings).fingerprint() == spec.fingerprint()
    bf16 = LazySpec(settings=SamplerSettings(steps=4, autocast="bfloat16"), chunk_px=32, batch=4)
    assert bf16.fingerprint() != spec.fingerprint()  # a different recipe, a different slide


def test_auto_resolves_by_model_and_hardware(tiny, native, monkeypatch):
    assert precision.resolve_autocast("auto", tiny) == "bfloat16"
    assert precision.resolve_autocast("off", tiny) == "off"
    grf = GRFModel()
    assert precision.resolve_autocast("auto", grf) == "off"  # no networks to autocast
    with pytest.raises(ValueError, match="cannot run under bfloat16 autocast"):
        precision.resolve_autocast("bfloat16", grf)
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    assert precision.resolve_autocast("auto", tiny) == "off"  # emulated bf16 is slower
    assert precision.resolve_autocast("bfloat16", tiny) == "bfloat16"  # asked for: honoured
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)
    monkeypatch.setenv(precision.AUTO_ENV, "off")
    assert precision.resolve_autocast("auto", tiny) == "off"
    monkeypatch.setenv(precision.AUTO_ENV, "fast")
    with pytest.raises(ValueError, match="NAPARI_CYTOSYN_AUTOCAST='fast'"):
        precision.resolve_autocast("auto", tiny)


def test_native_bf16_reads_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    assert not precision.native_bf16("cpu")
    monkeypatch.setattr(precision, "_cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert precision.native_bf16("cpu") == torch.backends.mkldnn.is_available()
    assert not precision.native_bf16("meta")


def test_bfloat16_runs_the_networks_in_bfloat16_and_stays_close_to_float32(tiny):
    z = torch.randn(1, 4, 12, 12, generator=torch.Generator().manual_seed(0))
    seen = []
    hook = tiny.vae.decoder.conv_in.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    try:
        full = precision.decode(tiny, z, "off")
        half = precision.decode(tiny, z, "bfloat16")
    finally:
        hook.remove()
    assert seen == [torch.float32, torch.bfloat16]
    assert half.dtype == torch.float32 and half.is_contiguous()
    assert 0 < (half - full).abs().max() < 0.1
    x = precision.encode(tiny, full, "bfloat16")
    assert x.dtype == torch.float32 and (x - precision.encode(tiny, full, "off")).abs().max() < 0.1


def test_bfloat16_region_is_deterministic_and_close_to_float32(tiny):
    st = SamplerSettings(steps=4, seed=3, autocast="bfloat16")
    a = generate_region(tiny, st, 0, 0, 48, 64)
    assert np.array_equal(a, generate_region(tiny, st, 0, 0, 48, 64))
    off = generate_region(tiny, st.replace(autocast="off"), 0, 0, 48, 64)
    diff = np.abs(a.astype(int) - off.astype(int))
    assert 0 < diff.mean() < 8  # the same picture, not the same bits


def test_bfloat16_lazy_chunks_are_bit_identical_in_any_order(tiny):
    spec = LazySpec(settings=SamplerSettings(steps=4, seed=5, autocast="bfloat16"), chunk_px=32)
    alone = render_chunk(tiny, spec, 1, 1, MemoryPhaseCache())
    cache = MemoryPhaseCache()
    for cy, cx in [(0, 0), (1, 2), (2, 1)]:
        render_chunk(tiny, spec, cy, cx, cache)
    assert np.array_equal(render_chunk(tiny, spec, 1, 1, cache), alone)


def test_a_slide_stores_the_resolved_mode_and_reopens_with_auto(tmp_path, tiny, native):
    slide = SyntheticSlide.create(
        tmp_path / "s.zarr", tiny, 64, 64, SamplerSettings(steps=4, seed=1), chunk_px=32
    )
    recipe = slide.store.attrs["recipe"]
    assert recipe["core"]["autocast"] == "bfloat16"
    assert recipe["lazy"]["batch"] == list(BATCH_BF16)  # larger batches pay in bfloat16
    first = slide.ensure_chunk(0, 0, 0)
    # "auto" accepts the slide's stored mode, whatever this machine would pick now.
    again = SyntheticSlide.open(tmp_path / "s.zarr", tiny, SamplerSettings(steps=4, seed=1))
    assert np.array_equal(again.ensure_chunk(0, 0, 0), first)
    with pytest.raises(StoreMismatchError, match=r"core\.autocast: 'bfloat16' \(stored\) != 'off'"):
        SyntheticSlide.open(
            tmp_path / "s.zarr", tiny, SamplerSettings(steps=4, seed=1, autocast="off")
        )
    off = SyntheticSlide.create(
        tmp_path / "o.zarr",
        tiny,
        64,
        64,
        SamplerSettings(steps=4, autocast="off", seed=1),
        chunk_px=32,
    )
    assert off.store.attrs["recipe"]["core"]["autocast"] == "off"
    assert off.store.attrs["recipe"]["lazy"]["batch"] == BATCH_DEFAULT
    # Opened with "auto" on a bfloat16 machine, an "off" slide goes on in float32.
    reopened = SyntheticSlide.open(tmp_path / "o.zarr", tiny, SamplerSettings(steps=4, seed=1))
    assert reopened.renderer().spec.settings.autocast == "off"
