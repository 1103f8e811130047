"""``napari-cytosyn testkit run|report|methods`` on a test set (made with the oracle painter)."""

from __future__ import annotations

import json

import numpy as np

from napari_cytosyn.cli import main
from napari_cytosyn.testkit.dataset import generate_testset
from napari_cytosyn.testkit.layouts import procedural_layout
from napari_cytosyn.testkit.stress import variants_by_name


def test_run_and_report_from_the_command_line(tmp_path, capsys, painter):
    folder = generate_testset(
        tmp_path / "set",
        [procedural_layout((96, 96), seed=1)],
        variants=variants_by_name("clean,noise"),
        synthesize_fn=painter,
    )
    rc = main(
        [
            "testkit",
            "run",
            str(folder),
            "--method",
            "builtin:otsu_watershed",
            "--method",
            "napari_cytosyn.testkit.methods:threshold_components",
            "--report",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "otsu_watershed" in out and "threshold_components" in out
    assert (folder / "runs" / "otsu_watershed" / "rows.csv").is_file()
    summary = json.loads((folder / "report" / "summary.json").read_text())
    assert len(summary) == 4
    rc = main(["testkit", "report", str(folder), "--out", str(tmp_path / "rep")])
    assert rc == 0 and (tmp_path / "rep" / "report.md").is_file()


def test_errors_are_one_line(tmp_path, capsys, painter):
    assert main(["testkit", "run", str(tmp_path), "--method", "builtin:otsu_watershed"]) == 1
    assert "is not a test set" in capsys.readouterr().err
    folder = generate_testset(
        tmp_path / "s",
        [procedural_layout((64, 64), seed=0)],
        variants=variants_by_name("clean"),
        synthesize_fn=painter,
    )
    assert main(["testkit", "run", str(folder), "--method", "builtin:nope"]) == 1
    assert "unknown builtin method" in capsys.readouterr().err


def test_methods_lists_builtins(capsys):
    assert main(["testkit", "methods"]) == 0
    out = capsys.readouterr().out
    assert "builtin:otsu_watershed" in out and "builtin:threshold_components" in out


def test_generate_from_a_label_image_and_from_real_tissue(tmp_path, training_like_image):
    import tifffile
    from skimage.io import imsave

    lab = np.zeros((96, 96), np.int32)
    lab[20:34, 20:34] = 5
    lab[60:70, 50:66] = 9
    tifffile.imwrite(tmp_path / "layout.tif", lab)
    out = tmp_path / "from_labels"
    rc = main(
        [
            "testkit",
            "generate",
            "--out",
            str(out),
            "--labels",
            str(tmp_path / "layout.tif"),
            "--labels-mpp",
            "0.25",
            "--steps",
            "2",
            "--variants",
            "clean,scale_40x",
            "--device",
            "cpu",
            "-q",
        ]
    )
    assert rc == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["layouts"][0]["n_nuclei"] == 2 and manifest["layouts"][0]["shape"] == [48, 48]
    assert manifest["model"]["name"] == "cytosyn-tiny-cells"
    truth = tifffile.imread(out / "truth" / "L000__scale_40x.tif")
    assert truth.shape == (96, 96) and len(np.unique(truth)) == 3
    imsave(tmp_path / "he.png", training_like_image)
    out = tmp_path / "twin"
    rc = main(
        [
            "testkit",
            "generate",
            "--out",
            str(out),
            "--from-image",
            str(tmp_path / "he.png"),
            "--steps",
            "2",
            "--variants",
            "clean",
            "--device",
            "cpu",
            "-q",
        ]
    )
    assert rc == 0
    assert json.loads((out / "manifest.json").read_text())["layouts"][0]["n_nuclei"] == 16


def test_reference_image_needs_an_image_and_a_model_that_takes_one(tmp_path, capsys):
    import numpy as np
    from skimage.io import imsave

    out = str(tmp_path / "set")
    assert main(["testkit", "generate", "--out", out, "--reference-image", "--count", "1"]) == 1
    assert "--reference-image conditions on --from-image" in capsys.readouterr().err
    img = np.full((64, 64, 3), (215, 120, 170), np.uint8)
    img[20:30, 20:30] = (90, 50, 140)
    imsave(tmp_path / "he.png", img, check_contrast=False)
    args = ["testkit", "generate", "--out", out, "--from-image", str(tmp_path / "he.png")]
    assert main([*args, "--reference-image", "--variants", "clean"]) == 1
    err = capsys.readouterr().err
    assert "reference" in err and "cytosyn-tiny-cells" in err  # takes no reference: said so
