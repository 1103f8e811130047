"""Python's cyclic garbage collector, run on the GUI thread only.

CPython runs a collection in whichever thread happens to allocate when a generation's count
passes its threshold. While a synthetic slide renders, the renderer, the job and the phase
cache's writer threads allocate most, so most collections ran there
(``tests/_qt/test_gc_thread.py``), and a collection frees every unreachable cycle it finds,
whatever it holds: the Qt and vispy objects of a closed viewer or a removed layer then had
their C++ destructors run off the GUI thread while it painted, which Qt does not support (it
fits the rare crashes seen in the test suite: a segfault while collecting at viewer close,
heap corruption, "free(): corrupted unsorted chunks").

While napari-cytosyn's dock or a live synthetic layer exists, automatic collection is off and
a timer on the GUI thread collects instead: every :data:`INTERVAL_MS`, the oldest generation
whose count passed the threshold CPython would have used (as pyqtgraph's ``GarbageCollector``
does for the same reason). Reference counting frees everything else at once, as before; the
timer runs whenever napari's event loop does. When the application quits, automatic
collection is switched back on.

Automatic collection is switched off with a first threshold of 0, not ``gc.disable()``:
dask's ``slice_array`` (which napari's slicing of dask arrays runs) is wrapped in a
``disable_gc`` that calls ``gc.enable()`` on exit whatever the state was, and would switch it
back on at every slice.
"""

from __future__ import annotations

import gc

from qtpy.QtCore import QObject, QTimer
from qtpy.QtWidgets import QApplication

#: How often the GUI thread looks at the collector's counts.
INTERVAL_MS = 100


class GuiThreadCollector(QObject):
    """Collects on a GUI-thread timer instead of automatically (see the module docstring)."""

    def __init__(self, app: QApplication) -> None:
        super().__init__(app)
        self.thresholds = gc.get_threshold()
        if self.thresholds[0] == 0:  # automatic collection was off already: CPython's default
            self.thresholds = (700, 10, 10)
        self.collections = [0, 0, 0]  # by generation, for tests and benchmarks
        self._timer = QTimer(self)
        self._timer.setInterval(INTERVAL_MS)
        self._timer.timeout.connect(self.collect)
        app.aboutToQuit.connect(self.stop)

    @property
    def active(self) -> bool:
        return self._timer.isActive()

    def start(self) -> None:
        gc.set_threshold(0, *self.thresholds[1:])
        self._timer.start()

    def stop(self) -> None:
        self._timer.stop()
        gc.set_threshold(*self.thresholds)

    def collect(self) -> int:
        """Collect the oldest generation past its threshold, if any; returns it (-1: none)."""
        counts = gc.get_count()
        for gen in (2, 1, 0):
            if counts[gen] > self.thresholds[gen]:
                gc.collect(gen)
                self.collections[gen] += 1
                return gen
        return -1


def collect_on_gui_thread() -> GuiThreadCollector | None:
    """Start the application's :class:`GuiThreadCollector` (once; call on the GUI thread).
    ``None`` without a ``QApplication``."""
    app = QApplication.instance()
    if app is None:
        return None
    collector = getattr(app, "_cytosyn_gc", None)
    if collector is None:
        collector = app._cytosyn_gc = GuiThreadCollector(app)
    if not collector.active:
        collector.start()
    return collector


def stop_collecting_on_gui_thread() -> None:
    """Automatic collection again (tests: a test without an event loop follows)."""
    app = QApplication.instance()
    collector = getattr(app, "_cytosyn_gc", None) if app is not None else None
    if collector is not None:
        collector.stop()
