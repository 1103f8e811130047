"""The progress display: a bar with counts, rate and time left, a status line and Cancel.

It observes the viewer's :class:`~.._session.Session`: every dock of a viewer shows the same
job, and Cancel in any of them stops it.
"""

from __future__ import annotations

import time
from typing import Any

from qtpy.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from .._session import JobProgress, Session


class ProgressBox(QWidget):
    """Progress bar + Cancel + status line of a session's job (redrawn a few times a second:
    each repaint of the dock costs the GUI thread)."""

    def __init__(self, session: Session, min_update_s: float = 0.2) -> None:
        super().__init__()
        self.session = session
        self.min_update_s = min_update_s
        self._last = 0.0
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        self.bar = QProgressBar()
        self.bar.setRange(0, 1)
        self.bar.setValue(0)
        self.bar.setTextVisible(True)
        # The text changes with every update: it must never resize the dock (and the canvas).
        self.bar.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.bar.setFormat("idle")
        self.bar.setToolTip("Progress of the running job: done / total, rate and time left")
        row.addWidget(self.bar, 1)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the running job (within about a second)")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(session.cancel)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        # The status line: two lines, always, in a slot of fixed height without a layout of its
        # own. A QLabel's new text asks its parent to lay out again, and in a layout that climbs
        # to napari's main window: relaid out and composed again after every status text.
        self._status_slot = QWidget()
        self._status_slot.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.status = QLabel("Ready.", self._status_slot)
        self.status.setWordWrap(True)
        self.status.setToolTip("What the plugin did last")
        self._status_slot.setFixedHeight(2 * self.status.fontMetrics().lineSpacing() + 4)
        layout.addWidget(self._status_slot)
        session.job_changed.connect(self._on_job)

    def resizeEvent(self, event: Any) -> None:
        super().resizeEvent(event)
        self.status.setGeometry(self._status_slot.rect())

    def say(self, text: str) -> None:
        self.status.setText(text)
        self.status.setToolTip(text)  # the whole text, where two lines cut it

    def _on_job(self, job: JobProgress | None) -> None:
        now = time.monotonic()
        ending = job is None or job.outcome is not None
        starting = job is not None and job.done == 0
        if not (ending or starting or job.cancelling) and now - self._last < self.min_update_s:
            return
        self._last = now
        self.cancel_button.setEnabled(job is not None and job.outcome is None)
        if job is None:
            return
        total = max(job.total, 1)
        if job.outcome == "done":
            self._set_range_value(total, total)
            self.bar.setFormat(f"{job.title}: done".replace("%", "%%"))
            return
        self._set_range_value(total, min(job.done, total) if job.total else 0)
        text = job.text() if job.outcome is None else f"{job.title}: {job.outcome}"
        self.bar.setFormat(text.replace("%", "%%"))
        if job.outcome is None:
            self.say(job.text())

    def _set_range_value(self, total: int, value: int) -> None:
        # QProgressBar.setValue repaints at once (repaint(), not update()), and so does
        # setRange when the value falls outside the new range (a new job after a finished
        # one: reset()): in napari's window that composes the whole window, the canvas drawn
        # again included, inside this call (0.1-2.8 s of the GUI thread on a loaded machine).
        # With updates off the bar is only marked for the next paint (setUpdatesEnabled(True)
        # calls update()).
        self.bar.setUpdatesEnabled(False)
        self.bar.setRange(0, total)
        self.bar.setValue(value)
        self.bar.setUpdatesEnabled(True)

    def closeEvent(self, event: Any) -> None:
        self.session.job_changed.disconnect(self._on_job)
        super().closeEvent(event)
