"""The CytoSyn dock widget: pick a model and sampler, then inpaint, synthesize, render, export.

A thin Qt shell over the viewer's :class:`~.._session.Session` (the running job, the edited
slides) and the plain functions of :mod:`.._actions`. Each group box is a sub-widget of its own
(``_model_box``, ``_sampling_box``, ``_edit_box``, ``_reference_box``, ``_edits_box``,
``_synthetic_box``, ``_export_box``, ``_progress_box``); this class lays them out, keeps the
settings and runs jobs; what the buttons do is in :mod:`._controller` (a mixin). Every long
piece of work runs in a :class:`~._jobs.Job` (a worker thread); one job at a time per viewer,
and the buttons that start one are disabled while it runs.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QFrame,
    QMessageBox,
    QScrollArea,
    QVBoxLayout,
    QWidget,
)

from .._config import WidgetConfig, load_config, save_config
from .._session import CONFIRM_MPX, JobProgress, SessionBusyError, session_for
from ._controller import WidgetActions
from ._edit_box import EditBox
from ._edits_box import EditsBox
from ._export_box import ExportBox
from ._jobs import Job
from ._model_box import GENERIC, GENERIC_MPP, ModelBox
from ._progress_box import ProgressBox
from ._reference_box import (
    ReferenceBox,
    conditioned_settings,
    model_conditioning,
)
from ._sampling_box import SamplingBox
from ._synthetic_box import SyntheticBox

_INPUT_ERRORS = (ValueError, TypeError, KeyError, IndexError, FileNotFoundError, SessionBusyError)


class CytoSynWidget(WidgetActions, QWidget):
    """Dock widget of napari-cytosyn (see the user guide, docs/user-guide/)."""

    def __init__(self, napari_viewer: Any, config_path: str | None = None) -> None:
        super().__init__()
        from .._actions import thaw
        from .._session import real_viewer, warm_up
        from ._gc import collect_on_gui_thread

        warm_up()  # the first slide layer then finds pint's registry built (no GUI stall)
        collect_on_gui_thread()  # the jobs' threads must not free Qt objects (see _gc.py)
        # The viewer's objects, frozen with the model (freeze_long_lived), can be collected
        # again once the dock is gone: closing the viewer deletes it without a closeEvent.
        self.destroyed.connect(thaw)
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

    # -- closing ----------------------------------------------------------------------

    def closeEvent(self, event: Any) -> None:
        from .._actions import thaw

        self.close_views()
        thaw()  # the viewer's objects, frozen with the model, can be collected again
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
