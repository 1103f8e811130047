"""Dock widget "Test a segmentation tool": make or pick a layout, synthesize H&E with those
nuclei, run a segmentation method (builtin, Python callable, shell command or another plugin's
npe2 command) on the image and its stress variants, and show truth, prediction, errors and the
scores.

A thin Qt shell over :mod:`napari_cytosyn.testkit`; synthesis and scoring run in
:class:`~._jobs.Job` worker threads, never on the GUI thread.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ._jobs import Job

PROCEDURAL = "Procedural"
TABLE_FIELDS = ("f1", "mean_iou", "pq", "aji", "count_bias", "size_bias")
#: Colours of the error layer: matched prediction, false positive, missed truth.
ERROR_COLOURS = {0: "transparent", 1: "#3cc83c", 2: "#2870ff", 3: "#ff2828", None: "transparent"}


class TestkitWidget(QWidget):
    """The "Test a segmentation tool" dock widget (see the module doc).

    ``synthesize_fn`` (default :func:`napari_cytosyn.testkit.synthesis.synthesize`) and
    ``model`` (default: loaded from the model box on first use) can be replaced, e.g. by tests.
    """

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        from napari_cytosyn.testkit.methods import REFERENCE_METHODS
        from napari_cytosyn.testkit.synthesis import synthesize

        self.viewer = napari_viewer
        self.synthesize_fn = synthesize
        self.model: Any = None
        self._model_name = ""
        self.layout: Any = None
        self.image: np.ndarray | None = None
        self.summary: list[dict[str, Any]] = []
        self.jobs: list[Job] = []
        # what "Save report" writes: the cases of the current image and every method's run on
        # them (method name -> (method, rows, predictions))
        self.cases: list[Any] = []
        self.variants: list[Any] = []
        self.runs: dict[str, tuple[Any, list, dict]] = {}

        root = QVBoxLayout(self)
        box = QGroupBox("1. Layout (ground truth)")
        form = QFormLayout(box)
        self.source_combo = QComboBox()
        self.source_combo.addItem(PROCEDURAL)
        form.addRow("Source", self.source_combo)
        self.size_spin = _spin(32, 4096, 256, "px")
        self.density_spin = _dspin(0, 20000, 4000, 250, " /mm²")
        self.radius_spin = _dspin(1, 10, 3.2, 0.1, " µm")
        self.clustering_spin = _dspin(0, 1, 0.3, 0.05, "")
        self.seed_spin = _spin(0, 2**31 - 1, 0, "")
        form.addRow("Size", self.size_spin)
        form.addRow("Density", self.density_spin)
        form.addRow("Nucleus radius", self.radius_spin)
        form.addRow("Clustering", self.clustering_spin)
        form.addRow("Seed", self.seed_spin)
        self.layout_button = QPushButton("Make layout")
        form.addRow(self.layout_button)
        root.addWidget(box)

        box = QGroupBox("2. Synthesize")
        form = QFormLayout(box)
        self.model_edit = QLineEdit("cytosyn-tiny-cells")
        self.steps_spin = _spin(1, 250, 12, "")
        self.guidance_spin = _dspin(1, 10, 2.0, 0.5, "")
        form.addRow("Model", self.model_edit)
        form.addRow("Steps", self.steps_spin)
        form.addRow("Layout guidance", self.guidance_spin)
        self.synth_button = QPushButton("Synthesize H&&E")
        form.addRow(self.synth_button)
        root.addWidget(box)

        box = QGroupBox("3. Run a method and score it")
        form = QFormLayout(box)
        self.method_combo = QComboBox()
        self.method_combo.setEditable(True)
        self.method_combo.addItems([f"builtin:{n}" for n in REFERENCE_METHODS])
        self.method_combo.setToolTip(
            "builtin:NAME, package.module:function, shell:tool {input} {output}, "
            "or npe2:<plugin command id>"
        )
        self.plugins_button = QPushButton("List plugin commands")
        row = QHBoxLayout()
        row.addWidget(self.method_combo, 1)
        row.addWidget(self.plugins_button)
        form.addRow("Method", row)
        self.variants_edit = QLineEdit("all")
        self.variants_edit.setToolTip("stress variants, comma-separated, or 'all'")
        form.addRow("Variants", self.variants_edit)
        self.run_button = QPushButton("Run and score")
        form.addRow(self.run_button)
        root.addWidget(box)

        self.report_button = QPushButton("Save report…")
        self.report_button.setToolTip(
            "write the test set of this image, every method run on it and the report "
            "(Markdown + PNG plots, CSV/JSON of every figure) into a folder - the same files "
            "as `napari-cytosyn testkit generate/run/report`"
        )
        self.report_button.setEnabled(False)
        root.addWidget(self.report_button)

        self.table = QTableWidget(0, 2 + len(TABLE_FIELDS))
        self.table.setHorizontalHeaderLabels(["method", "variant", *TABLE_FIELDS])
        root.addWidget(self.table, 1)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        root.addWidget(self.cancel_button)
        root.addWidget(self.status)

        self.layout_button.clicked.connect(self.make_layout)
        self.synth_button.clicked.connect(self.synthesize)
        self.run_button.clicked.connect(self.run_method)
        self.plugins_button.clicked.connect(self.list_plugin_commands)
        self.report_button.clicked.connect(lambda: self.save_report())
        self.cancel_button.clicked.connect(self.cancel)
        self.viewer.layers.events.inserted.connect(self._refresh_sources)
        self.viewer.layers.events.removed.connect(self._refresh_sources)
        self._refresh_sources()

    # -- helpers ----------------------------------------------------------------------------
    def _refresh_sources(self, event: Any = None) -> None:
        current = self.source_combo.currentText()
        names = [ly.name for ly in self.viewer.layers if _is_labels(ly) and ly.name != "errors"]
        self.source_combo.blockSignals(True)
        self.source_combo.clear()
        self.source_combo.addItems([PROCEDURAL, *names])
        idx = self.source_combo.findText(current)
        self.source_combo.setCurrentIndex(max(0, idx))
        self.source_combo.blockSignals(False)

    def _say(self, text: str) -> None:
        self.status.setText(text)

    def _fail(self, title: str, exc: BaseException) -> None:
        from napari.utils.notifications import show_error

        self._say(f"{title} failed: {exc}")
        show_error(f"{title} failed: {exc}")

    def _run(self, title: str, work: Any, on_done: Any) -> Job:
        job = Job(title, work)
        job.done.connect(on_done)
        job.failed.connect(lambda exc: self._fail(title, exc))
        job.cancelled.connect(lambda: self._say(f"{title}: cancelled."))
        job.finished.connect(lambda: self._finished(job))
        self.jobs.append(job)
        self.cancel_button.setEnabled(True)
        self._say(f"{title}…")
        return job.start()

    def _finished(self, job: Job) -> None:
        if job in self.jobs:
            self.jobs.remove(job)
        self.cancel_button.setEnabled(bool(self.jobs))

    def cancel(self) -> None:
        """Cancel the running synthesis or run (it stops after its batch in progress)."""
        for job in list(self.jobs):
            job.cancel()

    def _show_labels(self, data: np.ndarray, name: str, **kwargs: Any) -> Any:
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.data = data
            for key, value in kwargs.items():
                setattr(layer, key, value)
            return layer
        return self.viewer.add_labels(data, name=name, **kwargs)

    # -- actions ----------------------------------------------------------------------------
    def current_layout(self) -> Any:
        """The layout of the chosen source: the last procedural one, or a Labels layer's."""
        from napari_cytosyn.testkit.layouts import layout_from_labels

        source = self.source_combo.currentText()
        if source == PROCEDURAL or source == "layout":
            if self.layout is None:
                self.make_layout()
            return self.layout
        layer = self.viewer.layers[source]
        data = np.asarray(layer.data)
        if data.ndim != 2:
            raise ValueError(f"Labels layer {source!r} must be 2-D, got shape {data.shape}")
        # a layer scaled in um (as the plugin's slides are) gives its mpp; unscaled = 0.5 um/px
        mpp = float(layer.scale[-1]) if float(layer.scale[-1]) != 1.0 else 0.5
        return layout_from_labels(data, mpp=mpp, model_mpp=0.5)

    def make_layout(self) -> Any:
        """Draw a procedural layout from the form and show it as the ``layout`` Labels layer."""
        from napari_cytosyn.testkit.layouts import LayoutParams, procedural_layout

        try:
            params = LayoutParams(
                density_per_mm2=self.density_spin.value(),
                radius_um=self.radius_spin.value(),
                clustering=self.clustering_spin.value(),
            )
        except ValueError as exc:
            self._fail("Layout", exc)
            return None
        n = self.size_spin.value()
        self.layout = procedural_layout((n, n), params, seed=self.seed_spin.value())
        self._show_labels(self.layout.labels, "layout", opacity=0.5)
        self._say(f"Layout: {self.layout.n_nuclei} nuclei in {n} x {n} px.")
        return self.layout

    def synthesize(self) -> Job | None:
        """Synthesize H&E whose nuclei follow the current layout (in a worker thread)."""
        try:
            layout = self.current_layout()
        except (ValueError, KeyError) as exc:
            self._fail("Synthesize", exc)
            return None
        self.layout = layout
        name, steps = self.model_edit.text().strip(), self.steps_spin.value()
        guidance, seed = self.guidance_spin.value(), self.seed_spin.value()

        def work(progress: Any, cancel: Any) -> np.ndarray:
            from napari_cytosyn.testkit.synthesis import load_synthesis_model, synthesize

            if self.synthesize_fn is not synthesize:
                return self.synthesize_fn(
                    layout, self.model, seed=seed, steps=steps, guidance=guidance
                )
            if self.model is None or self._model_name != name:
                self.model, self._model_name = load_synthesis_model(name), name
            return synthesize(
                layout,
                self.model,
                seed=seed,
                steps=steps,
                guidance=guidance,
                progress=progress,
                cancel=cancel,
            )

        return self._run("Synthesize", work, self._show_image)

    def _show_image(self, rgb: np.ndarray) -> None:
        self.image = rgb
        self.cases, self.runs = [], {}  # a new image: earlier runs scored another one
        self.report_button.setEnabled(False)
        if "synthetic H&E" in self.viewer.layers:
            self.viewer.layers["synthetic H&E"].data = rgb
        else:
            self.viewer.add_image(rgb, name="synthetic H&E", rgb=True)
        self._show_labels(self.layout.labels, "layout", opacity=0.5, visible=False)
        self._say(
            f"Synthesized {rgb.shape[1]} x {rgb.shape[0]} px with {self.layout.n_nuclei} "
            "nuclei. Now run a method."
        )

    def list_plugin_commands(self) -> None:
        """Add the npe2 commands of the installed plugins to the method list."""
        from napari_cytosyn.testkit.runner import npe2_commands

        known = {self.method_combo.itemText(i) for i in range(self.method_combo.count())}
        added = 0
        for cid, _title in npe2_commands():
            spec = f"npe2:{cid}"
            if spec not in known and not cid.startswith(("napari.", "napari-cytosyn.")):
                self.method_combo.addItem(spec)
                added += 1
        self._say(f"{added} plugin command(s) added to the method list.")

    def run_method(self) -> Job | None:
        """Run the chosen method on the image and its stress variants and score it."""
        from napari_cytosyn.testkit.dataset import cases_from_image
        from napari_cytosyn.testkit.runner import MethodError, evaluate, resolve_method, summarize
        from napari_cytosyn.testkit.stress import variants_by_name

        if self.image is None or self.layout is None:
            self._fail("Run", ValueError("synthesize an image first"))
            return None
        try:
            method = resolve_method(self.method_combo.currentText())
            variants = variants_by_name(self.variants_edit.text().strip() or "all")
        except (MethodError, ValueError) as exc:
            self._fail("Run", exc)
            return None
        rgb, layout, seed = self.image, self.layout, self.seed_spin.value()
        model, steps = self.model, self.steps_spin.value()
        known = self.cases if [c.variant for c in self.cases] == [v.name for v in variants] else []

        def work(progress: Any, cancel: Any) -> Any:
            # The inpainted variant needs the synthesis model; cases are made once per image.
            cases = known or cases_from_image(
                rgb, layout, variants, seed=seed, model=model, steps=steps
            )
            rows, preds = evaluate(method, cases, progress=progress)
            return summarize(rows), cases, (method, rows, preds)

        def done(result: Any) -> None:
            summary, cases, run = result
            self.cases, self.variants = cases, variants
            if cases is not known:
                self.runs = {}
            self.runs[method.name] = run
            self.report_button.setEnabled(True)
            self._show_scores((summary, cases[0], run[2][cases[0].id]))

        return self._run(f"Run {method.name}", work, done)

    def save_report(self, folder: str | None = None) -> Job | None:
        """Write the test set of the current image, every method run on it, and the report
        into ``folder`` (asked for when not given) with the CLI's writers; in a worker."""
        from napari_cytosyn.testkit.dataset import write_cases, write_run
        from napari_cytosyn.testkit.report import write_report

        if not self.runs:
            self._fail("Save report", ValueError("run a method first"))
            return None
        if folder is None:
            from qtpy.QtWidgets import QFileDialog

            folder = QFileDialog.getExistingDirectory(self, "Save the test set and its report")
            if not folder:
                return None
        layout, cases, variants = self.layout, list(self.cases), list(self.variants)
        runs, model = dict(self.runs), self.model
        seed, steps = self.seed_spin.value(), self.steps_spin.value()
        guidance = self.guidance_spin.value()

        def work(progress: Any, cancel: Any) -> Any:
            write_cases(folder, layout, cases, variants, model, seed, steps, guidance)
            for method, rows, preds in runs.values():
                write_run(folder, method, rows, preds)
            return write_report(folder)

        return self._run("Save report", work, lambda path: self._say(f"Report written: {path}"))

    def _show_scores(self, result: Any) -> None:
        from napari.utils.colormaps import DirectLabelColormap

        from napari_cytosyn.testkit.metrics import error_map

        summary, case, pred = result
        self.summary = summary
        self.table.setRowCount(len(summary))
        for r, s in enumerate(summary):
            cells = [s["method"], s["variant"], *(f"{s[f]:.3f}" for f in TABLE_FIELDS)]
            for c, text in enumerate(cells):
                self.table.setItem(r, c, QTableWidgetItem(text))
        self.table.resizeColumnsToContents()
        if case.truth.shape == self.layout.shape:
            self._show_labels(pred, "prediction", opacity=0.5, visible=False)
            errors = error_map(case.truth, pred)
            layer = self._show_labels(errors, "errors", opacity=0.6)
            layer.colormap = DirectLabelColormap(color_dict=ERROR_COLOURS)
        first = summary[0]
        self._say(
            f"{first['method']} on {first['variant']}: F1 {first['f1']:.3f}, PQ {first['pq']:.3f}."
            " Errors layer: green matched, blue false positive, red missed."
        )


def _is_labels(layer: Any) -> bool:
    return type(layer).__name__ == "Labels"


def _spin(lo: int, hi: int, value: int, suffix: str) -> QSpinBox:
    s = QSpinBox()
    s.setRange(lo, hi)
    s.setValue(value)
    if suffix:
        s.setSuffix(f" {suffix}")
    return s


def _dspin(lo: float, hi: float, value: float, step: float, suffix: str) -> QDoubleSpinBox:
    s = QDoubleSpinBox()
    s.setRange(lo, hi)
    s.setSingleStep(step)
    s.setDecimals(2)
    s.setValue(value)
    if suffix:
        s.setSuffix(suffix)
    return s
