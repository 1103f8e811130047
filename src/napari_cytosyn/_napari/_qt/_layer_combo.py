"""A combo box of the viewer's layers of some types, kept in sync with the viewer."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QComboBox, QWidget


class LayerCombo(QComboBox):
    """Lists the layers whose type name is in ``types``; the newest is selected by default."""

    def __init__(self, viewer: Any, types: tuple[str, ...], parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer, self.types = viewer, types
        events = viewer.layers.events
        for ev in (events.inserted, events.removed, events.reordered):
            ev.connect(self.refresh)
        events.inserted.connect(self._watch_name)
        for layer in viewer.layers:
            layer.events.name.connect(self.refresh)
        self.refresh()

    def _watch_name(self, event: Any) -> None:
        event.value.events.name.connect(self.refresh)

    def refresh(self, event: Any = None) -> None:
        current = self.currentText()
        names = [ly.name for ly in self.viewer.layers if type(ly).__name__ in self.types]
        self.blockSignals(True)
        self.clear()
        self.addItems(names)
        if current in names:
            self.setCurrentText(current)
        elif names:
            self.setCurrentIndex(len(names) - 1)
        self.blockSignals(False)
        # One signal when the choice changed (the list was rebuilt with signals blocked).
        if self.currentText() != current:
            self.currentTextChanged.emit(self.currentText())

    def layer(self) -> Any | None:
        """The selected layer (``None`` when the viewer has none of these types)."""
        name = self.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None  # noqa: SIM401 (LayerList has no .get)

    def select(self, layer: Any) -> None:
        self.refresh()
        self.setCurrentText(layer.name)
