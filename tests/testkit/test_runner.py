"""Each method kind runs and is scored: builtin, Python callable, shell command, npe2 command."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

from napari_cytosyn.testkit.methods import otsu_watershed
from napari_cytosyn.testkit.runner import (
    Case,
    MethodError,
    evaluate,
    resolve_method,
    summarize,
)

HERE = Path(__file__).parent


@pytest.fixture
def case(training_like_image):
    truth = otsu_watershed(training_like_image)
    return Case("L000__clean", "L000", "clean", training_like_image, truth, 0.5)


def _perfect(method, case):
    rows, preds = evaluate(method, [case])
    assert rows[0]["f1"] == 1.0 and rows[0]["n_true"] == 16
    assert np.array_equal(preds[case.id] > 0, case.truth > 0)
    return rows


def test_builtin_and_python_callable(case):
    _perfect(resolve_method("builtin:otsu_watershed"), case)
    m = resolve_method("napari_cytosyn.testkit.methods:otsu_watershed")
    assert m.name == "otsu_watershed"
    _perfect(m, case)


def test_callable_gets_mpp_when_it_asks(case):
    seen = []

    def seg(rgb, mpp):
        seen.append(mpp)
        return otsu_watershed(rgb)

    sys.modules["_testkit_mpp"] = type(sys)("_testkit_mpp")
    sys.modules["_testkit_mpp"].seg = seg
    try:
        _perfect(resolve_method("python:_testkit_mpp:seg"), case)
    finally:
        del sys.modules["_testkit_mpp"]
    assert seen == [0.5]


def test_shell_command_template(case):
    script = shlex.quote(str(HERE / "_seg_plugin.py"))
    m = resolve_method(f"shell:{shlex.quote(sys.executable)} {script} {{input}} {{output}}")
    rows, preds = evaluate(m, [case])
    assert rows[0]["f1"] == 1.0
    assert preds["L000__clean"].shape == case.truth.shape


def test_shell_failures_are_named(case):
    with pytest.raises(MethodError, match=r"\{input\} and \{output\}"):
        resolve_method("shell:echo hello")
    m = resolve_method(
        f"shell:{shlex.quote(sys.executable)} -c 'raise SystemExit(3)' {{input}} {{output}}"
    )
    with pytest.raises(MethodError, match="exited with 3"):
        m.segment(case.rgb)
    with pytest.raises(MethodError, match="not found"):
        resolve_method("shell:/no/such/tool {input} {output}").segment(case.rgb)


def test_npe2_command_of_a_plugin_registered_at_runtime(case, monkeypatch):
    from npe2 import PluginManager, PluginManifest

    monkeypatch.syspath_prepend(str(HERE))  # the plugin's module, _seg_plugin.py

    manifest = PluginManifest(
        name="cytosyn-testkit-plugin",
        contributions={
            "commands": [
                {
                    "id": "cytosyn-testkit-plugin.segment",
                    "title": "Segment nuclei",
                    "python_name": "_seg_plugin:segment_layer_data",
                }
            ]
        },
    )
    # A plugin manager of its own: a napari viewer made earlier in this process listens to the
    # global one and would register the command in napari's app a second time.
    pm = PluginManager()
    monkeypatch.setattr(PluginManager, "_PluginManager__instance", pm)
    pm.register(manifest)
    try:
        m = resolve_method("npe2:cytosyn-testkit-plugin.segment")
        _perfect(m, case)
    finally:
        pm.unregister("cytosyn-testkit-plugin")
    with pytest.raises(MethodError, match="no npe2 command"):
        resolve_method("npe2:cytosyn-testkit-plugin.segment")


def test_bad_specs_and_outputs_are_named(case):
    with pytest.raises(MethodError, match="cannot import"):
        resolve_method("no_such_module_xyz:f")
    with pytest.raises(MethodError, match="no attribute"):
        resolve_method("napari_cytosyn.testkit.methods:nope")
    with pytest.raises(MethodError, match="unknown builtin"):
        resolve_method("builtin:stardist")
    sys.modules["_testkit_bad"] = type(sys)("_testkit_bad")
    sys.modules["_testkit_bad"].seg = lambda rgb: np.zeros((3, 3), np.int32)
    try:
        with pytest.raises(MethodError, match="returned shape"):
            resolve_method("_testkit_bad:seg").segment(case.rgb)
    finally:
        del sys.modules["_testkit_bad"]


def test_summarize_means_per_variant(case):
    rows, _ = evaluate(resolve_method("builtin:otsu_watershed"), [case, case])
    rows += evaluate(resolve_method("builtin:threshold_components"), [case])[0]
    summary = summarize(rows)
    assert [(s["method"], s["images"]) for s in summary] == [
        ("otsu_watershed", 2),
        ("threshold_components", 1),
    ]
    assert summary[0]["f1"] == 1.0 and summary[0]["n_true"] == 32
