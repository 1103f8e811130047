"""Lazy mode: order independence, fresh processes, region equality, seams, cache reuse."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading

import numpy as np
import pytest

from napari_cytosyn.sampling import (
    Cancelled,
    LazySpec,
    MemoryPhaseCache,
    PhaseCache,
    SamplerSettings,
    lattice_lines,
    render_chunk,
    render_region_lazy,
    seam_score,
)
from napari_cytosyn.sampling.lazy import LazyPlan


@pytest.fixture
def spec() -> LazySpec:
    return LazySpec(settings=SamplerSettings(steps=10, seed=11), chunk_px=128)


def test_spec_round_trips_with_its_settings_and_holds_only_lazy_fields(spec):
    stored = spec.to_dict()
    assert "seed" not in stored and "settings" not in stored
    back = LazySpec.from_dict(stored, spec.settings)
    assert back == spec and back.fingerprint() == spec.fingerprint()
    assert spec.fingerprint() != LazySpec.from_dict(stored, SamplerSettings(steps=10)).fingerprint()
    with pytest.raises(ValueError, match=r"missing \['batch'\]"):
        LazySpec.from_dict({k: v for k, v in stored.items() if k != "batch"}, spec.settings)
    with pytest.raises(ValueError, match="batch must be an integer >= 1"):
        LazySpec(batch=0)
    with pytest.raises(ValueError, match="phase_times"):
        LazySpec(phase_times=(0.2, 0.6))
    with pytest.raises(ValueError, match="context_latent"):
        LazySpec(context_latent=-1)


def test_a_stored_spec_keeps_its_phases_when_the_defaults_change(grf):
    # Slides store spec.to_dict(); a spec written with the former 5-phase defaults must come
    # back as that spec (same fingerprint, same pixels), not pick up today's defaults.
    old = LazySpec(
        settings=SamplerSettings(steps=6, seed=4),
        chunk_px=64,
        phase_times=(0.8, 0.6, 0.4, 0.2),
        context_latent=(1, 2, 2, 1, 1),
    )
    stored = old.to_dict()
    assert stored["phase_times"] == [0.8, 0.6, 0.4, 0.2]
    assert stored["context_latent"] == [1, 2, 2, 1, 1]
    back = LazySpec.from_dict(stored, old.settings)
    assert back.fingerprint() == old.fingerprint()
    assert len(LazyPlan(grf, back, MemoryPhaseCache()).phases) == 5
    new = LazySpec(settings=old.settings, chunk_px=64)
    assert new.fingerprint() != old.fingerprint()
    a = render_chunk(grf, back, 1, 0, MemoryPhaseCache())
    assert np.array_equal(a, render_chunk(grf, old, 1, 0, MemoryPhaseCache()))
    assert not np.array_equal(a, render_chunk(grf, new, 1, 0, MemoryPhaseCache()))


def test_default_spec_has_three_phases_and_a_smaller_cone_than_five(grf):
    settings = SamplerSettings(steps=12, seed=1)
    five = LazySpec(
        settings=settings,
        chunk_px=256,
        phase_times=(0.8, 0.6, 0.4, 0.2),
        context_latent=(1, 2, 2, 1, 1),
    )
    three = LazySpec(settings=settings, chunk_px=256)
    plans = {}
    for name, s in (("five", five), ("three", three)):
        plan = LazyPlan(grf, s, MemoryPhaseCache())
        plan.final_latents(0, 0, 32, 32)  # one isolated 256 px chunk's latents
        plans[name] = plan
    assert len(plans["three"].phases) == 3
    # Measured with a 28-latent window: 200 vs 344 window evaluations with the decode margin.
    assert plans["three"].evaluations < 0.75 * plans["five"].evaluations


def test_memory_cache_implements_the_protocol():
    assert isinstance(MemoryPhaseCache(), PhaseCache)


def test_chunk_is_bit_identical_whatever_was_rendered_before(grf, spec):
    alone = render_chunk(grf, spec, 1, 2, MemoryPhaseCache())
    cache = MemoryPhaseCache()
    for cy, cx in [(3, 3), (0, 0), (2, 1), (1, 3)]:
        render_chunk(grf, spec, cy, cx, cache)
    after = render_chunk(grf, spec, 1, 2, cache)
    assert alone.shape == (128, 128, 3) and alone.dtype == np.uint8
    assert np.array_equal(alone, after)


def test_chunk_equals_the_same_pixels_of_a_larger_lazy_render(grf, spec):
    region = render_region_lazy(grf, spec, -128, 0, 384, 256)
    chunk = render_chunk(grf, spec, 0, 1, MemoryPhaseCache())
    assert np.array_equal(region[128:256, 128:256], chunk)
    odd = render_region_lazy(grf, spec, -61, 45, 101, 77, MemoryPhaseCache())
    assert np.array_equal(odd, region[67:168, 45:122])


def test_chunk_is_identical_in_a_fresh_process(grf, spec):
    code = (
        "import hashlib, torch; torch.set_num_threads(1);"
        "from napari_cytosyn.models.grf import GRFModel;"
        "from napari_cytosyn.sampling import LazySpec, SamplerSettings, MemoryPhaseCache,"
        " render_chunk;"
        "spec = LazySpec(settings=SamplerSettings(steps=10, seed=11), chunk_px=128);"
        "img = render_chunk(GRFModel(), spec, -1, 4, MemoryPhaseCache());"
        "print(hashlib.sha256(img.tobytes()).hexdigest())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    here = render_chunk(grf, spec, -1, 4, MemoryPhaseCache())
    assert out.stdout.strip() == hashlib.sha256(here.tobytes()).hexdigest()


def test_neighbouring_chunks_reuse_cached_phase_states(grf, spec):
    cache = MemoryPhaseCache()
    grf.windows = 0
    render_chunk(grf, spec, 0, 0, cache)
    first = grf.windows
    render_chunk(grf, spec, 0, 1, cache)
    second = grf.windows - first
    render_chunk(grf, spec, 0, 1, cache)
    assert second < 0.6 * first
    assert grf.windows - first == second  # a repeated chunk costs no model evaluation


@pytest.mark.parametrize("sampler", ["euler", "ancestral", "dpmpp_2m"])
def test_lazy_mode_has_no_visible_seams_on_the_grf_model(grf, sampler):
    spec = LazySpec(settings=SamplerSettings(steps=12, sampler=sampler, seed=2), chunk_px=512)
    n = 1024
    cache = MemoryPhaseCache()
    img = render_region_lazy(grf, spec, 0, 0, n, n, cache)
    plan = LazyPlan(grf, spec, cache)
    scores = [
        seam_score(img, lattice_lines(n, p, oy), lattice_lines(n, p, ox))
        for oy, ox, p, _ in plan.lattice_lines_px()
    ]
    # Naive tiling of the same model scores > 2 (test_region); measured max here ~1.01-1.04.
    assert max(scores) < 1.06, scores


def test_blend_phase_and_batches_keep_order_independence(grf):
    spec = LazySpec(
        settings=SamplerSettings(steps=8, sampler="ancestral"),
        chunk_px=64,
        phase_times=(0.5,),
        blend_steps=2,
        context_latent=(2, 1),
        batch=3,
    )
    a = render_chunk(grf, spec, 2, -1, MemoryPhaseCache())
    cache = MemoryPhaseCache()
    render_region_lazy(grf, spec, 0, -256, 256, 256, cache)
    assert np.array_equal(a, render_chunk(grf, spec, 2, -1, cache))


def test_lazy_render_cancels_between_chunks(grf, spec):
    cancel = threading.Event()
    seen = []

    def progress(done, total):
        seen.append(done)
        cancel.set()

    with pytest.raises(Cancelled):
        render_region_lazy(grf, spec, 0, 0, 512, 512, None, progress, cancel)
    assert seen == [1]


def test_chunk_px_must_be_a_multiple_of_the_latent_factor(grf):
    with pytest.raises(ValueError, match="multiple of the model's latent factor"):
        render_chunk(grf, LazySpec(chunk_px=100), 0, 0, MemoryPhaseCache())
