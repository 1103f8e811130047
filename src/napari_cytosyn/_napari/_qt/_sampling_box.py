"""The Sampling group box: seed, steps, guidance and sampler of new work."""

from __future__ import annotations

import random
from typing import Any

from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QPushButton,
    QSpinBox,
)

SEED_MAX = 2**31 - 1


class SamplingBox(QGroupBox):
    """Sampler controls; :meth:`settings` turns them into ``SamplerSettings``."""

    def __init__(self, steps: int = 30) -> None:
        super().__init__("Sampling")
        from napari_cytosyn.sampling import SAMPLERS

        form = QFormLayout(self)
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, SEED_MAX)
        self.seed_spin.setValue(0)
        self.seed_spin.setToolTip("The same seed and settings give the same pixels")
        new_seed = QPushButton("Random")
        new_seed.setToolTip("Draw a new random seed")
        new_seed.clicked.connect(self.random_seed)
        row = QHBoxLayout()
        row.addWidget(self.seed_spin)
        row.addWidget(new_seed)
        form.addRow("Seed", row)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 1000)
        self.steps_spin.setValue(steps)
        self.steps_spin.setToolTip("Denoising steps: more is slower and usually finer")
        form.addRow("Steps", self.steps_spin)
        self.guidance_spin = QDoubleSpinBox()
        self.guidance_spin.setRange(0.0, 20.0)
        self.guidance_spin.setSingleStep(0.25)
        self.guidance_spin.setValue(1.0)
        self.guidance_spin.setToolTip("Classifier-free guidance scale (1: none)")
        form.addRow("Guidance", self.guidance_spin)
        self.sampler_combo = QComboBox()
        self.sampler_combo.addItems(list(SAMPLERS))
        self.sampler_combo.setToolTip("The ODE/SDE solver that runs the denoising steps")
        form.addRow("Sampler", self.sampler_combo)

    def settings(self, autocast: str = "auto") -> Any:
        """``SamplerSettings`` from the controls."""
        from napari_cytosyn.sampling import SamplerSettings

        return SamplerSettings(
            sampler=self.sampler_combo.currentText(),
            steps=int(self.steps_spin.value()),
            guidance=float(self.guidance_spin.value()),
            seed=int(self.seed_spin.value()),
            autocast=autocast,
        )

    def random_seed(self) -> int:
        """Put a new random seed in the seed box and return it."""
        seed = random.SystemRandom().randrange(SEED_MAX)
        self.seed_spin.setValue(seed)
        return seed
