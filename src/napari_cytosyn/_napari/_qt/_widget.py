"""The CytoSyn dock widget: pick a model and sampler, then inpaint, synthesize, render, export.

A thin Qt shell over the viewer's :class:`~.._session.Session` (the running job, the edited
slides) and the plain functions of :mod:`.._actions`. Each group box is a sub-widget of its own
(``_model_box``, ``_sampling_box``, ``_edit_box``, ``_edits_box``, ``_synthetic_box``,
``_export_box``, ``_progress_box``); this class reads their values, starts jobs and shows
results. Every long piece of work runs in a :class:`~._jobs.Job` (a worker thread); one job at a
time per viewer, and the buttons that start one are disabled while it runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QFileDialog,
    QFrame,
    QMessageBox,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from .. import _actions, _layers
from .._config import WidgetConfig, load_config, save_config
from .._masks import mask_from_layer, world_rectangles
from .._session import CONFIRM_MPX, JobProgress, SessionBusyError, format_duration, session_for
from ._edit_box import EditBox
from ._edits_box import EditsBox
from ._export_box import ExportBox
from ._jobs import Job
from ._model_box import GENERIC, GENERIC_MPP, ModelBox
from ._progress_box import ProgressBox
from ._reference_box import (
    ReferenceBox,
    conditioned_settings,
    link_to,
    model_conditioning,
    twin_store,
    twin_work,
)
from ._sampling_box import SamplingBox
from ._synthetic_box import SyntheticBox

_INPUT_ERRORS = (ValueError, TypeError, KeyError, IndexError, FileNotFoundError, SessionBusyError)


class CytoSynWidget(QWidget):
    """Dock widget of napari-cytosyn (see the user guide, docs/user-guide/)."""

    def __init__(self, napari_viewer: Any, config_path: str | None = None) -> None:
        super().__init__()
        from .._session import real_viewer, warm_up

        warm_up()  # the first slide layer then finds pint's registry built (no GUI stall)
        # napari hands plugin widgets a PublicOnlyProxy of the viewer (Plugins menu,
        # add_plugin_dock_widget); its layers would be proxies too, unknown to our registries.
        self.viewer = real_viewer(napari_viewer)
        self.session = session_for(self.viewer)
        self._config_path = config_path
        self.config = load_config(config_path)
        self.views: dict[int, Any] = {}  # id(layer) -> LazySlideView of synthetic layers
        self.job: Job | None = None
        self._n_regions = 0
        # 256 px chunks: a fresh view's first chunk lands sooner (docs/sampling.md, lazy mode)
        self.chunk_px = 256
        self.confirm_mpx = CONFIRM_MPX  # renders/exports above this ask first
        self.confirm = self._ask  # (text) -> bool; scripts and tests may replace it

        self.setFixedWidth(460)  # long texts wrap; the dock (and the canvas) never change width
        # The boxes scroll when the dock is shorter than they are (rather than squeezing
        # wrapped texts to one line); the progress display stays in view below them.
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = self.scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        content = QWidget()
        scroll.setWidget(content)
        outer.addWidget(scroll, 1)
        layout = QVBoxLayout(content)
        self.model_box = ModelBox(self.config)
        self.sampling = SamplingBox(self.model_box.recommended_steps())
        self.edit_box = EditBox(self.viewer)
        self.reference_box = ReferenceBox(self.viewer)
        self.edits_box = EditsBox()
        self.synthetic_box = SyntheticBox()
        self.export_box = ExportBox()
        self.progress = ProgressBox(self.session)
        for box in (
            self.model_box,
            self.sampling,
            self.edit_box,
            self.reference_box,
            self.edits_box,
            self.synthetic_box,
            self.export_box,
        ):
            layout.addWidget(box)
        layout.addStretch(1)
        progress_row = QVBoxLayout()
        progress_row.setContentsMargins(9, 0, 9, 9)
        progress_row.addWidget(self.progress)
        outer.addLayout(progress_row)

        self.model_box.changed.connect(self._save_config)
        self.model_box.model_changed.connect(self._on_model_changed)
        self.edit_box.inpaint_button.clicked.connect(self.inpaint)
        self.edit_box.region_button.clicked.connect(self.synthesize_region)
        self.edit_box.image_combo.currentTextChanged.connect(self._on_slide_selected)
        self.edits_box.undo_requested.connect(self.undo_edit)
        self.edits_box.remove_requested.connect(self.remove_edit)
        self.edits_box.open_requested.connect(lambda: self.open_edit_store())
        self.synthetic_box.new_slide_button.clicked.connect(self.new_synthetic_slide)
        self.synthetic_box.render_all_button.clicked.connect(self.render_all)
        self.reference_box.twin_button.clicked.connect(self.synthetic_twin)
        self.export_box.export_button.clicked.connect(lambda: self.export())
        self.session.job_changed.connect(self._on_job_changed)
        self.session.edits_changed.connect(self._on_edits_changed)
        self._update_mpp()
        self.update_conditioning()
        self._on_slide_selected()
        self._on_job_changed(self.session.job)

    # -- settings ---------------------------------------------------------------------

    @property
    def models(self) -> Any:
        """The viewer's model cache (``models.override`` replaces the picker's choice)."""
        return self.session.models

    def _on_model_changed(self) -> None:
        self.sampling.steps_spin.setValue(self.model_box.recommended_steps())
        self._update_mpp()
        self.update_conditioning()

    def update_conditioning(self) -> None:
        """Enable references and guidance for a conditional model (call after setting
        ``models.override``); disable them, with a tooltip saying why, otherwise."""
        name, conditional, tile_um, guidance = model_conditioning(self)
        self.reference_box.set_model(name, conditional, tile_um, self.sampling, guidance)

    def _update_mpp(self) -> None:
        box = self.model_box
        if box.model_combo.currentText() == GENERIC:
            text = f"{GENERIC_MPP} µm/px (assumed for generic models)"
        else:
            text = f"{box.mpp():g} µm/px (the model's)"
        self.synthetic_box.mpp_label.setText(text)

    def _save_config(self, **updates: Any) -> None:
        box = self.model_box
        self.config = WidgetConfig(
            model=box.model_combo.currentText(),
            source=box.source_edit.text().strip(),
            device=box.device_combo.currentText(),
            cache_dir=box.cache_edit.text().strip(),
            autocast=box.autocast_combo.currentText(),
            export_dir=updates.get("export_dir", self.config.export_dir),
        )
        save_config(self.config, self._config_path)

    def _snapshot_model_choice(self) -> None:
        # Read on the GUI thread; the worker then uses these plain values.
        box = self.model_box
        self._model_name = box.model_name()
        self._device = box.device_combo.currentText()
        self._trust_remote_code = box.trust_remote_code.isChecked()
        self._vae = box.vae()

    def get_model(self) -> Any:
        """The chosen model, loaded on first use (call from a worker: loading can be slow)."""
        options = {"vae": self._vae} if self._vae else {}
        return self.models.get(
            self._model_name, self._device, trust_remote_code=self._trust_remote_code, **options
        )

    def sampler_settings(self) -> Any:
        """``SamplerSettings`` from the sampling controls and the precision picker."""
        settings = self.sampling.settings(self.model_box.autocast_combo.currentText())
        return conditioned_settings(self, settings) if self.reference_box.conditional else settings

    # -- jobs -------------------------------------------------------------------------

    def run_job(
        self, title: str, work: Any, on_done: Any, unit: str = "steps", total: int = 0
    ) -> Job:
        """Start ``work(progress, cancel)`` in a worker thread as the viewer's one job;
        ``on_done(result)`` runs on the GUI thread. Raises :class:`SessionBusyError` while
        another job of this viewer runs."""
        job = Job(title, work, total=total, show_progress=False)
        self.session.begin_job(title, unit, total, cancel=job.cancel)
        job.progressed.connect(self.session.progress)
        job.done.connect(on_done)
        job.failed.connect(lambda exc: self._fail(title, exc))
        job.cancelled.connect(lambda: self.say(f"{title}: cancelled."))
        job.finished.connect(lambda: self.session.end_job(job.state))
        self.job = job
        return job.start()

    def cancel(self) -> None:
        """Cancel the viewer's running job (it stops between two model calls)."""
        self.session.cancel()

    def _on_job_changed(self, job: JobProgress | None) -> None:
        idle = not self.session.busy
        for button in (
            self.edit_box.inpaint_button,
            self.edit_box.region_button,
            self.synthetic_box.new_slide_button,
            self.synthetic_box.render_all_button,
            self.export_box.export_button,
        ):
            button.setEnabled(idle)
        self.reference_box.twin_button.setEnabled(idle and self.reference_box.conditional)
        self.edits_box.update_buttons(idle)

    def say(self, text: str) -> None:
        self.progress.say(text)

    @property
    def status(self) -> Any:
        """The status line (a ``QLabel``)."""
        return self.progress.status

    def _fail(self, title: str, exc: BaseException) -> None:
        from napari.utils.notifications import show_error

        self.say(f"{title} failed: {exc}")
        show_error(f"{title} failed: {exc}")

    def _guard(self, title: str, fn: Any) -> Any:
        """Run ``fn``; input errors become a message instead of a traceback."""
        try:
            return fn()
        except _INPUT_ERRORS as exc:
            self._fail(title, exc)
            return None

    def _ask(self, text: str) -> bool:
        answer = QMessageBox.question(self, "CytoSyn", text)
        return answer == QMessageBox.StandardButton.Yes

    # -- the selected slide -----------------------------------------------------------

    def _selected(self) -> tuple[Any, Any]:
        layer = self.edit_box.image_combo.layer()
        return layer, (_layers.slide_of(layer) if layer is not None else None)

    def _composite_of(self, layer: Any) -> Any | None:
        slide = _layers.slide_of(layer) if layer is not None else None
        if _layers.is_composite(slide):
            return slide
        path = _layers.real_path_of(layer) if layer is not None else None
        return self.session.composite_for(path) if path else None

    def _on_slide_selected(self, *args: Any) -> None:
        layer = self.edit_box.image_combo.layer()
        self.edits_box.show_edits(self._composite_of(layer))
        self.edits_box.update_buttons(not self.session.busy)
        self._update_view_note()

    def _on_edits_changed(self, composite: Any) -> None:
        if self._composite_of(self.edit_box.image_combo.layer()) is composite:
            self.edits_box.show_edits(composite)
            self.edits_box.update_buttons(not self.session.busy)

    def _update_view_note(self, event: Any = None) -> None:
        layer = self.edit_box.image_combo.layer()
        view = self.views.get(id(layer)) or (_layers.view_of(layer) if layer else None)
        self.synthetic_box.view_note.setText(view.zoom_note() if view is not None else "")

    # -- inpainting -------------------------------------------------------------------

    def inpaint(self) -> Job | None:
        """Inpaint the mask layer over the slide layer into the slide's edited layer."""
        return self._guard("Inpaint", self._start_inpaint)

    def _start_inpaint(self) -> Job:
        image, mask_layer = self.edit_box.image_combo.layer(), self.edit_box.mask_combo.layer()
        if image is not None:
            _refuse_loading(image)
        if image is None or mask_layer is None:
            raise ValueError("choose a slide layer and a mask layer (Shapes or Labels)")
        slide = _layers.slide_of(image)
        if _layers.is_synthetic(slide):
            raise ValueError(
                "inpainting works on real slides; for a synthetic slide change its seed instead"
            )
        composite = self._composite_of(image)
        path = None
        if composite is None:
            path = _layers.real_path_of(image)
            if not path:
                raise ValueError(
                    f"{image.name!r} was not opened from a slide file; open the slide with the "
                    "napari-cytosyn reader (File > Open) first"
                )
            from napari_cytosyn.slide import open_slide

            shapes_hw = open_slide(path).level_shapes[0]
        else:
            shapes_hw = composite.level_shapes[0]
        region, mask = mask_from_layer(mask_layer, image, shapes_hw)
        reference = self.reference_box.reference(image, shapes_hw)
        ring_um = self.reference_box.ring_um()
        self._snapshot_model_choice()
        settings, cache = self.sampler_settings(), self.config.cache_path()

        def work(progress: Any, cancel: Any) -> tuple[Any, dict]:
            target = composite or _actions.open_composite(path, cache)
            try:
                run = _actions.inpaint_work(
                    target, region, mask, self.get_model, settings, reference, ring_um
                )
                return target, run(progress, cancel)
            except BaseException:
                if composite is None:  # a store made for this edit alone: nothing left behind
                    shutil.rmtree(target.path, ignore_errors=True)
                raise

        return self.run_job(
            "Inpaint", work, lambda out: self._show_composite(image, *out), unit="steps"
        )

    def _show_composite(self, image: Any, composite: Any, record: dict) -> None:
        key = str(Path(composite.real.path).resolve())
        self.session.composites[key] = composite
        layer = _layers.edited_layer(self.viewer, composite)
        if layer is None:
            layer = _layers.add_composite_layer(self.viewer, composite, image)
        layer.metadata.update(_layers.composite_metadata(composite))
        layer.refresh()
        _layers.show_synthetic_mask(self.viewer, layer, composite)
        self.session.edits_changed.emit(composite)
        self.say(
            f"Inpainted {record['mask_px']:,} px into {layer.name!r} "
            f"({len(composite.edits)} edit(s) in {composite.path})."
        )

    def undo_edit(self) -> Job | None:
        """Remove the newest edit of the selected slide."""
        composite = self._composite_of(self.edit_box.image_combo.layer())
        if composite is None or not composite.edits:
            self.say("The selected slide has no edit to undo.")
            return None
        return self.remove_edit(len(composite.edits) - 1)

    def remove_edit(self, index: int) -> Job | None:
        """Remove edit ``index`` (oldest first) of the selected slide (a short job)."""

        def start() -> Job:
            composite = self._composite_of(self.edit_box.image_combo.layer())
            if composite is None:
                raise ValueError("select a slide with edits first")
            n = len(composite.edits)
            if not 0 <= index < n:
                raise IndexError(f"the slide has {n} edit(s), no edit {index + 1}")

            def work(progress: Any, cancel: Any) -> dict:
                progress(0, 1)
                record = composite.remove_edit(index)
                progress(1, 1)
                return record

            return self.run_job(
                f"Remove edit {index + 1}",
                work,
                lambda rec: self._edit_removed(composite, index, rec),
                unit="edits",
                total=1,
            )

        return self._guard("Remove edit", start)

    def _edit_removed(self, composite: Any, index: int, record: dict) -> None:
        layer = _layers.edited_layer(self.viewer, composite)
        if layer is not None:
            layer.metadata.update(_layers.composite_metadata(composite))
            layer.refresh()
            _layers.show_synthetic_mask(self.viewer, layer, composite)
        self.session.edits_changed.emit(composite)
        self.say(
            f"Removed edit {index + 1} ({record['mask_px']:,} px); {composite.name} "
            f"has {len(composite.edits)} edit(s)."
        )

    def open_edit_store(self, path: str | None = None) -> Any:
        """Reopen the edits of an earlier session (an edit store) as an edited layer."""

        def start() -> Any:
            nonlocal path
            if path is None:
                path = QFileDialog.getExistingDirectory(
                    self, "Edit store (.cytosyn)", str(self.config.cache_path() / "edits")
                )
                if not path:
                    return None
            composite = _actions.open_edit_store(path)
            key = str(Path(composite.real.path).resolve())
            self.session.composites[key] = composite
            layer = _layers.edited_layer(self.viewer, composite)
            if layer is None:
                from .._reader import slide_layer_data

                data, kwargs, _ = slide_layer_data(composite.real)
                real = self.viewer.add_image(data, **kwargs)
                layer = _layers.add_composite_layer(self.viewer, composite, real)
            _layers.show_synthetic_mask(self.viewer, layer, composite)
            self.edit_box.image_combo.select(layer)
            self.session.edits_changed.emit(composite)
            self.say(f"Opened {len(composite.edits)} edit(s) of {composite.real.name}.")
            return layer

        return self._guard("Open edit store", start)

    # -- synthesized regions ----------------------------------------------------------

    def synthesize_region(self) -> Job | None:
        """Fill each shape's bounding rectangle (of the mask layer) with new tissue."""
        return self._guard("Synthesize region", self._start_region)

    def _start_region(self) -> Job:
        shapes = self.edit_box.mask_combo.layer()
        if shapes is None or type(shapes).__name__ != "Shapes":
            raise ValueError("choose a Shapes layer with rectangles as the mask layer")
        self._snapshot_model_choice()
        mpp = (
            self.models.override.mpp if self.models.override is not None else (self.model_box.mpp())
        )
        boxes = [_actions.px_box_of(r, mpp) for r in world_rectangles(shapes)]
        work = _actions.synthesize_work(boxes, self.get_model, self.sampler_settings())
        return self.run_job(
            "Synthesize region", work, lambda out: self._show_regions(boxes, *out, mpp)
        )

    def _show_regions(self, boxes: list, images: list, recipe: dict, mpp: float) -> None:
        from napari_cytosyn.pixel_size import PixelSize

        seed, size = recipe["core"]["seed"], PixelSize.square(mpp)
        for (y, x, h, w), rgb in zip(boxes, images, strict=True):
            self._n_regions += 1
            layer = self.viewer.add_image(
                rgb,
                name=f"synthesized region {self._n_regions}",
                rgb=True,
                scale=size.napari_scale(),
                translate=(y * mpp, x * mpp),
                units=("um", "um"),
                metadata={
                    _layers.META_KEY: {"kind": "region", "box_px": [y, x, h, w]},
                    "mpp": size.to_list(),
                    "provenance": {"model": recipe["model"], "seed": seed, "sampler": recipe},
                },
            )
            _layers.show_synthetic_mask(self.viewer, layer, None)
        self.say(f"Synthesized {len(images)} region(s) with seed {seed}.")

    # -- synthetic slides -------------------------------------------------------------

    def new_synthetic_slide(self) -> Job | None:
        """Create a synthetic slide of the chosen size and show it as a lazy layer."""
        return self._guard("New synthetic slide", self._start_new_slide)

    def _start_new_slide(self) -> Job:
        self._snapshot_model_choice()
        settings = self.sampler_settings()
        box = self.synthetic_box
        width, height = int(box.width_spin.value()), int(box.height_spin.value())
        folder = self.config.cache_path() / "synthetic"
        store = _unique(folder / f"synthetic-seed{settings.seed}-{width}x{height}.cytosyn")
        chunk_px = self.chunk_px

        def work(progress: Any, cancel: Any) -> Any:
            model = self.get_model()  # the slide needs the model's geometry and provenance
            return _actions.create_synthetic(
                store, model, width, height, settings.seed, settings, chunk_px=chunk_px
            )

        return self.run_job("New synthetic slide", work, self._show_synthetic)

    def _show_synthetic(self, slide: Any) -> None:
        layer, view = _layers.add_synthetic_layer(
            self.viewer, slide, on_error=lambda msg: self.say(f"Rendering failed: {msg}")
        )
        self.views[id(layer)] = view
        view.note_changed.connect(self._update_view_note)
        self.edit_box.image_combo.select(layer)
        self.viewer.reset_view()
        self.say(f"{slide.name}: rendering where you look ({slide.path}).")

    def synthetic_twin(self) -> Job | None:
        """A synthetic twin of the selected real slide, shown over it (same scale, origin)."""
        return self._guard("Synthetic twin", self._start_twin)

    def _start_twin(self) -> Job:
        image = self.edit_box.image_combo.layer()
        if image is not None:
            _refuse_loading(image)
        path = _layers.real_path_of(image) if image is not None else None
        if not path:
            raise ValueError("select a real slide (opened from a file) as the slide layer")
        self._snapshot_model_choice()
        settings = self.sampler_settings()
        store = twin_store(self.config.cache_path(), path, settings.seed)
        work = twin_work(path, store, self.get_model, settings, self.chunk_px)
        return self.run_job(
            "Synthetic twin", work, lambda slide: self._show_twin(image, slide), unit="cells"
        )

    def _show_twin(self, real_layer: Any, slide: Any) -> None:
        self._show_synthetic(slide)
        layer = self.edit_box.image_combo.layer()
        link_to(layer, real_layer)
        ref = slide.metadata()["reference"]
        self.say(
            f"{slide.name}: twin of {ref['file']} ({ref['tissue_cells']} reference cells), "
            "rendering where you look."
        )

    def render_all(self) -> Job | None:
        """Generate every chunk of the synthetic slide selected as slide layer (asks first when
        it is more than ``confirm_mpx`` megapixels)."""
        return self._guard("Render all", self._start_render_all)

    def _start_render_all(self) -> Job | None:
        _layer, slide = self._selected()
        if not _layers.is_synthetic(slide):
            raise ValueError("select a synthetic slide as the slide layer first")
        missing = len(slide.missing_chunks(0))
        if not missing:
            self.say(f"{slide.name}: every chunk is rendered already.")
            return None
        if not self._confirm_render(slide, missing, "Render all"):
            self.say("Render all: not started.")
            return None
        return self.run_job(
            f"Render all of {slide.name}",
            _actions.render_all_work(slide),
            lambda n: self.say(f"{slide.name}: {n:,} chunk(s) rendered, the slide is complete."),
            unit="chunks",
            total=missing,
        )

    def _confirm_render(self, slide: Any, missing: int, what: str) -> bool:
        mpx = _actions.megapixels(slide, missing)
        if mpx <= self.confirm_mpx:
            return True
        rate = self.session.chunk_rate
        when = (
            f"about {format_duration(missing / rate)} at the {rate:.2g} chunks/s measured here"
            if rate
            else "time unknown until the first chunks are done"
        )
        return bool(
            self.confirm(
                f"{what}: {missing:,} chunks ({mpx:,.0f} megapixels) of {slide.name} are not "
                f"generated yet; {when}. Start?"
            )
        )

    # -- export -----------------------------------------------------------------------

    def export(self, path: str | None = None, fmt: str | None = None) -> Job | None:
        """Export the slide layer (synthetic or edited) as OME-Zarr or OME-TIFF."""
        return self._guard("Export", lambda: self._start_export(path, fmt))

    def _start_export(self, path: str | None, fmt: str | None) -> Job | None:
        fmt = fmt or self.export_box.format_combo.currentText()
        _layer, slide = self._selected()
        if slide is None:
            raise ValueError(
                "select a synthetic slide or an edited slide layer; real slides are saved with "
                "File > Save Selected Layers"
            )
        if _layers.is_synthetic(slide):
            missing = len(slide.missing_chunks(0))
            if missing:
                if not self._confirm_render(slide, missing, "Export"):
                    self.say("Export: not started.")
                    return None
                # Render first (its own job, cancellable), then export what is finished.
                return self.run_job(
                    f"Render {slide.name} for export",
                    _actions.render_all_work(slide),
                    lambda n: self.export(path, fmt),
                    unit="chunks",
                    total=missing,
                )
        if path is None:
            start = _actions.default_export_path(slide, fmt, self.config.export_dir)
            path, _ = QFileDialog.getSaveFileName(self, f"Export as {fmt}", str(start))
            if not path:
                return None
        target = Path(path)
        self._save_config(export_dir=str(target.parent))
        return self.run_job(
            f"Export {fmt}",
            _actions.export_work(slide, target, fmt),
            lambda p: self.say(f"Exported to {p}."),
            unit="tiles",
        )

    # -- closing ----------------------------------------------------------------------

    def closeEvent(self, event: Any) -> None:
        self.close_views()
        super().closeEvent(event)

    def close_views(self, timeout: float = 0.0) -> None:
        """Stop every live synthetic layer's rendering and cancel the running job."""
        self.cancel()
        for view in self.views.values():
            view.close(timeout=timeout)
        self.views.clear()
        for signal, slot in (
            (self.session.job_changed, self._on_job_changed),
            (self.session.edits_changed, self._on_edits_changed),
            (self.session.job_changed, self.progress._on_job),
        ):
            signal.disconnect(slot)


def _unique(path: Path) -> Path:
    """``path`` or ``path`` with ``-2``, ``-3``... before its suffix when it exists."""
    if not path.exists():
        return path
    n = 2
    while (path.with_name(f"{path.stem}-{n}{path.suffix}")).exists():
        n += 1
    return path.with_name(f"{path.stem}-{n}{path.suffix}")


def _refuse_loading(layer: Any) -> None:
    """A layer whose file is still being opened in a worker cannot be worked on yet."""
    if layer.metadata.get(_layers.META_KEY, {}).get("loading"):
        raise ValueError(f"{layer.name!r} is still loading; try again when its pixels show")
