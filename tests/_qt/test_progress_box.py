"""The progress display never paints inside a job's signal: its bar is repainted with the rest of
the window on the next event-loop turn (a synchronous repaint composes napari's whole window)."""

from __future__ import annotations

from qtpy.QtCore import QEvent, QObject, QPoint

from napari_cytosyn._napari._qt._progress_box import ProgressBox
from napari_cytosyn._napari._session import Session


class _Paints(QObject):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def eventFilter(self, obj, event) -> bool:
        if event.type() == QEvent.Type.Paint:
            self.count += 1
        return False


def test_job_updates_paint_the_bar_later_not_inside_the_signal(qtbot):
    session = Session()
    box = ProgressBox(session, min_update_s=0.0)
    qtbot.addWidget(box)
    box.show()
    qtbot.waitExposed(box)
    paints = _Paints()
    box.bar.installEventFilter(paints)
    qtbot.wait(50)

    def paints_later(step) -> None:
        before = paints.count
        step()
        assert paints.count == before  # nothing painted inside the job's signal
        qtbot.waitUntil(lambda: paints.count > before, timeout=2000)  # ... but soon after

    for step in (
        lambda: session.begin_job("Render", unit="chunks", total=10),
        lambda: session.progress(4, 10),
        lambda: session.end_job("done"),
    ):
        paints_later(step)
    assert (box.bar.value(), box.bar.maximum()) == (10, 10)
    assert box.bar.format() == "Render: done"

    # A shorter job next: its range no longer holds the bar's value (10), which made
    # QProgressBar.setRange reset the bar with a synchronous repaint.
    paints_later(lambda: session.begin_job("Export", unit="chunks", total=3))
    assert (box.bar.value(), box.bar.maximum()) == (0, 3)


class _LayoutRequests(QObject):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def eventFilter(self, obj, event) -> bool:
        if event.type() == QEvent.Type.LayoutRequest:
            self.count += 1
        return False


def test_a_new_status_text_lays_out_nothing_around_the_box(qtbot):
    # In napari a layout request climbs to the main window, which is laid out and composed
    # again: one more window compose after every status text.
    from qtpy.QtWidgets import QVBoxLayout, QWidget

    parent = QWidget()
    qtbot.addWidget(parent)
    box = ProgressBox(Session())
    QVBoxLayout(parent).addWidget(box)
    parent.resize(300, 200)
    parent.show()
    qtbot.waitExposed(parent)
    qtbot.wait(50)
    requests = _LayoutRequests()
    parent.installEventFilter(requests)
    for text in ("Render all: 1 / 400 chunks", "a longer text " * 20, "Done."):
        box.say(text)
        qtbot.wait(20)
        assert box.status.text() == text
    assert requests.count == 0
    # The status line spans the box's width below the bar, and follows resizes.
    widths = []
    for width in (300, 220):
        parent.resize(width, 200)
        qtbot.waitUntil(lambda w=width: parent.width() == w and box.status.width() == box.width())
        widths.append(box.width())
        top = box.status.mapTo(box, QPoint(0, 0)).y()
        assert top > box.bar.geometry().bottom() and top + box.status.height() <= box.height()
        assert box.status.height() >= 2 * box.status.fontMetrics().lineSpacing()
    assert widths[1] < widths[0]
