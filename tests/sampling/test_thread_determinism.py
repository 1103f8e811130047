"""Pixels do not depend on torch's thread count (issue 18, item 12): cytosyn-tiny, 1 vs 2
threads, a synthetic slide chunk and an inpainting, bit for bit; nor on how many network calls
run side by side (``NAPARI_CYTOSYN_MODEL_WORKERS``)."""

from __future__ import annotations

import os
import sys
import threading

import numpy as np
import pytest
import torch

from napari_cytosyn.models import load_model
from napari_cytosyn.sampling import SamplerSettings
from napari_cytosyn.sampling.threads import (
    THREADS_ENV,
    WORKERS_ENV,
    model_threads,
    model_workers,
    parallel_calls,
)
from napari_cytosyn.slide.synthetic import SyntheticSlide


@pytest.fixture(scope="module")
def tiny():
    return load_model("cytosyn-tiny", device="cpu")


def render(tmp_path, model, threads: int, name: str) -> np.ndarray:
    torch.set_num_threads(threads)
    slide = SyntheticSlide.create(
        tmp_path / name,
        model,
        128,
        128,
        SamplerSettings(steps=2, autocast="off", seed=5),
        chunk_px=128,
    )
    out = slide.ensure_chunk(0, 0, 0)
    slide.close()
    return out


def test_item12_one_and_two_torch_threads_give_the_same_pixels(tmp_path, tiny):
    before = torch.get_num_threads()
    try:
        one = render(tmp_path, tiny, 1, "one.cytosyn")
        two = render(tmp_path, tiny, 2, "two.cytosyn")
    finally:
        torch.set_num_threads(before)
    assert one.std() > 1.0  # tissue, not a blank chunk
    np.testing.assert_array_equal(one, two)


def test_item12_the_thread_count_is_read_from_the_environment(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert model_threads() == 1
    monkeypatch.setenv(THREADS_ENV, "3")
    assert model_threads() == 3
    monkeypatch.setenv(THREADS_ENV, "zero")
    with pytest.raises(ValueError, match=THREADS_ENV):
        model_threads()


def test_lazy_chunks_are_the_same_whatever_the_number_of_model_workers(tmp_path, tiny, monkeypatch):
    from napari_cytosyn.sampling.lazy import BORDER_DECODES

    chunks = []
    for workers in ("1", "2"):
        monkeypatch.setenv(WORKERS_ENV, workers)
        BORDER_DECODES.clear()  # each run decodes its own border crops
        slide = SyntheticSlide.create(
            tmp_path / f"w{workers}.cytosyn",
            tiny,
            256,
            256,
            SamplerSettings(steps=2, autocast="off", seed=5),
            chunk_px=128,
        )
        chunks.append(np.stack([slide.ensure_chunk(0, cy, cx) for cy in (0, 1) for cx in (0, 1)]))
        slide.close()
    assert chunks[0].std() > 1.0
    np.testing.assert_array_equal(chunks[0], chunks[1])


def test_parallel_calls_run_side_by_side_and_keep_the_order(monkeypatch):
    monkeypatch.setenv(WORKERS_ENV, "2")
    assert model_workers() == 2
    both_in_flight = threading.Barrier(2, timeout=30)  # a serial run would break it

    def call(i: int) -> int:
        both_in_flight.wait()
        return i * 10

    assert parallel_calls(call, [1, 2]) == [10, 20]
    assert parallel_calls(lambda i: i + 1, [1, 2, 3], cpu=False) == [2, 3, 4]
    monkeypatch.setenv(WORKERS_ENV, "0")
    with pytest.raises(ValueError, match=WORKERS_ENV):
        model_workers()


def test_an_error_in_one_parallel_call_is_raised_after_all_finished(monkeypatch):
    monkeypatch.setenv(WORKERS_ENV, "2")
    done = []

    def call(i: int) -> int:
        if i == 0:
            raise RuntimeError("bad window")
        done.append(i)
        return i

    with pytest.raises(RuntimeError, match="bad window"):
        parallel_calls(call, [0, 1, 2])
    assert sorted(done) == [1, 2]


def test_an_interrupted_wait_drops_the_calls_not_started(monkeypatch):
    from napari_cytosyn.sampling import threads

    monkeypatch.setenv(WORKERS_ENV, "2")
    release, ran = threading.Event(), []

    def call(i: int) -> None:
        release.wait(30)  # holds its worker until after the interruption
        ran.append(i)

    def interrupted(futures):
        raise KeyboardInterrupt

    monkeypatch.setattr(threads, "wait", interrupted)
    with pytest.raises(KeyboardInterrupt):
        parallel_calls(call, list(range(6)))
    release.set()
    both_idle = threading.Barrier(2, timeout=30)  # both workers past everything queued before
    for f in [threads._POOLS[2].submit(both_idle.wait) for _ in range(2)]:
        f.result()
    assert set(ran) <= {0, 1}  # at most the two calls already running; 2-5 never started


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_parallel_calls_run_at_the_calling_threads_priority(monkeypatch):
    """A viewer's background thread lowers its priority (nice) so that the GUI thread gets the
    CPU first; the network calls it runs in the pool must not run above it."""
    monkeypatch.setenv(WORKERS_ENV, "2")
    both_in_flight = threading.Barrier(2, timeout=30)  # both pool threads, not one twice

    def niceness(_: int) -> int:
        both_in_flight.wait()
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    parallel_calls(niceness, [0, 1])  # the pool's threads exist, made by this thread
    seen = []

    def background() -> None:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + 5)
        seen.append((os.getpriority(os.PRIO_PROCESS, tid), parallel_calls(niceness, [0, 1])))

    worker = threading.Thread(target=background)
    worker.start()
    worker.join(60)
    [(lowered, calls)] = seen
    assert calls == [lowered, lowered]
    parallel_calls(niceness, [0, 1])  # back to this thread's where allowed (raising needs root)
