"""The Model group box: which model, from where, on which device and at which precision."""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
)

from .._config import WidgetConfig

GENERIC = "diffusers"  # picker entry for any diffusers folder / hub id
GENERIC_MPP = 0.5  # um/px assumed for generic diffusers models


class ModelBox(QGroupBox):
    """Model picker, source, device, precision and cache folder; ``changed`` when any of the
    remembered values changes (the widget saves them)."""

    changed = Signal()
    model_changed = Signal()

    def __init__(self, config: WidgetConfig) -> None:
        super().__init__("Model")
        from napari_cytosyn.models import available
        from napari_cytosyn.sampling.settings import AUTOCAST

        form = QFormLayout(self)
        self.model_combo = QComboBox()
        self.model_combo.addItems([info.name for info in available()] + [GENERIC])
        _set_if_present(self.model_combo, config.model)
        self.model_combo.setToolTip(
            "The diffusion model that generates tissue; its licence and access are shown below"
        )
        self.model_combo.currentTextChanged.connect(self._on_model_changed)
        form.addRow("Model", self.model_combo)

        self.source_edit = QLineEdit(config.source)
        self.source_edit.setPlaceholderText("default source (hub id or local folder)")
        self.source_edit.setToolTip(
            "Where the model's weights come from: a Hugging Face hub id or a local folder; "
            "empty for the registry's default"
        )
        self.source_edit.editingFinished.connect(self._on_model_changed)
        browse = QPushButton("Folder…")
        browse.setToolTip("Choose a local folder holding the model")
        browse.clicked.connect(self._choose_model_folder)
        row = QHBoxLayout()
        row.addWidget(self.source_edit)
        row.addWidget(browse)
        form.addRow("Source", row)

        self.model_info = QLabel()
        self.model_info.setWordWrap(True)
        self.model_info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.model_info.setToolTip("Licence, citation and access of the chosen model")
        form.addRow(self.model_info)

        self.vae_edit = QLineEdit()
        self.vae_edit.setPlaceholderText("the model's default autoencoder")
        self.vae_edit.setToolTip(
            "CytoSyn and PixCell: hub id or local folder of the VAE to use instead of the "
            "model's own. PixCell's repositories hold no VAE weights; its default is the "
            "SD3.5-large VAE (gated: request access on Hugging Face, or point at a local copy)"
        )
        form.addRow("VAE", self.vae_edit)

        self.trust_remote_code = QCheckBox("Trust remote code (runs Python shipped with the model)")
        self.trust_remote_code.setToolTip(
            "Only for models whose repository you trust; off by default and not remembered."
        )
        form.addRow(self.trust_remote_code)

        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", *_devices()])
        _set_if_present(self.device_combo, config.device)
        self.device_combo.setToolTip("auto: the first GPU if there is one, else the CPU")
        self.device_combo.currentTextChanged.connect(self.changed)
        form.addRow("Device", self.device_combo)

        self.autocast_combo = QComboBox()
        self.autocast_combo.addItems(list(AUTOCAST))
        _set_if_present(self.autocast_combo, config.autocast)
        self.autocast_combo.setToolTip(
            "auto: bfloat16 where the CPU/GPU computes it natively (about 1.6x faster on the "
            "embedded model), else the model's float32\noff: always the model's dtype\n"
            "bfloat16: always bfloat16 (emulated, slower, without native support)\n"
            "A synthetic slide keeps the precision it was created with."
        )
        self.autocast_combo.currentTextChanged.connect(self.changed)
        form.addRow("Precision", self.autocast_combo)

        self.cache_edit = QLineEdit(str(config.cache_path()))
        self.cache_edit.setToolTip("Edit stores and synthetic slides are kept here")
        self.cache_edit.editingFinished.connect(self.changed)
        cache_browse = QPushButton("Browse…")
        cache_browse.setToolTip("Choose the folder for edit stores and synthetic slides")
        cache_browse.clicked.connect(self._choose_cache_folder)
        row = QHBoxLayout()
        row.addWidget(self.cache_edit)
        row.addWidget(cache_browse)
        form.addRow("Cache folder", row)
        self.update_info()

    # -- values -----------------------------------------------------------------------

    def model_name(self) -> str:
        """The ``load_model`` name for the picker and source fields."""
        name, source = self.model_combo.currentText(), self.source_edit.text().strip()
        if name == GENERIC:
            if not source:
                raise ValueError("enter a hub id or choose a folder for a generic diffusers model")
            return f"diffusers:{source}"
        return f"{name}:{source}" if source and name != "cytosyn-tiny" else name

    def vae(self) -> str | None:
        """The VAE field for models that take one (``None``: the model's default)."""
        text = self.vae_edit.text().strip()
        return text if text and self.vae_edit.isEnabled() else None

    def mpp(self) -> float:
        """um/px at which the chosen model generates."""
        from napari_cytosyn.models import get_info

        name = self.model_combo.currentText()
        return GENERIC_MPP if name == GENERIC else float(get_info(name).mpp)

    def recommended_steps(self) -> int:
        """The registry's recommended steps for the chosen model (30 when it has none)."""
        from napari_cytosyn.models import get_info

        name = self.model_combo.currentText()
        if name == GENERIC:
            return 30
        return int(get_info(name).defaults.get("steps", 30))

    def update_info(self) -> None:
        from napari_cytosyn.models import get_info

        name = self.model_combo.currentText()
        takes_vae = name != GENERIC and get_info(name).backend in ("cytosyn", "pixcell")
        self.vae_edit.setEnabled(takes_vae)
        if name == GENERIC:
            self.model_info.setText(
                "Any unconditional latent diffusion model in diffusers format: enter its hub id "
                "or choose its folder above. Check its licence on its model card."
            )
            return
        info = get_info(name)
        gate = "gated (request access first)" if info.gated else "open"
        self.model_info.setText(f"{info.notice}\nAccess: {gate}.")

    def _on_model_changed(self, *args: Any) -> None:
        self.update_info()
        self.model_changed.emit()
        self.changed.emit()

    def _choose_model_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model folder")
        if folder:
            self.source_edit.setText(folder)
            self._on_model_changed()

    def _choose_cache_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Cache folder")
        if folder:
            self.cache_edit.setText(folder)
            self.changed.emit()


def _set_if_present(combo: QComboBox, text: str) -> None:
    if text in [combo.itemText(i) for i in range(combo.count())]:
        combo.setCurrentText(text)


def _devices() -> list[str]:
    from napari_cytosyn.models.device import available_devices

    return available_devices()
