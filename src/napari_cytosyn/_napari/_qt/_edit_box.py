"""The "Edit a slide" group box: which slide and mask, Inpaint and Synthesize region."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import QFormLayout, QGroupBox, QHBoxLayout, QPushButton

from ._layer_combo import LayerCombo


class EditBox(QGroupBox):
    """Slide and mask layer pickers and the two edit buttons (the widget connects them)."""

    def __init__(self, viewer: Any) -> None:
        super().__init__("Edit a slide")
        form = QFormLayout(self)
        self.image_combo = LayerCombo(viewer, ("Image",))
        self.image_combo.setToolTip(
            "The slide to edit, render or export: a real slide, its edited layer or a "
            "synthetic slide"
        )
        form.addRow("Slide layer", self.image_combo)
        self.mask_combo = LayerCombo(viewer, ("Shapes", "Labels"))
        self.mask_combo.setToolTip(
            "Where to synthesize: Shapes (rectangles, polygons, ellipses) or a painted Labels layer"
        )
        form.addRow("Mask layer", self.mask_combo)
        self.inpaint_button = QPushButton("Inpaint")
        self.inpaint_button.setToolTip(
            "Synthesize tissue inside the mask that blends with the slide around it; the result "
            "appears in an edited layer, the slide file is never changed"
        )
        self.region_button = QPushButton("Synthesize region")
        self.region_button.setToolTip("Fill each drawn rectangle with new tissue (no context)")
        row = QHBoxLayout()
        row.addWidget(self.inpaint_button)
        row.addWidget(self.region_button)
        form.addRow(row)
