"""The "Test a segmentation tool" widget drives a whole run: layout, synthesis, method, scores,
truth / prediction / errors layers (oracle painter instead of the model, for speed)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cytosyn._napari._qt import _testkit_widget
from napari_cytosyn.models.cells import layout_mask


def _paint(layout, model=None, seed=0, steps=None, guidance=1.0):
    img = np.full((*layout.shape, 3), (235, 175, 205), np.uint8)
    img[layout_mask(layout.labels) > 0] = (95, 60, 145)
    return img


@pytest.fixture
def widget(make_napari_viewer):
    viewer = make_napari_viewer()
    w = _testkit_widget.TestkitWidget(viewer)
    viewer.window.add_dock_widget(w)
    w.synthesize_fn = _paint
    return w


def test_whole_run_from_layout_to_scores(widget):
    widget.size_spin.setValue(128)
    widget.seed_spin.setValue(3)
    layout = widget.make_layout()
    assert np.array_equal(widget.viewer.layers["layout"].data, layout.labels)
    job = widget.synthesize()
    assert job.wait(120_000) and job.state == "done", job.error
    assert widget.viewer.layers["synthetic H&E"].data.shape == (128, 128, 3)
    widget.variants_edit.setText("clean,blur")
    job = widget.run_method()
    assert job.wait(120_000) and job.state == "done", job.error
    assert [s["variant"] for s in widget.summary] == ["clean", "blur"]
    assert widget.summary[0]["f1"] > 0.9
    assert widget.table.rowCount() == 2 and widget.table.item(0, 0).text() == "otsu_watershed"
    errors = widget.viewer.layers["errors"].data
    assert set(np.unique(errors)) <= {0, 1, 2, 3} and (errors == 1).sum() > 0
    assert "prediction" in widget.viewer.layers


def test_a_painted_labels_layer_is_a_layout_and_bad_methods_are_reported(widget):
    lab = np.zeros((64, 64), np.int32)
    lab[10:20, 10:20] = 1
    lab[40:50, 30:42] = 2
    widget.viewer.add_labels(lab, name="painted")
    widget.source_combo.setCurrentText("painted")
    job = widget.synthesize()
    assert job.wait(120_000) and job.state == "done", job.error
    assert widget.layout.n_nuclei == 2
    widget.method_combo.setCurrentText("builtin:nope")
    assert widget.run_method() is None
    assert "unknown builtin method" in widget.status.text()


def test_save_report_writes_the_cli_report_of_every_method_run(widget, tmp_path):
    import json

    from napari_cytosyn.testkit.dataset import load_cases, read_manifest

    widget.size_spin.setValue(96)
    widget.make_layout()
    assert widget.save_report(str(tmp_path / "none")) is None  # nothing run yet
    assert "run a method first" in widget.status.text()
    job = widget.synthesize()
    assert job.wait(120_000) and job.state == "done", job.error
    widget.variants_edit.setText("clean,noise")
    for method in ("builtin:otsu_watershed", "builtin:threshold_components"):
        widget.method_combo.setCurrentText(method)
        job = widget.run_method()
        assert job.wait(120_000) and job.state == "done", job.error
    assert widget.report_button.isEnabled() and set(widget.runs) == {
        "otsu_watershed",
        "threshold_components",
    }
    folder = tmp_path / "report-set"
    job = widget.save_report(str(folder))
    assert job.wait(120_000) and job.state == "done", job.error
    report = folder / "report"
    for name in ("report.md", "summary.csv", "summary.json", "scores.csv", "f1_by_variant.png"):
        assert (report / name).is_file(), name
    summary = json.loads((report / "summary.json").read_text())
    assert len(summary) == 4  # two methods x two variants
    got = {(s["method"], s["variant"]): s["f1"] for s in summary}
    # The widget's table shows the last method; its scores are the report's.
    for s in widget.summary:
        assert got[(s["method"], s["variant"])] == pytest.approx(s["f1"])
    # The saved folder is a test set the CLI reads: same cases, same truth.
    assert [c["variant"] for c in read_manifest(folder)["cases"]] == ["clean", "noise"]
    [clean, _] = load_cases(folder)
    np.testing.assert_array_equal(clean.truth, widget.layout.labels)
    np.testing.assert_array_equal(clean.rgb, widget.image)
    assert "Report written" in widget.status.text()
