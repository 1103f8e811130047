"""The Edits group box: the edits of the selected slide, newest last, with undo and remove."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
)


def describe_edit(index: int, record: dict[str, Any]) -> str:
    """One line for an edit record: number, time, area, model and recipe."""
    recipe = record.get("recipe", {})
    settings = recipe.get("core", {})
    model = recipe.get("model", {}).get("name", "?")
    when = str(record.get("time_utc", "")).replace("T", " ").replace("+00:00", " UTC")
    return (
        f"{index + 1}. {when} · {record.get('mask_px', 0):,} px · {model} · "
        f"{settings.get('sampler', '?')} {settings.get('steps', '?')} steps, "
        f"seed {settings.get('seed', '?')}"
    )


class EditsBox(QGroupBox):
    """Lists the edits of one composite (``show_edits(composite)``); asks the widget to undo, remove
    or open a store through its signals."""

    undo_requested = Signal()
    remove_requested = Signal(int)
    open_requested = Signal()

    def __init__(self) -> None:
        super().__init__("Edits")
        self.composite: Any = None
        layout = QVBoxLayout(self)
        self.store_label = QLabel("No edits in this slide.")
        self.store_label.setWordWrap(True)
        self.store_label.setToolTip("The edit store that keeps this slide's edits")
        layout.addWidget(self.store_label)
        self.edit_list = QListWidget()
        self.edit_list.setToolTip("Edits of the selected slide, oldest first (recipe and time)")
        self.edit_list.setMaximumHeight(110)
        self.edit_list.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.edit_list.setWordWrap(True)  # a long recipe wraps instead of scrolling sideways
        self.edit_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        layout.addWidget(self.edit_list)
        row = QHBoxLayout()
        self.undo_button = QPushButton("Undo last")
        self.undo_button.setToolTip("Remove the newest edit: its pixels show the real slide again")
        self.undo_button.clicked.connect(self.undo_requested)
        self.remove_button = QPushButton("Remove selected")
        self.remove_button.setToolTip("Remove the edit selected in the list; the others stay")
        self.remove_button.clicked.connect(self._remove_selected)
        self.open_button = QPushButton("Open edit store…")
        self.open_button.setToolTip(
            "Reopen the edits of an earlier session (a .cytosyn edit store); new sessions start "
            "without edits"
        )
        self.open_button.clicked.connect(self.open_requested)
        for b in (self.undo_button, self.remove_button, self.open_button):
            row.addWidget(b)
        layout.addLayout(row)
        self.show_edits(None)

    def show_edits(self, composite: Any) -> None:
        """List the edits of ``composite`` (``None``: a slide without edits)."""
        self.composite = composite
        self.edit_list.clear()
        edits = composite.edits if composite is not None else []
        for i, record in enumerate(edits):
            self.edit_list.addItem(QListWidgetItem(describe_edit(i, record)))
        if composite is None:
            self.store_label.setText("No edits in this slide.")
        else:
            self.store_label.setText(f"{len(edits)} edit(s) in edit store {composite.path.name}")
            self.store_label.setToolTip(f"The edit store that keeps these edits: {composite.path}")
        self.update_buttons(True)

    def update_buttons(self, idle: bool) -> None:
        has = self.composite is not None and bool(self.composite.edits)
        self.undo_button.setEnabled(idle and has)
        self.remove_button.setEnabled(idle and has)
        self.open_button.setEnabled(idle)

    def _remove_selected(self) -> None:
        row = self.edit_list.currentRow()
        if row >= 0:
            self.remove_requested.emit(row)
