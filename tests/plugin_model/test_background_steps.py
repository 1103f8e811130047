"""A job's steps that cannot stop midway (a model load, a slide's tissue mask) do not hold a
Cancel: the job ends at once and the step finishes in the background, its result kept."""

from __future__ import annotations

import os
import sys
import threading

import numpy as np
import pytest

from napari_cytosyn._napari._actions import finish_in_background, inpaint_work, join_background
from napari_cytosyn.models.grf import GRFModel
from napari_cytosyn.sampling import Cancelled, SamplerSettings
from napari_cytosyn.slide import open_slide
from napari_cytosyn.slide.composite import CompositeSlide


def test_cancel_during_a_step_returns_at_once_and_the_step_runs_to_its_end():
    cancel, release, ended = threading.Event(), threading.Event(), []

    def step():
        release.wait(10)
        ended.append(release.is_set())
        return "loaded"

    threading.Timer(0.05, cancel.set).start()
    with pytest.raises(Cancelled):
        finish_in_background(step, cancel)
    assert ended == []  # the job is back while the step still runs
    release.set()
    join_background(10)
    assert ended == [True]  # it ran to its end, not cut short


def test_a_step_gives_its_value_or_its_error_to_the_job():
    assert finish_in_background(lambda: 7, threading.Event()) == 7
    assert finish_in_background(lambda: 8, None) == 8

    def fail():
        raise ValueError("bad weights")

    with pytest.raises(ValueError, match="bad weights"):
        finish_in_background(fail, threading.Event())
    cancelled = threading.Event()
    cancelled.set()
    with pytest.raises(Cancelled):  # a job cancelled before the step starts none
        finish_in_background(lambda: pytest.fail("started after Cancel"), cancelled)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice")
def test_a_step_runs_at_the_job_threads_priority():
    seen = {}

    def job():
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + 3)
        seen["job"] = os.getpriority(os.PRIO_PROCESS, tid)
        seen["step"] = finish_in_background(
            lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()), threading.Event()
        )

    thread = threading.Thread(target=job)
    thread.start()
    thread.join(10)
    assert seen["step"] == seen["job"]


def test_cancel_while_the_model_loads_ends_the_inpaint_and_the_next_one_gets_the_model(
    generic_tiff_slide, tmp_path
):
    composite = CompositeSlide(open_slide(generic_tiff_slide), tmp_path / "e.cytosyn", 256)
    release, loaded, lock = threading.Event(), [], threading.Lock()

    def get_model():  # loads once (seconds on a busy machine), then keeps the model
        with lock:
            if not loaded:
                release.wait(10)
                loaded.append(GRFModel(boundary="periodic"))
            return loaded[0]

    yy, xx = np.mgrid[:64, :64]
    mask = (yy - 31.5) ** 2 + (xx - 31.5) ** 2 <= 30**2

    def work():
        return inpaint_work(
            composite, (100, 100, 64, 64), mask, get_model, SamplerSettings(steps=2), "none"
        )

    cancel = threading.Event()
    threading.Timer(0.05, cancel.set).start()
    with pytest.raises(Cancelled):
        work()(lambda done, total: None, cancel)
    assert loaded == [] and composite.edits == []  # back before the model had loaded
    release.set()
    join_background(10)
    assert len(loaded) == 1
    record = work()(lambda done, total: None, threading.Event())
    assert len(loaded) == 1 and [e["id"] for e in composite.edits] == [record["id"]]


def test_an_uncancelled_inpaint_job_writes_the_same_pixels_as_the_headless_inpaint(
    generic_tiff_slide, tmp_path
):
    yy, xx = np.mgrid[:64, :64]
    mask = (yy - 31.5) ** 2 + (xx - 31.5) ** 2 <= 30**2
    region, settings = (100, 100, 64, 64), SamplerSettings(steps=2, seed=5)
    model = GRFModel(boundary="periodic")
    job, headless = (
        CompositeSlide(open_slide(generic_tiff_slide), tmp_path / name, 256)
        for name in ("job.cytosyn", "headless.cytosyn")
    )
    steps = []
    inpaint_work(job, region, mask, lambda: model, settings, "none")(
        lambda done, total: steps.append(done), threading.Event()
    )
    headless.inpaint(region, mask, model, settings, reference="none")
    assert steps and steps[-1] == 2  # the background step's progress reached the job
    for level in range(len(job.level_shapes)):
        h, w = job.level_shapes[level]
        np.testing.assert_array_equal(
            job.read_region(level, 0, 0, h, w), headless.read_region(level, 0, 0, h, w)
        )
    assert len(job.edits) == len(headless.edits) == 1
