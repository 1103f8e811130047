"""The "Synthetic slide" group box: size, New synthetic slide, Render all."""

from __future__ import annotations

from qtpy.QtWidgets import QFormLayout, QGroupBox, QHBoxLayout, QLabel, QPushButton, QSpinBox


class SyntheticBox(QGroupBox):
    """Size of a new synthetic slide and its two buttons (the widget connects them)."""

    def __init__(self) -> None:
        super().__init__("Synthetic slide")
        form = QFormLayout(self)
        self.width_spin = QSpinBox()
        self.height_spin = QSpinBox()
        for spin, what in ((self.width_spin, "Width"), (self.height_spin, "Height")):
            spin.setRange(64, 10_000_000)
            spin.setValue(8192)
            spin.setSuffix(" px")
            spin.setToolTip(f"{what} of a new synthetic slide, in px at the model's resolution")
        row = QHBoxLayout()
        row.addWidget(self.width_spin)
        row.addWidget(QLabel("x"))
        row.addWidget(self.height_spin)
        form.addRow("Size", row)
        self.mpp_label = QLabel()
        self.mpp_label.setToolTip("Slides are generated at the model's own resolution")
        form.addRow("Resolution", self.mpp_label)
        self.new_slide_button = QPushButton("New synthetic slide")
        self.new_slide_button.setToolTip(
            "Create a slide of this size (instant) and render it where you look"
        )
        self.render_all_button = QPushButton("Render all")
        self.render_all_button.setToolTip(
            "Generate every chunk of the selected synthetic slide in the background (asks "
            "first when it is large)"
        )
        row = QHBoxLayout()
        row.addWidget(self.new_slide_button)
        row.addWidget(self.render_all_button)
        form.addRow(row)
        self.view_note = QLabel()
        self.view_note.setWordWrap(True)
        self.view_note.setToolTip(
            "What is generated at the current zoom: zoomed far out only the middle of the view "
            "is generated; grey checks mark tissue not generated yet"
        )
        form.addRow(self.view_note)
