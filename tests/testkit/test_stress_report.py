"""Stress variants change what they say and keep the truth aligned; a test set and its report
are written (with an oracle painter instead of the model, for speed)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_cytosyn.testkit.dataset import generate_testset, load_cases, run_testset
from napari_cytosyn.testkit.layouts import LayoutParams, procedural_layout
from napari_cytosyn.testkit.report import write_report
from napari_cytosyn.testkit.stress import Variant, apply_variant, variants_by_name


@pytest.fixture(scope="module")
def layout():
    return procedural_layout((96, 96), LayoutParams(density_per_mm2=3000), seed=0)


def test_variants_do_what_they_say(layout, painter):
    rgb = painter(layout)
    lab = layout.labels
    clean, _, _ = apply_variant(rgb, lab, 0.5, Variant("c", "clean"))
    assert np.array_equal(clean, rgb)
    blur, _, _ = apply_variant(rgb, lab, 0.5, Variant("b", "blur", 2.0))
    assert (
        np.abs(np.diff(blur.astype(float), axis=1)).mean()
        < np.abs(np.diff(rgb.astype(float), axis=1)).mean()
    )
    pale, _, _ = apply_variant(rgb, lab, 0.5, Variant("p", "stain_h", 0.5))
    nuc = lab > 0
    assert pale[nuc].mean() > rgb[nuc].mean() + 10  # nuclei lighter
    big, big_lab, mpp = apply_variant(rgb, lab, 0.5, Variant("s", "scale", 0.25))
    assert big.shape == (192, 192, 3) and big_lab.shape == (192, 192) and mpp == 0.25
    assert (big_lab > 0).sum() == pytest.approx(4 * nuc.sum(), rel=0.02)
    jpg, _, _ = apply_variant(rgb, lab, 0.5, Variant("j", "jpeg", 10))
    assert 0 < np.abs(jpg.astype(int) - rgb).mean() < 30
    n1, _, _ = apply_variant(rgb, lab, 0.5, Variant("n", "noise", 10), seed=3)
    n2, _, _ = apply_variant(rgb, lab, 0.5, Variant("n", "noise", 10), seed=3)
    assert np.array_equal(n1, n2) and np.abs(n1.astype(int) - rgb).mean() > 4


def test_bad_variants_are_named():
    with pytest.raises(ValueError, match="unknown stress kind"):
        Variant("x", "rain")
    with pytest.raises(ValueError, match="JPEG quality"):
        Variant("x", "jpeg", 0)
    with pytest.raises(ValueError, match="unknown stress variants"):
        variants_by_name("clean,fog")


def test_testset_run_and_report(tmp_path, layout, painter):
    variants = variants_by_name("clean,blur,scale_40x")
    folder = generate_testset(tmp_path / "set", [layout], variants=variants, synthesize_fn=painter)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [c["id"] for c in manifest["cases"]] == ["L000__clean", "L000__blur", "L000__scale_40x"]
    cases = load_cases(folder)
    assert np.array_equal(cases[0].truth, layout.labels) and cases[2].mpp == 0.25
    good = run_testset(folder, "builtin:otsu_watershed", cases=cases)
    bad = run_testset(folder, "builtin:threshold_components", cases=cases)
    assert good[0]["f1"] > 0.9
    assert all(g["f1"] >= b["f1"] for g, b in zip(good, bad, strict=True))
    assert good[0]["f1"] > bad[0]["f1"] and good[0]["aji"] > bad[0]["aji"]
    report = write_report(folder)
    text = report.read_text()
    assert "| otsu_watershed | clean |" in text and "threshold_components" in text
    for name in (
        "f1_by_variant.png",
        "pq_aji_by_variant.png",
        "bias_by_variant.png",
        "examples.png",
        "summary.csv",
        "summary.json",
        "scores.csv",
    ):
        assert (report.parent / name).stat().st_size > 100, name
    summary = json.loads((report.parent / "summary.json").read_text())
    assert {(s["method"], s["variant"]) for s in summary} == {
        (m, v)
        for m in ("otsu_watershed", "threshold_components")
        for v in ("clean", "blur", "scale_40x")
    }
