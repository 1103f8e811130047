"""The "Reference" group box: what a conditional model generates tissue like, and twins.

Inpainting with a conditional model is conditioned on the real tissue around the mask (default),
on a region drawn in a Shapes layer, or on nothing; "Synthetic twin of this slide" makes a lazy
synthetic slide with the selected real slide's layout, conditioned window by window on it, and
shows it over the real slide (same physical scale and origin). For an unconditional model the
controls, and the Sampling box's Guidance, are disabled with a tooltip saying why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QPushButton,
)

from ._layer_combo import LayerCombo

AROUND, REGION, NONE = "Tissue around the mask", "Region of a Shapes layer", "None"
GUIDANCE_TIP = "Classifier-free guidance scale (1: none); applies with a reference"
UNCONDITIONAL_TIP = (
    "{name} is unconditional: it takes no reference, so guidance and references do nothing. "
    "Choose a conditional model (cytosyn, pixcell-256, pixcell-1024) to use them."
)


class ReferenceBox(QGroupBox):
    """Reference controls (the widget connects the twin button and reads :meth:`reference`)."""

    def __init__(self, viewer: Any) -> None:
        super().__init__("Reference (tissue like here)")
        form = QFormLayout(self)
        self.mode_combo = QComboBox()
        self.mode_combo.addItems([AROUND, REGION, NONE])
        self.mode_combo.setToolTip(
            "What inpainting generates tissue like: the real tissue in a ring around each mask "
            "(interpolated across large masks), a region you draw, or nothing"
        )
        form.addRow("Condition on", self.mode_combo)
        self.region_combo = LayerCombo(viewer, ("Shapes",))
        self.region_combo.setToolTip(
            "A Shapes layer whose shapes' bounding box is the reference region"
        )
        form.addRow("Region layer", self.region_combo)
        self.ring_spin = QDoubleSpinBox()
        self.ring_spin.setRange(4.0, 5000.0)
        self.ring_spin.setValue(112.0)
        self.ring_spin.setSuffix(" µm")
        self.ring_spin.setToolTip("Width of the ring of real tissue around a mask")
        form.addRow("Ring width", self.ring_spin)
        self.twin_button = QPushButton("Synthetic twin of this slide")
        self.twin_button.setToolTip(
            "A synthetic slide with the selected real slide's size and tissue layout, each "
            "part conditioned on the real tissue there; shown over the real slide"
        )
        form.addRow(self.twin_button)
        self.note = QLabel()
        self.note.setWordWrap(True)
        form.addRow(self.note)
        self.mode_combo.currentTextChanged.connect(self._update_rows)
        self.conditional = False
        self._update_rows()

    def _update_rows(self, *args: Any) -> None:
        mode = self.mode_combo.currentText()
        self.region_combo.setEnabled(self.conditional and mode == REGION)
        self.ring_spin.setEnabled(self.conditional and mode == AROUND)

    def set_model(
        self,
        name: str,
        conditional: bool,
        tile_um: float,
        sampling: Any,
        guidance: float | None = None,
    ) -> None:
        """Enable the controls (and ``sampling``'s Guidance, set to the model's recommended
        ``guidance``) for a conditional model; disable them with a tooltip saying why for an
        unconditional one."""
        self.conditional = conditional
        tip = "" if conditional else UNCONDITIONAL_TIP.format(name=name)
        for w in (self.mode_combo, self.twin_button):
            w.setEnabled(conditional)
        self.setToolTip(tip)
        self.ring_spin.setValue(float(tile_um))
        sampling.guidance_spin.setEnabled(conditional)
        if conditional and guidance is not None:
            sampling.guidance_spin.setValue(float(guidance))
        sampling.guidance_spin.setToolTip(GUIDANCE_TIP if conditional else tip)
        self.note.setText(
            "" if conditional else f"{name} is unconditional: no reference, no guidance."
        )
        self._update_rows()

    def reference(self, image: Any) -> Any:
        """``CompositeSlide.inpaint(reference=...)`` for slide layer ``image``: ``"none"``,
        ``"auto"``, or the drawn region (a :class:`~.._masks.DrawnMask`, whose bounding box
        the job rasterises)."""
        mode = self.mode_combo.currentText()
        if not self.conditional or mode == NONE:
            return "none"
        if mode == AROUND:
            # "auto": a model the registry calls conditional but whose weights are not (an
            # older embedded model) inpaints unconditioned; the edit record says which
            return "auto"
        shapes = self.region_combo.layer()
        if shapes is None or not len(shapes.data):
            raise ValueError("draw the reference region in a Shapes layer and choose it")
        from .._masks import read_mask

        return read_mask(shapes, image)

    def ring_um(self) -> float:
        return float(self.ring_spin.value())


def model_conditioning(widget: Any) -> tuple[str, bool, float, float | None]:
    """``(name, conditional, tile um, recommended guidance)`` of the widget's model choice,
    without loading it."""
    override = widget.models.override
    if override is not None:
        from napari_cytosyn.sampling.conditioning import is_conditional

        name = str(getattr(override, "name", "the model"))
        return name, is_conditional(override), float(override.tile_px * override.mpp), None
    name = widget.model_box.model_combo.currentText()
    try:
        from napari_cytosyn.models import get_info

        info = get_info(name)
    except Exception:  # generic diffusers models and unknown names: unconditional
        return name, False, 112.0, None
    # mask-conditioned models (the test kit's) take a layout, not a reference of tissue
    conditional = info.conditioning is not None and "mask" not in info.conditioning.lower()
    if info.backend == "embedded":  # the shipped weights decide: v2 has a conditioning head
        conditional = embedded_takes_reference()
    guidance = info.defaults.get("guidance_conditioned")
    return name, conditional, float(info.tile_px * info.mpp), guidance


def embedded_takes_reference() -> bool:
    """Whether the shipped embedded weights have a conditioning head (a file check, no load)."""
    from napari_cytosyn.models.embedded import WEIGHTS_DIR, embedded_config

    try:
        has_descriptor = embedded_config().get("descriptor") is not None
    except (FileNotFoundError, ValueError):
        return False
    return has_descriptor and (WEIGHTS_DIR / "cond" / "descriptor_mlp.safetensors").is_file()


def conditioned_settings(widget: Any, settings: Any) -> Any:
    """The registry's guidance interval for the chosen model (its scale is the control's)."""
    name = widget.model_box.model_combo.currentText()
    if widget.models.override is not None:
        return settings
    try:
        from napari_cytosyn.models import get_info

        interval = get_info(name).defaults.get("guidance_interval")
    except Exception:
        return settings
    return settings if interval is None else settings.replace(guidance_interval=tuple(interval))


def twin_store(cache_dir: Path, real_path: str | Path, seed: int) -> Path:
    """A new store path for a twin of ``real_path`` in the cache folder."""
    stem = Path(real_path).name.split(".")[0]
    base = Path(cache_dir) / "twins" / f"twin-of-{stem}-seed{seed}.cytosyn"
    path, n = base, 2
    while path.exists():
        path = base.with_name(f"twin-of-{stem}-seed{seed}-{n}.cytosyn")
        n += 1
    return path


def twin_work(real_path: str, store: Path, get_model: Any, settings: Any, chunk_px: int) -> Any:
    """Job body: create the twin (embedding the real slide's tissue grid, batched)."""

    def work(progress: Any, cancel: Any) -> Any:
        from napari_cytosyn.slide.reference import progress_scope
        from napari_cytosyn.slide.synthetic import SyntheticSlide, cancel_scope

        model = get_model()
        store.parent.mkdir(parents=True, exist_ok=True)
        # Cancel stops the embedding between two batches; progress counts embedded cells
        with cancel_scope(cancel), progress_scope(progress):
            return SyntheticSlide.create(
                store, model, None, None, settings, chunk_px=chunk_px, reference=real_path
            )

    return work


def link_to(twin_layer: Any, real_layer: Any) -> None:
    """Put the twin where the real slide is: same origin (the scales are both physical)."""
    twin_layer.translate = tuple(real_layer.translate)
    twin_layer.metadata["twin_of"] = real_layer.name
