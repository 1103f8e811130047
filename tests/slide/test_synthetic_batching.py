"""Batched lazy rendering: fixed-size model batches, preparing several chunks, stored specs.

A real (tiny, random) diffusers UNet and VAE: on CPU their output for one window changes in
the last bits with the batch size, so these tests check bit-identity of chunks whatever was
computed before or alongside them, and that the model only ever sees ``spec.batch`` windows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cytosyn.models.latent import LatentDiffusion
from napari_cytosyn.sampling import SamplerSettings
from napari_cytosyn.sampling.lazy import (
    LazyPlan,
    LazySpec,
    MemoryPhaseCache,
    prepare_chunks,
    preview_scope,
    render_chunk,
    render_region_lazy,
    soon_scope,
)
from napari_cytosyn.sampling.lazy.batching import prepare_cells
from napari_cytosyn.sampling.threads import WORKERS_ENV
from napari_cytosyn.slide.synthetic import SyntheticSlide


@pytest.fixture(scope="module")
def tiny(tiny_diffusion) -> LatentDiffusion:
    sizes: list[int] = []
    model = tiny_diffusion(2, tile_px=32, net_hook=lambda z: sizes.append(int(z.shape[0])))
    model.info["batch_sizes"] = sizes  # read by the tests, not part of the model
    return model


def _spec(**kw) -> LazySpec:
    return LazySpec(settings=SamplerSettings(steps=4, seed=7), chunk_px=32, **kw)


def test_batched_chunks_are_bit_identical_whatever_was_computed_before(tiny):
    spec = _spec()
    assert spec.batch == 4
    sizes = tiny.info["batch_sizes"]
    sizes.clear()
    alone = render_chunk(tiny, spec, 1, 2, MemoryPhaseCache())
    cache = MemoryPhaseCache()
    region = render_region_lazy(tiny, spec, 32, 32, 32, 64, cache)  # its left neighbour first
    assert np.array_equal(region[:, 32:], alone)
    other = MemoryPhaseCache()
    prepare_chunks(tiny, spec, [(2, 3), (0, 0), (1, 1)], other)  # other batches, other order
    assert np.array_equal(render_chunk(tiny, spec, 1, 2, other), alone)
    assert set(sizes) == {4}  # every model call had exactly spec.batch windows


def test_a_batch_size_is_part_of_the_recipe(tiny):
    # Batch 1 and batch 4 differ in the last bits on CPU: they are different slides.
    a = render_chunk(tiny, _spec(batch=1), 0, 0, MemoryPhaseCache())
    b = render_chunk(tiny, _spec(batch=4), 0, 0, MemoryPhaseCache())
    assert _spec(batch=1).fingerprint() != _spec(batch=4).fingerprint()
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 2  # same image all the same


def test_preparing_chunks_together_wastes_fewer_padded_slots(tiny):
    spec = _spec(batch=8)
    chunks = [(0, 0), (0, 1), (1, 0), (1, 1)]
    one_by_one = LazyPlan(tiny, spec, MemoryPhaseCache())
    for cy, cx in chunks:
        one_by_one.prepare(cy * 16 - 6, cx * 16 - 6, 28, 28)
    cache = MemoryPhaseCache()
    prepare_chunks(tiny, spec, chunks, cache)
    sizes = tiny.info["batch_sizes"]
    sizes.clear()
    assert render_chunk(tiny, spec, 1, 1, cache).shape == (32, 32, 3)
    assert sizes == []  # every state it needs was prepared
    fresh = LazyPlan(tiny, spec, MemoryPhaseCache())
    prepare_cells(
        fresh,
        len(fresh.phases) - 1,
        set().union(
            *(
                fresh.covering(len(fresh.phases) - 1, y * 16 - 6, x * 16 - 6, 28, 28)
                for y, x in chunks
            )
        ),
    )
    assert fresh.evaluations == one_by_one.evaluations  # the same windows...
    assert fresh.padded_evaluations < one_by_one.padded_evaluations  # ...in fuller batches


def _two_slides(tmp_path, tiny):
    """Two stores of the same 96 px slide (seed 3, 32 px chunks)."""
    settings = SamplerSettings(steps=4, seed=3)
    return tuple(
        SyntheticSlide.create(tmp_path / f"{n}.zarr", tiny, 96, 96, settings, chunk_px=32)
        for n in "ab"
    )


def test_synthetic_slide_prepares_chunks_and_renders_the_same_pixels(tmp_path, tiny):
    a, b = _two_slides(tmp_path, tiny)
    b.prepare_chunks([(0, 0), (0, 1), (1, 0), (1, 1)])
    assert b.compute_count == 0  # preparing computes states, not chunks
    for cy, cx in [(1, 1), (0, 1)]:
        assert np.array_equal(a.ensure_chunk(0, cy, cx), b.ensure_chunk(0, cy, cx))
    b.prepare_chunks([(1, 1)])  # a finished chunk: nothing to do


def _rect(plan: LazyPlan, cy: int, cx: int) -> tuple[int, int, int, int]:
    return cy * 16 - 6, cx * 16 - 6, 28, 28  # chunk (16 latents) + halo 4 + blend 2


def test_padded_slots_compute_the_next_chunks_windows_and_pixels_stay_the_same(tiny, monkeypatch):
    monkeypatch.setenv(WORKERS_ENV, "1")  # one batch at a time: only padded slots are filled
    spec = _spec(batch=8)
    later = [(0, 1), (1, 0), (1, 1)]
    plain = LazyPlan(tiny, spec, MemoryPhaseCache())
    plain.prepare_rects([_rect(plain, 0, 0)])
    filled_cache = MemoryPhaseCache()
    filled = LazyPlan(tiny, spec, filled_cache)
    filled.prepare_rects([_rect(filled, 0, 0)], [[_rect(filled, *c)] for c in later])
    # Same number of model slots (the same batches), fewer of them padding...
    assert plain.padded_evaluations > 0
    total = plain.evaluations + plain.padded_evaluations
    assert filled.evaluations + filled.padded_evaluations == total
    assert filled.padded_evaluations < plain.padded_evaluations
    # ... and the extra windows are ones the next chunks need: they cost less afterwards.
    after_plain = LazyPlan(tiny, spec, plain.cache)
    after_filled = LazyPlan(tiny, spec, filled_cache)
    for plan in (after_plain, after_filled):
        plan.prepare_rects([_rect(plan, *c) for c in later])
    assert after_filled.evaluations < after_plain.evaluations
    # Pixels do not depend on it: the same as each chunk rendered from an empty cache.
    for cy, cx in [(0, 0), *later]:
        alone = render_chunk(tiny, spec, cy, cx, MemoryPhaseCache())
        assert np.array_equal(render_chunk(tiny, spec, cy, cx, filled_cache), alone)


def test_synthetic_slide_passes_upcoming_chunks_to_the_renderer(tmp_path, tiny):
    a, b = _two_slides(tmp_path, tiny)
    b.prepare_chunks([(0, 0)], upcoming=[(0, 1), (2, 2)])
    for cy, cx in [(0, 0), (0, 1), (2, 2)]:
        assert np.array_equal(a.ensure_chunk(0, cy, cx), b.ensure_chunk(0, cy, cx))


def test_a_batch_size_per_phase_is_stored_and_used(tiny):
    spec = _spec(batch=(8, 4))  # 8 in the first phase, 4 in the later ones
    assert [spec.batch_of(q) for q in range(4)] == [8, 4, 4, 4]
    back = LazySpec.from_dict(spec.to_dict(), spec.settings)
    assert back == spec and back.fingerprint() == spec.fingerprint()
    assert spec.fingerprint() not in {_spec(batch=8).fingerprint(), _spec(batch=4).fingerprint()}
    sizes = tiny.info["batch_sizes"]
    sizes.clear()
    alone = render_chunk(tiny, spec, 1, 1, MemoryPhaseCache())
    assert sizes[0] == 8 and set(sizes) == {8, 4}
    cache = MemoryPhaseCache()
    prepare_chunks(tiny, spec, [(0, 0), (1, 2)], cache, upcoming=[(2, 2)])
    assert np.array_equal(render_chunk(tiny, spec, 1, 1, cache), alone)
    with pytest.raises(ValueError, match="batch must be an integer >= 1 or a tuple of them"):
        _spec(batch=(8, 0))


def test_batches_that_would_leave_a_worker_idle_compute_the_next_chunks_windows(tiny, monkeypatch):
    spec = _spec(batch=2)
    later = [(0, 1), (1, 0), (1, 1)]
    plans, after = {}, {}
    for workers in ("1", "2"):
        monkeypatch.setenv(WORKERS_ENV, workers)
        plan = LazyPlan(tiny, spec, MemoryPhaseCache())
        plan.prepare_rects([_rect(plan, 0, 0)], [[_rect(plan, *c)] for c in later])
        plans[workers] = plan
        after[workers] = LazyPlan(tiny, spec, plan.cache)
        after[workers].prepare_rects([_rect(plan, *c) for c in later])
    # with two workers, phases that ended on one batch got a second one of the next chunks'
    # windows (run beside it): more done ahead, less left to do afterwards
    assert plans["2"].evaluations > plans["1"].evaluations
    assert after["2"].evaluations < after["1"].evaluations
    for cy, cx in [(0, 0), *later]:
        alone = render_chunk(tiny, spec, cy, cx, MemoryPhaseCache())
        assert np.array_equal(render_chunk(tiny, spec, cy, cx, plans["2"].cache), alone)


def test_soon_scope_shows_one_window_estimate_first_and_stores_nothing_of_it(tiny):
    spec = _spec()
    plain_cache = MemoryPhaseCache()
    plain = render_chunk(tiny, spec, 1, 2, plain_cache)
    sizes = tiny.info["batch_sizes"]
    sizes.clear()
    with soon_scope():  # without a preview_scope there is nothing to show: no extra call
        render_chunk(tiny, spec, 1, 2, MemoryPhaseCache())
    assert set(sizes) == {4}
    reports, cache = [], MemoryPhaseCache()
    sizes.clear()
    with preview_scope(lambda model, rects, x0: reports.append((rects, x0))), soon_scope():
        soon = render_chunk(tiny, spec, 1, 2, cache)
    # one window alone first, then only fixed-size batches; same pixels, same stored states
    assert sizes[0] == 1 and set(sizes[1:]) == {4}
    assert np.array_equal(soon, plain)
    assert set(cache._data) == set(plain_cache._data)
    (rect,), first = reports[0]
    y, x, h, w = rect  # a window core over the chunk (latents 16-32 x 32-48)
    assert y < 32 and y + h > 16 and x < 48 and x + w > 32
    # ... and the model's estimate of that window: its batch reports it again (last bits aside)
    again = [x0[rects.index(rect)] for rects, x0 in reports[1:] if rect in rects]
    assert again and torch.allclose(first[0], again[0], atol=1e-4)
