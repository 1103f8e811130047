"""The viewport renderer: plan order, worker-thread generation, callbacks, dropping stale work."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from napari_cytosyn.models.grf import GRFModel
from napari_cytosyn.sampling import SamplerSettings
from napari_cytosyn.slide.synthetic import SyntheticSlide
from napari_cytosyn.slide.viewport import ViewportRenderer

CHUNK = 64


def _grf_slide(path) -> SyntheticSlide:
    return SyntheticSlide.create(
        path,
        GRFModel(boundary="periodic"),
        640,
        512,
        SamplerSettings(steps=4, seed=5),
        chunk_px=CHUNK,
    )


@pytest.fixture
def slide(tmp_path) -> SyntheticSlide:
    return _grf_slide(tmp_path / "s.zarr")


def test_plan_puts_visible_chunks_first_nearest_the_centre_then_the_margin(slide):
    renderer = ViewportRenderer(slide, margin_chunks=1)
    try:
        plan = renderer.plan(0, (128, 128, 320, 320))  # 3 x 3 visible chunks, centre (3, 3)
    finally:
        renderer.close()
    visible = {(0, cy, cx) for cy in range(2, 5) for cx in range(2, 5)}
    assert plan[0] == (0, 3, 3)
    assert set(plan[:9]) == visible
    assert set(plan[9:]) == {(0, cy, cx) for cy in range(1, 6) for cx in range(1, 6)} - visible


def test_plan_for_a_coarse_level_renders_finest_chunks_first(slide):
    renderer = ViewportRenderer(slide)
    try:
        plan = renderer.plan(1, (0, 0, 64, 64))  # level-1 chunk (0, 0) = 4 level-0 chunks
    finally:
        renderer.close()
    assert plan[:4] and all(k[0] == 0 for k in plan[:4])
    assert {k[1:] for k in plan[:4]} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    assert plan[4:] == [(1, 0, 0)]


def test_renderer_generates_visible_chunks_in_a_worker_and_reports_each(slide):
    seen: list[tuple[int, int, int]] = []
    threads: set[str] = set()

    def on_chunk(level: int, cy: int, cx: int) -> None:
        seen.append((level, cy, cx))
        threads.add(threading.current_thread().name)

    with ViewportRenderer(slide, on_chunk=on_chunk) as renderer:
        renderer.request(0, (0, 0, 128, 192))
        assert renderer.wait(timeout=60)
    assert {k for k in seen if k[0] == 0} == {(0, cy, cx) for cy in range(2) for cx in range(3)}
    assert threading.current_thread().name not in threads
    for _, cy, cx in seen:
        if _ == 0:
            assert slide.is_done(0, cy, cx)
    shown = slide.read_region(0, 0, 0, 128, 192, generate=False)
    assert shown.std() > 1.0 and not (shown == 255).all(axis=2).any()


def test_a_new_request_drops_the_work_scrolled_away_from(slide):
    started = threading.Event()
    release = threading.Event()
    first: list[tuple[int, int, int]] = []

    def on_chunk(level: int, cy: int, cx: int) -> None:
        first.append((level, cy, cx))
        started.set()
        release.wait(30)

    renderer = ViewportRenderer(slide, on_chunk=on_chunk)
    try:
        renderer.request(0, (0, 0, 192, 192))  # 9 chunks
        assert started.wait(60)
        renderer.request(0, (448, 576, 512, 640))  # far corner: 1 chunk
        release.set()
        assert renderer.wait(timeout=60)
    finally:
        renderer.close()
    level0 = [k for k in first if k[0] == 0]
    assert level0[-1] == (0, 7, 9)
    assert len(level0) <= 3  # the chunk in flight (and at most one racing it), then the new view
    assert renderer.stats.dropped >= 7
    assert not slide.is_done(0, 2, 2)


def test_generation_errors_are_reported_and_the_worker_keeps_going(slide):
    errors: list[BaseException] = []
    real = slide.generate_chunk

    def flaky(level: int, cy: int, cx: int):
        if (cy, cx) == (0, 0):
            raise RuntimeError("boom")
        return real(level, cy, cx)

    slide.generate_chunk = flaky
    with ViewportRenderer(slide, on_error=errors.append) as renderer:
        renderer.request(0, (0, 0, 64, 128))
        assert renderer.wait(timeout=60)
    assert [str(e) for e in errors] == ["boom"]
    assert slide.is_done(0, 0, 1) and not slide.is_done(0, 0, 0)


def test_requests_for_missing_levels_are_refused(slide):
    with ViewportRenderer(slide) as renderer, pytest.raises(ValueError, match="level 9"):
        renderer.request(9, (0, 0, 10, 10))
    assert np.all(slide.store.completion(0).grid == 0)


def test_chunks_after_the_first_are_prepared_in_groups_visible_apart_from_margin(tmp_path, slide):
    calls: list[tuple[list[tuple[int, int]], list[tuple[int, int]]]] = []
    real = slide.prepare_chunks

    def recording(chunks, upcoming=()):
        calls.append((list(chunks), list(upcoming)))
        return real(chunks, upcoming)

    slide.prepare_chunks = recording
    with ViewportRenderer(slide, margin_chunks=1, lookahead_chunks=3) as renderer:
        renderer.request(0, (128, 128, 256, 320))  # 2 x 3 visible chunks
        assert renderer.wait(timeout=120)
    visible = {(cy, cx) for cy in range(2, 4) for cx in range(2, 5)}
    margin = {(cy, cx) for cy in range(1, 5) for cx in range(1, 6)} - visible
    prepared = [set(c) for c, _ in calls]
    first = (2, 3)  # nearest the centre: prepared alone, as soon as possible
    assert prepared[0] == {first}
    # ... its padded batch slots go to the visible chunks that come next
    assert set(calls[0][1]) <= visible - {first} and len(calls[0][1]) == 3
    assert all(0 < len(c) <= 3 for c in prepared)
    assert all(c <= visible or c <= margin for c in prepared)  # never mixed
    assert set().union(*prepared) == visible | margin
    assert sum(len(c) for c in prepared) == len(visible | margin)  # each chunk planned once
    # Same pixels as a slide whose chunks were each rendered on their own.
    other = _grf_slide(tmp_path / "o.zarr")
    for cy, cx in sorted(visible | margin):
        assert np.array_equal(other.ensure_chunk(0, cy, cx), slide.store.read_chunk(0, cy, cx))


def test_lookahead_must_be_at_least_one(slide):
    with pytest.raises(ValueError, match="lookahead_chunks"):
        ViewportRenderer(slide, lookahead_chunks=0)


def test_zoomed_far_out_plans_the_chunks_nearest_the_centre_without_listing_all(tmp_path):
    huge = SyntheticSlide.create(
        tmp_path / "huge.cytosyn",
        GRFModel(boundary="periodic"),
        100_000,
        100_000,
        SamplerSettings(steps=2, seed=1),
        chunk_px=256,
    )
    top = len(huge.level_shapes) - 1
    with ViewportRenderer(huge, max_base_chunks=64) as renderer:
        t0 = time.perf_counter()
        plan = renderer.plan(top, (0, 0, *huge.level_shapes[top]))
        took = time.perf_counter() - t0
    leaves = [k for k in plan if k[0] == 0]
    assert len(leaves) == 64 and took < 0.5  # not the 152,881 chunks under the view
    n = -(-100_000 // 256)  # 391 chunks a side, centre at 195.5
    dist = [(y + 0.5 - n / 2) ** 2 + (x + 0.5 - n / 2) ** 2 for _, y, x in leaves]
    assert dist == sorted(dist) and max(dist) <= 5**2 * 2  # an 8 x 8 block around the centre


def test_a_requests_first_preview_is_one_window_estimated_before_the_batches(slide):
    reports: list[int] = []
    with ViewportRenderer(slide, on_preview=lambda m, rects, x0: reports.append(len(rects))) as r:
        r.request(0, (128, 128, 256, 320))
        assert r.wait(timeout=120)
    assert reports[0] == 1 and max(reports) > 1  # then the fixed-size batches
