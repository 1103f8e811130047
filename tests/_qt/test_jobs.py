"""Jobs: long work in a worker thread of its own, at a lower CPU priority than the GUI thread."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from napari_cytosyn._napari._qt._jobs import (
    BACKGROUND_NICENESS,
    JOB_NICENESS,
    Job,
    lower_thread_priority,
)
from napari_cytosyn.sampling import Cancelled

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice")


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@linux_only
def test_job_runs_in_a_worker_thread_at_lower_priority(qtbot):
    seen = {}

    def work(progress, cancel):
        seen["main"] = threading.current_thread() is threading.main_thread()
        seen["nice"] = _nice()
        progress(1, 1)
        return 42

    gui_nice = _nice()
    job = Job("test", work, total=1, show_progress=False).start()
    assert job.wait(10_000)
    assert (job.state, job.result) == ("done", 42)
    assert seen["main"] is False
    assert seen["nice"] == min(19, gui_nice + JOB_NICENESS)
    assert _nice() == gui_nice  # the GUI thread keeps its priority
    # a job the user waits for is lowered less than the viewport's renderer
    assert 0 < JOB_NICENESS < BACKGROUND_NICENESS


def test_job_reports_failures_and_cancels(qtbot):
    def fail(progress, cancel):
        raise ValueError("bad input")

    job = Job("fail", fail, show_progress=False).start()
    failed = []
    job.failed.connect(failed.append)
    assert job.wait(10_000)
    assert job.state == "failed" and isinstance(job.error, ValueError)
    assert [type(e) for e in failed] == [ValueError]

    def stop(progress, cancel):
        cancel.wait(10)
        raise Cancelled("stopped")

    job = Job("cancel", stop, show_progress=False).start()
    job.cancel()
    assert job.wait(10_000)
    assert job.state == "cancelled"


def test_the_gui_thread_is_never_lowered():
    before = os.getpriority(os.PRIO_PROCESS, 0) if hasattr(os, "getpriority") else None
    assert lower_thread_priority() is False
    if before is not None:
        assert os.getpriority(os.PRIO_PROCESS, 0) == before
