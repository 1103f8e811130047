"""The Export group box: format and Export..."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox, QFormLayout, QGroupBox, QPushButton

from .. import _actions


class ExportBox(QGroupBox):
    """Export format and button (the widget connects it)."""

    def __init__(self) -> None:
        super().__init__("Export")
        form = QFormLayout(self)
        self.format_combo = QComboBox()
        self.format_combo.addItems(list(_actions.EXPORT_FORMATS))
        self.format_combo.setToolTip(
            "OME-Zarr (NGFF) for napari and cloud viewers, pyramidal OME-TIFF for QuPath and "
            "Bio-Formats"
        )
        form.addRow("Format", self.format_combo)
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip(
            "Write the selected synthetic or edited slide with its synthetic mask and provenance"
        )
        form.addRow(self.export_button)
