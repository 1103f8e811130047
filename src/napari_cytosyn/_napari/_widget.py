"""The CytoSyn dock widget: pick a model and sampler, then inpaint, synthesize, render, export.

A thin Qt shell. What the buttons do lives in :mod:`._actions` (plain functions over slides and
models), layers come from :mod:`._layers`, and every long piece of work runs in a
:class:`~._qt._jobs.Job` (a napari thread worker with a progress bar and a Cancel).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from . import _actions, _layers
from ._config import WidgetConfig, load_config, save_config
from ._masks import mask_from_layer, world_rectangles
from ._qt._jobs import Job

GENERIC = "diffusers"  # picker entry for any diffusers folder / hub id
SEED_MAX = 2**31 - 1


class _LayerCombo(QComboBox):
    """A combo box listing the viewer's layers of some types, kept in sync with the viewer."""

    def __init__(self, viewer: Any, types: tuple[str, ...], parent: QWidget | None = None):
        super().__init__(parent)
        self.viewer, self.types = viewer, types
        events = viewer.layers.events
        for ev in (events.inserted, events.removed, events.reordered):
            ev.connect(self.refresh)
        self.refresh()

    def refresh(self, event: Any = None) -> None:
        current = self.currentText()
        self.blockSignals(True)
        self.clear()
        names = [ly.name for ly in self.viewer.layers if type(ly).__name__ in self.types]
        self.addItems(names)
        if current in names:
            self.setCurrentText(current)
        elif names:
            self.setCurrentIndex(len(names) - 1)
        self.blockSignals(False)

    def layer(self) -> Any | None:
        name = self.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None  # noqa: SIM401 (LayerList has no .get)

    def select(self, layer: Any) -> None:
        self.refresh()
        self.setCurrentText(layer.name)


class CytoSynWidget(QWidget):
    """Dock widget of napari-cytosyn (see the user guide, docs/user-guide/)."""

    def __init__(self, napari_viewer: Any, config_path: str | None = None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self._config_path = config_path
        self.config = load_config(config_path)
        self.models = _actions.ModelProvider()
        self.jobs: list[Job] = []
        self.views: dict[int, _layers.LazySlideView] = {}  # id(layer) -> live view
        self._composite_layers: dict[str, Any] = {}  # real slide path -> composite layer
        self._n_regions = 0
        # 256 px chunks: a fresh view's first chunk lands sooner (docs/sampling.md, lazy mode)
        self.chunk_px = 256  # chunk side of new synthetic slides (px)

        # Long texts wrap instead of widening the dock (the canvas keeps its room).
        self.setMaximumWidth(460)
        layout = QVBoxLayout(self)
        layout.addWidget(self._model_box())
        layout.addWidget(self._sampling_box())
        layout.addWidget(self._edit_box())
        layout.addWidget(self._synthetic_box())
        export_box = self._export_box()
        if export_box is not None:
            layout.addWidget(export_box)
        row = QHBoxLayout()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the running work after the batch in progress")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        self.status = QLabel("Ready.")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        layout.addStretch(1)
        self._update_model_info()

    # -- building ---------------------------------------------------------------------------

    def _model_box(self) -> QGroupBox:
        from napari_cytosyn.models import available

        box = QGroupBox("Model")
        form = QFormLayout(box)
        self.model_combo = QComboBox()
        self.model_combo.addItems([info.name for info in available()] + [GENERIC])
        if self.config.model in [
            self.model_combo.itemText(i) for i in range(self.model_combo.count())
        ]:
            self.model_combo.setCurrentText(self.config.model)
        self.model_combo.currentTextChanged.connect(self._on_model_changed)
        form.addRow("Model", self.model_combo)

        self.source_edit = QLineEdit(self.config.source)
        self.source_edit.setPlaceholderText("default source (hub id or local folder)")
        self.source_edit.editingFinished.connect(self._on_model_changed)
        browse = QPushButton("Folder…")
        browse.clicked.connect(self._choose_model_folder)
        row = QHBoxLayout()
        row.addWidget(self.source_edit)
        row.addWidget(browse)
        form.addRow("Source", row)

        self.model_info = QLabel()
        self.model_info.setWordWrap(True)
        self.model_info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        form.addRow(self.model_info)

        self.trust_remote_code = QCheckBox("Trust remote code (runs Python shipped with the model)")
        self.trust_remote_code.setToolTip(
            "Only for models whose repository you trust; off by default and not remembered."
        )
        form.addRow(self.trust_remote_code)

        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", *_devices()])
        if self.config.device in [
            self.device_combo.itemText(i) for i in range(self.device_combo.count())
        ]:
            self.device_combo.setCurrentText(self.config.device)
        self.device_combo.currentTextChanged.connect(self._save_config)
        form.addRow("Device", self.device_combo)

        from napari_cytosyn.sampling.settings import AUTOCAST

        self.autocast_combo = QComboBox()
        self.autocast_combo.addItems(list(AUTOCAST))
        if self.config.autocast in AUTOCAST:
            self.autocast_combo.setCurrentText(self.config.autocast)
        self.autocast_combo.setToolTip(
            "auto: bfloat16 where the CPU/GPU computes it natively (about 1.6x faster on the "
            "embedded model), else the model's float32\noff: always the model's dtype\n"
            "bfloat16: always bfloat16 (emulated, slower, without native support)\n"
            "A synthetic slide keeps the precision it was created with."
        )
        self.autocast_combo.currentTextChanged.connect(self._save_config)
        form.addRow("Precision", self.autocast_combo)

        self.cache_edit = QLineEdit(str(self.config.cache_path()))
        self.cache_edit.setToolTip("Edit stores and synthetic slides are kept here")
        self.cache_edit.editingFinished.connect(self._save_config)
        cache_browse = QPushButton("Browse…")
        cache_browse.clicked.connect(self._choose_cache_folder)
        row = QHBoxLayout()
        row.addWidget(self.cache_edit)
        row.addWidget(cache_browse)
        form.addRow("Cache folder", row)
        return box

    def _sampling_box(self) -> QGroupBox:
        from napari_cytosyn.sampling import SAMPLERS

        box = QGroupBox("Sampling")
        form = QFormLayout(box)
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, SEED_MAX)
        self.seed_spin.setValue(0)
        new_seed = QPushButton("Random")
        new_seed.setToolTip("Draw a new random seed")
        new_seed.clicked.connect(self.random_seed)
        row = QHBoxLayout()
        row.addWidget(self.seed_spin)
        row.addWidget(new_seed)
        form.addRow("Seed", row)
        self.steps_spin = QSpinBox()
        self.steps_spin.setRange(1, 1000)
        self.steps_spin.setValue(self._recommended_steps())
        form.addRow("Steps", self.steps_spin)
        self.guidance_spin = QDoubleSpinBox()
        self.guidance_spin.setRange(0.0, 20.0)
        self.guidance_spin.setSingleStep(0.25)
        self.guidance_spin.setValue(1.0)
        form.addRow("Guidance", self.guidance_spin)
        self.sampler_combo = QComboBox()
        self.sampler_combo.addItems(list(SAMPLERS))
        form.addRow("Sampler", self.sampler_combo)
        return box

    def _edit_box(self) -> QGroupBox:
        box = QGroupBox("Edit a slide")
        form = QFormLayout(box)
        self.image_combo = _LayerCombo(self.viewer, ("Image",))
        form.addRow("Slide layer", self.image_combo)
        self.mask_combo = _LayerCombo(self.viewer, ("Shapes", "Labels"))
        self.mask_combo.setToolTip(
            "Shapes (rectangles, polygons, ellipses) or a painted Labels layer"
        )
        form.addRow("Mask layer", self.mask_combo)
        self.inpaint_button = QPushButton("Inpaint")
        self.inpaint_button.setToolTip(
            "Synthesize tissue inside the mask that blends with the slide around it; the result "
            "appears in a composite layer, the slide file is never changed"
        )
        self.inpaint_button.clicked.connect(self.inpaint)
        self.region_button = QPushButton("Synthesize region")
        self.region_button.setToolTip("Fill each drawn rectangle with new tissue (no context)")
        self.region_button.clicked.connect(self.synthesize_region)
        row = QHBoxLayout()
        row.addWidget(self.inpaint_button)
        row.addWidget(self.region_button)
        form.addRow(row)
        return box

    def _synthetic_box(self) -> QGroupBox:
        box = QGroupBox("Synthetic slide")
        form = QFormLayout(box)
        self.width_spin = QSpinBox()
        self.width_spin.setRange(64, 10_000_000)
        self.width_spin.setValue(8192)
        self.width_spin.setSuffix(" px")
        self.height_spin = QSpinBox()
        self.height_spin.setRange(64, 10_000_000)
        self.height_spin.setValue(8192)
        self.height_spin.setSuffix(" px")
        row = QHBoxLayout()
        row.addWidget(self.width_spin)
        row.addWidget(QLabel("x"))
        row.addWidget(self.height_spin)
        form.addRow("Size", row)
        self.mpp_label = QLabel()
        self.mpp_label.setToolTip("Slides are generated at the model's own resolution")
        form.addRow("Resolution", self.mpp_label)
        self.new_slide_button = QPushButton("New synthetic slide")
        self.new_slide_button.clicked.connect(self.new_synthetic_slide)
        self.render_all_button = QPushButton("Render all")
        self.render_all_button.setToolTip(
            "Generate every chunk of the selected synthetic slide in the background"
        )
        self.render_all_button.clicked.connect(self.render_all)
        row = QHBoxLayout()
        row.addWidget(self.new_slide_button)
        row.addWidget(self.render_all_button)
        form.addRow(row)
        return box

    def _export_box(self) -> QGroupBox | None:
        try:
            from napari_cytosyn import export  # noqa: F401
        except ImportError:  # exporters absent: no button rather than a fake one
            return None
        box = QGroupBox("Export")
        form = QFormLayout(box)
        self.format_combo = QComboBox()
        self.format_combo.addItems(list(_actions.EXPORT_FORMATS))
        form.addRow("Format", self.format_combo)
        self.export_button = QPushButton("Export…")
        self.export_button.setToolTip(
            "Write the selected synthetic or edited slide with its synthetic mask and provenance"
        )
        self.export_button.clicked.connect(lambda: self.export())
        form.addRow(self.export_button)
        return box

    # -- settings ---------------------------------------------------------------------------

    def _on_model_changed(self, *args: Any) -> None:
        self.models = _actions.ModelProvider() if self.models.override is None else self.models
        self._update_model_info()
        self.steps_spin.setValue(self._recommended_steps())
        self._save_config()

    def _recommended_steps(self) -> int:
        """The registry's recommended steps for the chosen model (30 when it has none)."""
        from napari_cytosyn.models import get_info

        name = self.model_combo.currentText()
        if name == GENERIC:
            return 30
        return int(get_info(name).defaults.get("steps", 30))

    def _update_model_info(self) -> None:
        from napari_cytosyn.models import get_info

        name = self.model_combo.currentText()
        if name == GENERIC:
            self.model_info.setText(
                "Any unconditional latent diffusion model in diffusers format: enter its hub id "
                "or choose its folder above. Check its licence on its model card."
            )
            self.mpp_label.setText("0.5 µm/px (assumed for generic models)")
            return
        info = get_info(name)
        gate = "gated (request access first)" if info.gated else "open"
        self.model_info.setText(f"{info.notice}\nAccess: {gate}.")
        self.mpp_label.setText(f"{info.mpp:g} µm/px (the model's)")

    def _save_config(self, *args: Any) -> None:
        self.config = WidgetConfig(
            model=self.model_combo.currentText(),
            source=self.source_edit.text().strip(),
            device=self.device_combo.currentText(),
            cache_dir=self.cache_edit.text().strip(),
            autocast=self.autocast_combo.currentText(),
        )
        save_config(self.config, self._config_path)

    def _choose_model_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model folder")
        if folder:
            self.source_edit.setText(folder)
            self._on_model_changed()

    def _choose_cache_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Cache folder")
        if folder:
            self.cache_edit.setText(folder)
            self._save_config()

    def model_name(self) -> str:
        """The ``load_model`` name for the picker and source fields."""
        name, source = self.model_combo.currentText(), self.source_edit.text().strip()
        if name == GENERIC:
            if not source:
                raise ValueError("enter a hub id or choose a folder for a generic diffusers model")
            return f"diffusers:{source}"
        return f"{name}:{source}" if source and name != "cytosyn-tiny" else name

    def get_model(self) -> Any:
        """The chosen model, loaded on first use (call from a worker: loading can be slow)."""
        return self.models.get(
            self._model_name, self._device, trust_remote_code=self._trust_remote_code
        )

    def _snapshot_model_choice(self) -> None:
        # Read on the GUI thread; the worker then uses these plain values.
        self._model_name = self.model_name()
        self._device = self.device_combo.currentText()
        self._trust_remote_code = self.trust_remote_code.isChecked()

    def sampler_settings(self) -> Any:
        """``SamplerSettings`` from the sampling controls."""
        from napari_cytosyn.sampling import SamplerSettings

        return SamplerSettings(
            sampler=self.sampler_combo.currentText(),
            steps=int(self.steps_spin.value()),
            guidance=float(self.guidance_spin.value()),
            seed=int(self.seed_spin.value()),
            autocast=self.autocast_combo.currentText(),
        )

    def random_seed(self) -> int:
        """Put a new random seed in the seed box and return it."""
        seed = random.SystemRandom().randrange(SEED_MAX)
        self.seed_spin.setValue(seed)
        return seed

    # -- jobs -------------------------------------------------------------------------------

    def _run(self, title: str, work: Any, on_done: Any, total: int | None = None) -> Job:
        job = Job(title, work, total=total)
        job.done.connect(on_done)
        job.failed.connect(lambda exc: self._fail(title, exc))
        job.cancelled.connect(lambda: self._say(f"{title}: cancelled."))
        job.finished.connect(lambda: self._job_finished(job))
        self.jobs.append(job)
        self.cancel_button.setEnabled(True)
        self._say(f"{title}…")
        return job.start()

    def _job_finished(self, job: Job) -> None:
        if job in self.jobs:
            self.jobs.remove(job)
        self.cancel_button.setEnabled(bool(self.jobs))

    def cancel(self) -> None:
        """Cancel every running job (each stops after its batch in progress)."""
        for job in list(self.jobs):
            job.cancel()
        self._say("Cancelling…")

    def _say(self, text: str) -> None:
        self.status.setText(text)

    def _fail(self, title: str, exc: BaseException) -> None:
        from napari.utils.notifications import show_error

        self._say(f"{title} failed: {exc}")
        show_error(f"{title} failed: {exc}")

    def _guard(self, title: str, fn: Any) -> Any:
        """Run ``fn``; input errors become a message instead of a traceback."""
        try:
            return fn()
        except (ValueError, TypeError, KeyError, FileNotFoundError) as exc:
            self._fail(title, exc)
            return None

    # -- actions ----------------------------------------------------------------------------

    def inpaint(self) -> Job | None:
        """Inpaint the mask layer over the slide layer into a composite layer."""
        return self._guard("Inpaint", self._start_inpaint)

    def _start_inpaint(self) -> Job:
        image, mask_layer = self.image_combo.layer(), self.mask_combo.layer()
        if image is None or mask_layer is None:
            raise ValueError("choose a slide layer and a mask layer (Shapes or Labels)")
        composite = _layers.slide_of(image)
        if type(composite).__name__ == "SyntheticSlide":
            raise ValueError(
                "inpainting works on real slides; for a synthetic slide change its seed instead"
            )
        if composite is None:
            path = image.metadata.get("path") or image.source.path
            if not path:
                raise ValueError(
                    f"{image.name!r} was not opened from a slide file; open the slide with the "
                    "napari-cytosyn reader (File > Open) first"
                )
            shown = self._composite_layers.get(str(Path(path).resolve()))
            if shown is not None and shown in self.viewer.layers:
                # One CompositeSlide per slide file, so the edited layer sees every new edit.
                composite = _layers.slide_of(shown)
            else:
                composite = _actions.open_composite(path, self.config.cache_path())
        region, mask = mask_from_layer(mask_layer, image, composite.level_shapes[0])
        self._snapshot_model_choice()
        work = _actions.inpaint_work(
            composite, region, mask, self.get_model, self.sampler_settings()
        )
        return self._run("Inpaint", work, lambda rec: self._show_composite(image, composite, rec))

    def _show_composite(self, image: Any, composite: Any, record: dict) -> None:
        key = str(Path(composite.real.path).resolve())
        layer = self._composite_layers.get(key)
        if layer is None or layer not in self.viewer.layers:
            if _layers.slide_of(image) is composite:
                layer = image
            else:
                layer = _layers.add_composite_layer(self.viewer, composite, image)
            self._composite_layers[key] = layer
        layer.metadata.update(_layers.composite_metadata(composite))
        layer.refresh()
        self._say(
            f"Inpainted {record['mask_px']} px into {layer.name!r} "
            f"({len(composite.edits)} edit(s) in {composite.path})."
        )

    def synthesize_region(self) -> Job | None:
        """Fill each shape's bounding rectangle (of the mask layer) with new tissue."""
        return self._guard("Synthesize region", self._start_region)

    def _start_region(self) -> Job:
        from napari_cytosyn.models import get_info

        shapes = self.mask_combo.layer()
        if shapes is None or type(shapes).__name__ != "Shapes":
            raise ValueError("choose a Shapes layer with rectangles as the mask layer")
        self._snapshot_model_choice()
        name = self.model_combo.currentText()
        mpp = (
            self.models.override.mpp
            if self.models.override is not None
            else (0.5 if name == GENERIC else get_info(name).mpp)
        )
        boxes = [_actions.px_box_of(r, mpp) for r in world_rectangles(shapes)]
        settings = self.sampler_settings()
        work = _actions.synthesize_work(boxes, self.get_model, settings)
        return self._run(
            "Synthesize region", work, lambda out: self._show_regions(boxes, *out, mpp)
        )

    def _show_regions(self, boxes: list, images: list, settings: Any, mpp: float) -> None:
        for (y, x, h, w), rgb in zip(boxes, images, strict=True):
            self._n_regions += 1
            self.viewer.add_image(
                rgb,
                name=f"synthesized region {self._n_regions}",
                rgb=True,
                scale=(mpp, mpp),
                translate=(y * mpp, x * mpp),
                units=("um", "um"),
                metadata={
                    _layers.META_KEY: {"kind": "region", "box_px": [y, x, h, w]},
                    "mpp": [mpp, mpp],
                    "provenance": {"model": self._model_name, "settings": settings.to_dict()},
                },
            )
        self._say(f"Synthesized {len(images)} region(s) with seed {settings.seed}.")

    def new_synthetic_slide(self) -> Job | None:
        """Create a synthetic slide of the chosen size and show it as a lazy layer."""
        return self._guard("New synthetic slide", self._start_new_slide)

    def _start_new_slide(self) -> Job:
        self._snapshot_model_choice()
        settings = self.sampler_settings()
        width, height = int(self.width_spin.value()), int(self.height_spin.value())
        folder = self.config.cache_path() / "synthetic"
        store = _unique(folder / f"synthetic-seed{settings.seed}-{width}x{height}.zarr")

        def work(progress: Any, cancel: Any) -> Any:
            model = self.get_model()  # the slide needs the model's geometry and provenance
            return _actions.create_synthetic(
                store, model, width, height, settings.seed, settings, chunk_px=self.chunk_px
            )

        return self._run("New synthetic slide", work, self._show_synthetic)

    def _show_synthetic(self, slide: Any) -> None:
        layer, view = _layers.add_synthetic_layer(
            self.viewer, slide, on_error=lambda msg: self._say(f"Rendering failed: {msg}")
        )
        self.views[id(layer)] = view
        self.image_combo.select(layer)
        self.viewer.reset_view()
        self._say(f"{slide.name}: rendering where you look ({slide.path}).")

    def render_all(self) -> Job | None:
        """Generate every chunk of the synthetic slide selected as slide layer."""
        return self._guard("Render all", self._start_render_all)

    def _start_render_all(self) -> Job:
        layer = self.image_combo.layer()
        slide = _layers.slide_of(layer) if layer is not None else None
        if type(slide).__name__ != "SyntheticSlide":
            raise ValueError("select a synthetic slide as the slide layer first")
        return self._run(
            f"Render all of {slide.name}",
            _actions.render_all_work(slide),
            lambda n: self._say(f"{slide.name}: {n} chunk(s) rendered."),
            total=len(slide.missing_chunks(0)),
        )

    def export(self, path: str | None = None, fmt: str | None = None) -> Job | None:
        """Export the slide layer (synthetic or edited) as OME-Zarr or OME-TIFF."""
        return self._guard("Export", lambda: self._start_export(path, fmt))

    def _start_export(self, path: str | None, fmt: str | None) -> Job | None:
        fmt = fmt or self.format_combo.currentText()
        layer = self.image_combo.layer()
        slide = _layers.slide_of(layer) if layer is not None else None
        if slide is None:
            raise ValueError(
                "select a synthetic slide or an edited (composite) slide layer; real slides are "
                "saved with File > Save Selected Layers"
            )
        if path is None:
            suffix = _actions.EXPORT_FORMATS[fmt]
            path, _ = QFileDialog.getSaveFileName(
                self, f"Export as {fmt}", str(Path.home() / f"{layer.name}{suffix}")
            )
            if not path:
                return None
        target = Path(path)
        return self._run(
            f"Export {fmt}",
            _actions.export_work(slide, target, fmt),
            lambda p: self._say(f"Exported to {p}."),
        )

    def closeEvent(self, event: Any) -> None:
        self.close_views()
        super().closeEvent(event)

    def close_views(self) -> None:
        """Stop every live synthetic layer's rendering and cancel running jobs."""
        self.cancel()
        for view in self.views.values():
            view.close()
        self.views.clear()


def _devices() -> list[str]:
    from napari_cytosyn.models.device import available_devices

    return available_devices()


def _unique(path: Any) -> Any:
    """``path`` or ``path`` with ``-2``, ``-3``... before the suffixes when it exists."""
    if not path.exists():
        return path
    stem = path.name.removesuffix(".zarr")
    n = 2
    while (path.parent / f"{stem}-{n}.zarr").exists():
        n += 1
    return path.parent / f"{stem}-{n}.zarr"
