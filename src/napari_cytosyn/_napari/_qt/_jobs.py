"""Long work off the GUI thread: a callable run in a worker thread of its own, with a napari
progress bar and a Cancel that stops it within one batch.

The callable takes ``progress(done, total)`` and ``cancel`` (a ``threading.Event``), the same
convention as the headless API (``generate_region``, ``CompositeSlide.inpaint``,
``SyntheticSlide.render_all``, the exporters), so the widget adds no logic of its own.

Worker threads run at a lower scheduling priority than the GUI thread (Linux), so that napari's
redraws get the CPU first when generation keeps every core busy.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QObject, Signal

Work = Callable[[Callable[[int, int], None], threading.Event], Any]

BACKGROUND_NICENESS = 10  # added to a worker thread's nice value (0 normal, 19 lowest)
# A job the user started and waits for is lowered less than the viewport's renderer: beside
# two CPU-bound processes a first inpaint took 109-112 s at +10 and 37-40 s at +5; on a quiet
# machine benchmarks/gui_latency.py saw no larger GUI stalls (docs/user-guide/inpaint.md).
JOB_NICENESS = 5
_THREAD = threading.local()  # .lowered: this thread's priority was lowered


def lower_thread_priority(niceness: int = BACKGROUND_NICENESS) -> bool:
    """Lower the calling worker thread's CPU priority by ``niceness`` (once per thread); True
    if it is lowered.

    Linux only (there ``setpriority`` on a thread id applies to that thread alone; elsewhere it
    would name a process). Under CPU contention the GUI thread and the OpenGL rasteriser then
    run before generation: ``benchmarks/gui_stall.py`` with the embedded model measured
    50-55 ms max stalls instead of 65-72 ms, median tick gaps 11-13 ms instead of 18-22 ms, and
    the same number of chunks rendered. The thread must be one of ours: the change lasts as
    long as the thread.
    """
    if threading.current_thread() is threading.main_thread():
        return False  # never the GUI thread
    if getattr(_THREAD, "lowered", False):
        return True
    if not sys.platform.startswith("linux"):
        return False
    tid = threading.get_native_id()
    try:
        os.setpriority(
            os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + niceness)
        )
    except OSError:
        return False
    _THREAD.lowered = True
    return True


_RUNNING: weakref.WeakSet = weakref.WeakSet()


def stop_all_jobs(timeout: float = 5.0) -> None:
    """Cancel every running job and wait for its thread, then for the steps cancelled jobs left
    running (at exit: a worker thread left inside torch while Python finalises aborts the
    process)."""
    from .._actions import join_background

    for job in list(_RUNNING):
        job.stop(timeout)
    join_background(timeout)


def _stop_at_exit() -> None:
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    if app is not None and not getattr(app, "_cytosyn_jobs_hooked", False):
        app.aboutToQuit.connect(stop_all_jobs)
        app._cytosyn_jobs_hooked = True


class Job(QObject):
    """One piece of long work. Signals: ``done(result)``, ``failed(exception)``,
    ``cancelled()``, ``finished()`` (always, last), all on the GUI thread."""

    progressed = Signal(int, int)
    done = Signal(object)
    failed = Signal(object)
    cancelled = Signal()
    finished = Signal()
    # from the worker thread (queued to the GUI thread, in order)
    _returned = Signal(object)
    _errored = Signal(object)
    _ended = Signal()

    def __init__(
        self,
        title: str,
        work: Work,
        total: int | None = None,
        show_progress: bool = True,
        min_update_s: float = 0.25,
    ) -> None:
        super().__init__()
        self.title = title
        self.total = total
        self.show_progress = show_progress
        self.min_update_s = min_update_s
        self._last_update = 0.0
        self.is_finished = False
        self.cancel_event = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None
        self.state = "pending"
        self._work = work
        self._pbar: Any = None
        self._thread: threading.Thread | None = None
        self.progressed.connect(self._on_progress)
        self._returned.connect(self._on_returned)
        self._errored.connect(self._on_errored)
        self._ended.connect(self._on_finished)

    def start(self) -> Job:
        """Start the worker thread and the progress bar; returns self."""
        from napari.utils import progress

        # A known total from the start: an indeterminate (animated) bar repaints the window
        # continuously, which costs the event loop far more than the work's own updates.
        if self.show_progress:
            self._pbar = progress(total=self.total or 0, desc=self.title)
        # A thread of our own rather than napari's thread pool: its priority is lowered, and
        # that must not outlive the job in a pool thread that other plugins use. Errors (a
        # Cancel included) come back as signals: the widget reports failures itself and treats
        # Cancelled as a normal outcome.
        self._thread = threading.Thread(target=self._run, name=f"cytosyn-{self.title}", daemon=True)
        self.state = "running"
        _RUNNING.add(self)
        _stop_at_exit()
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> bool:
        """Cancel and wait (without events) for the worker thread to end; True if it did."""
        self.cancel()
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        from .._actions import ensure_imports

        try:
            # never two threads importing diffusers at once; the first import (seconds) runs
            # before the priority drops, or a loaded machine starves it for tens of seconds
            ensure_imports()
            lower_thread_priority(JOB_NICENESS)
            result = self._work(self.progressed.emit, self.cancel_event)
        except BaseException as exc:
            self._errored.emit(exc)
        else:
            self._returned.emit(result)
        finally:
            self._ended.emit()

    def cancel(self) -> None:
        """Ask the work to stop; it raises ``Cancelled`` at its next batch boundary."""
        self.cancel_event.set()

    @property
    def running(self) -> bool:
        return self.state == "running"

    def _on_progress(self, done: int, total: int) -> None:
        if self._pbar is None:
            return
        # Every update repaints the window; a few per second is all a person can read.
        now = time.monotonic()
        if done < total and now - self._last_update < self.min_update_s:
            return
        self._last_update = now
        if self._pbar.total != total:
            self._pbar.total = total
        if done != self._pbar.n:
            self._pbar.update(done - self._pbar.n)

    def _on_returned(self, result: Any) -> None:
        self.result = result
        self.state = "done"
        self.done.emit(result)

    def _on_errored(self, exc: BaseException) -> None:
        from napari_cytosyn.sampling import Cancelled

        self.error = exc
        if isinstance(exc, Cancelled) or self.cancel_event.is_set():
            self.state = "cancelled"
            self.cancelled.emit()
        else:
            self.state = "failed"
            self.failed.emit(exc)

    def _on_finished(self) -> None:
        _RUNNING.discard(self)
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self.is_finished = True
        self.finished.emit()

    def wait(self, timeout_ms: int = 60_000) -> bool:
        """Process Qt events until the job has finished (tests, scripts); False on timeout."""
        from qtpy.QtWidgets import QApplication

        end = time.monotonic() + timeout_ms / 1000
        while not self.is_finished:
            if time.monotonic() > end:
                return False
            QApplication.processEvents()
            time.sleep(0.005)
        return True
