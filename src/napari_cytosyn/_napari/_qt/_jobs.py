"""Long work off the GUI thread: a callable run in a napari thread worker, with a napari
progress bar and a Cancel that stops it within one batch.

The callable takes ``progress(done, total)`` and ``cancel`` (a ``threading.Event``), the same
convention as the headless API (``generate_region``, ``CompositeSlide.inpaint``,
``SyntheticSlide.render_all``, the exporters), so the widget adds no logic of its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QObject, Signal

Work = Callable[[Callable[[int, int], None], threading.Event], Any]


class Job(QObject):
    """One piece of long work. Signals: ``done(result)``, ``failed(exception)``,
    ``cancelled()``, ``finished()`` (always, last), all on the GUI thread."""

    progressed = Signal(int, int)
    done = Signal(object)
    failed = Signal(object)
    cancelled = Signal()
    finished = Signal()

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
        self._worker: Any = None
        self.progressed.connect(self._on_progress)

    def start(self) -> Job:
        """Start the worker thread and the progress bar; returns self."""
        from napari.utils import progress
        from superqt.utils import create_worker

        # A known total from the start: an indeterminate (animated) bar repaints the window
        # continuously, which costs the event loop far more than the work's own updates.
        if self.show_progress:
            self._pbar = progress(total=self.total or 0, desc=self.title)
        # superqt's worker (napari's relays every error, a Cancel included, as a notification;
        # the widget reports failures itself and treats Cancelled as a normal outcome).
        self._worker = create_worker(self._run, _start_thread=False, _ignore_errors=True)
        self._worker.returned.connect(self._on_returned)
        self._worker.errored.connect(self._on_errored)
        self._worker.finished.connect(self._on_finished)
        self.state = "running"
        self._worker.start()
        return self

    def _run(self) -> Any:
        return self._work(self.progressed.emit, self.cancel_event)

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
