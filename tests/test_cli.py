"""The `napari-cytosyn` command line, end to end in subprocesses (GRF test model, tiny slides)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import zarr

from napari_cytosyn.cli import main

GRF = "py:napari_cytosyn.models.grf:GRFModel"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def run_cli(*args, check=True, timeout=120):
    proc = subprocess.run(
        [sys.executable, "-m", "napari_cytosyn.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr}")
    return proc


def reference_level0(tmp_path, width, height, seed, steps, chunk_px, chunks=None):
    """The same synthetic slide rendered in this process, single-threaded (only ``chunks``
    when given; the others stay white)."""
    import torch

    from napari_cytosyn.models.grf import GRFModel
    from napari_cytosyn.sampling import SamplerSettings
    from napari_cytosyn.slide.synthetic import SyntheticSlide

    torch.set_num_threads(1)
    settings = SamplerSettings(steps=steps, seed=seed)
    slide = SyntheticSlide.create(
        tmp_path / "reference.cytosyn",
        GRFModel(),
        width,
        height,
        settings.replace(seed=seed),
        chunk_px=chunk_px,
    )
    slide.render_all(chunks=chunks)
    return np.asarray(slide.store.level_array(0)[...])


def test_synthesize_exports_valid_ome_zarr_then_info_and_export_to_tiff(tmp_path, capsys):
    import ome_zarr_models
    import tifffile

    out = tmp_path / "syn.ome.zarr"
    run_cli("synthesize", "--width", 256, "--height", 128, "--seed", 3, "--model", GRF,
            "--steps", 4, "--chunk-px", 128, "--out", out, "-q")  # fmt: skip
    root = zarr.open_group(str(out), mode="r")
    ome_zarr_models.open_ome_zarr(root)  # raises unless valid NGFF 0.4
    prov = root.attrs["napari_cytosyn"]
    assert (
        prov["seed"] == 3
        and prov["model"]["name"] == "grf"
        and prov["sampler"]["core"]["steps"] == 4
    )
    level0 = np.moveaxis(root["0"][...], 0, -1)
    np.testing.assert_array_equal(level0, reference_level0(tmp_path, 256, 128, 3, 4, 128))

    store = tmp_path / "syn.cytosyn"  # kept beside the export, for `render`/resume
    # the follow-up commands run in this process (same code path, no interpreter start-up)
    assert main(["info", str(store), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["kind"] == "synthetic"
    assert info["chunks_done"] == info["chunks_total"] == 2
    assert info["level_shapes"][0] == [128, 256]

    tif = tmp_path / "syn.ome.tif"
    assert main(["export", str(store), "--out", str(tif), "--compression", "deflate", "-q"]) == 0
    with tifffile.TiffFile(tif) as tf:
        np.testing.assert_array_equal(tf.series[0].levels[0].asarray(), level0)
    assert main(["info", str(tif), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["provenance"]["seed"] == 3 and info["mpp"] == [0.5, 0.5]
    assert main(["info", str(tif)]) == 0  # the text form names the recipe's steps
    assert "provenance: model grf, seed 3, steps 4" in capsys.readouterr().out


def test_existing_output_is_refused_with_one_line_and_left_untouched(tmp_path):
    out = tmp_path / "x.ome.zarr"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    proc = run_cli("synthesize", "--width", 64, "--height", 64, "--seed", 0, "--model", GRF,
                   "--out", out, check=False)  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0
    assert "already exists" in proc.stderr and "--overwrite" in proc.stderr
    assert (out / "keep.txt").read_text() == "mine"
    assert not (tmp_path / "x.cytosyn").exists()  # failed before doing any work


def test_bad_input_gives_one_line_reasons_and_nonzero_exit(tmp_path, capsys, generic_tiff_slide):
    cases = [
        (["synthesize", "--width", "64", "--height", "64", "--seed", "0",
          "--model", "no-such-model", "--out", str(tmp_path / "a.ome.zarr")], "unknown model"),
        (["export", str(tmp_path / "missing.svs"), "--out", str(tmp_path / "b.ome.zarr")], ""),
        (["export", str(generic_tiff_slide), "--out", str(tmp_path / "b.png")], "*.ome.zarr"),
        (["inpaint", str(generic_tiff_slide), "--mask", str(tmp_path / "none.geojson"),
          "--out", str(tmp_path / "c.ome.zarr")], "does not exist"),
    ]  # fmt: skip
    outside = tmp_path / "outside.geojson"
    outside.write_text(json.dumps({"type": "Polygon", "coordinates": [
        [[1500, 10], [1700, 10], [1700, 100], [1500, 10]]]}))  # fmt: skip
    cases.append((["inpaint", str(generic_tiff_slide), "--mask", str(outside),
                   "--out", str(tmp_path / "d.ome.zarr")], "outside the slide"))  # fmt: skip
    empty = tmp_path / "empty.png"
    import imageio.v3 as iio

    iio.imwrite(empty, np.zeros((1104, 1536), np.uint8))
    cases.append((["inpaint", str(generic_tiff_slide), "--mask", str(empty),
                   "--out", str(tmp_path / "e.ome.zarr")], "empty"))  # fmt: skip
    broken = tmp_path / "broken.svs"
    broken.write_bytes(b"II*\x00" + bytes(64))
    cases.append((["info", str(broken)], "broken.svs"))
    cases.append((["export", str(broken), "--out", str(tmp_path / "f.ome.tif")], "broken.svs"))
    for argv, reason in cases:
        assert main(argv) == 1, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("napari-cytosyn: error:") and "\n" not in err, err
        assert reason in err, err
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["broken.svs", "empty.png", "outside.geojson"]  # no output, no leftovers


def test_interrupted_synthesize_resumes_and_gives_the_same_pixels(tmp_path):
    # 48 chunks: enough work left after the first chunk lands that the interrupt cannot race
    # the end of the run on a fast machine (12 chunks did).
    out = tmp_path / "big.ome.zarr"
    argv = [sys.executable, "-m", "napari_cytosyn.cli", "synthesize", "--width", "1024",
            "--height", "768", "--seed", "9", "--model", GRF, "--steps", "4",
            "--chunk-px", "128", "--out", str(out), "-q"]  # fmt: skip
    # A runner that starts the suite in the background (SIGINT ignored, inherited across exec)
    # would make the CLI deaf to the interrupt: give the child the default disposition.
    proc = subprocess.Popen(
        argv,
        env=ENV,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    done_map = tmp_path / "big.cytosyn" / "done" / "0"

    def marked() -> int:  # chunks marked finished on disk (the map may be mid-write)
        try:
            return int(np.count_nonzero(zarr.open_array(str(done_map), mode="r")[...]))
        except Exception:
            return 0

    # Interrupt once a chunk is marked done (a chunk file alone may not be marked yet).
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        if done_map.exists() and marked() >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "run the same command again to resume" in err
    assert not out.exists()

    resumed = subprocess.run(argv[:-1], env=ENV, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    done_before = int(resumed.stderr.split("(")[1].split()[0])
    assert 1 <= done_before < 48
    level0 = np.moveaxis(zarr.open_group(str(out), mode="r")["0"][...], 0, -1)
    # the first chunk (rendered before the interruption) and the last (after it)
    ref = reference_level0(tmp_path, 1024, 768, 9, 4, 128, chunks=[(0, 0), (5, 7)])
    np.testing.assert_array_equal(level0[:128, :128], ref[:128, :128])
    np.testing.assert_array_equal(level0[640:, 896:], ref[640:, 896:])


def test_inpaint_geojson_exports_composite_with_mask_and_untouched_outside(
    tmp_path, generic_tiff_slide, slide_levels
):
    geo = tmp_path / "mask.geojson"
    square = [[600, 400], [760, 400], [760, 520], [600, 520], [600, 400]]
    feature = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [square]}}
    geo.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}))
    out = tmp_path / "edited.ome.zarr"
    run_cli("inpaint", generic_tiff_slide, "--mask", geo, "--model", GRF, "--steps", 4,
            "--seed", 2, "--out", out, "-q")  # fmt: skip
    root = zarr.open_group(str(out), mode="r")
    mask = root["labels/synthetic/0"][0].astype(bool)
    expected = np.zeros(mask.shape, bool)
    expected[400:520, 600:760] = True
    np.testing.assert_array_equal(mask, expected)
    level0 = np.moveaxis(root["0"][...], 0, -1)
    np.testing.assert_array_equal(level0[~mask], slide_levels[0][~mask])
    assert np.any(level0[mask] != slide_levels[0][mask])
    prov = root.attrs["napari_cytosyn"]
    assert prov["source"]["name"] == generic_tiff_slide.name
    assert len(prov["source"]["sha256"]) == 64
    assert prov["synthetic"]["kind"] == "composite" and len(prov["synthetic"]["edits"]) == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no leftovers


def test_mask_image_at_a_coarse_level_maps_to_level0_components(tmp_path, generic_tiff_slide):
    import imageio.v3 as iio

    from napari_cytosyn.cli_masks import read_mask
    from napari_cytosyn.slide import open_slide

    slide = open_slide(generic_tiff_slide)  # levels at downsample 1, 2, 6
    coarse = np.zeros(slide.level_shapes[1], np.uint8)
    coarse[10:20, 30:40] = 255
    coarse[100:105, 200:210] = 1
    path = tmp_path / "mask.png"
    iio.imwrite(path, coarse)
    components = sorted(read_mask(path, slide, level=1), key=lambda c: c[0])
    assert [region for region, _ in components] == [(20, 60, 20, 20), (200, 400, 10, 20)]
    assert all(m.all() for _, m in components)


def test_demo_writes_synthetic_and_inpainted_ome_zarr_and_a_preview(tmp_path):
    import imageio.v3 as iio
    import ome_zarr_models

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--size", "128", "--steps", "4", "--model", GRF,
                 "-q"]) == 0  # fmt: skip
    synthetic = zarr.open_group(str(out / "synthetic.ome.zarr"), mode="r")
    inpainted = zarr.open_group(str(out / "inpainted.ome.zarr"), mode="r")
    ome_zarr_models.open_ome_zarr(inpainted["labels/synthetic"])
    mask = inpainted["labels/synthetic/0"][0].astype(bool)
    assert 0.05 < mask.mean() < 0.3  # the centred disc
    before = np.moveaxis(synthetic["0"][...], 0, -1)
    after = np.moveaxis(inpainted["0"][...], 0, -1)
    np.testing.assert_array_equal(after[~mask], before[~mask])
    assert synthetic.attrs["napari_cytosyn"]["sampler"]["core"]["steps"] == 4
    preview = iio.imread(out / "preview.png")
    assert preview.shape == (128, 2 * 128 + 8, 3)
    assert main(["demo", "--out", str(out), "--size", "128", "--model", GRF, "-q"]) == 1


def test_demo_with_the_conditional_default_model_works_below_two_tiles(tmp_path, capsys):
    """cytosyn-tiny's ring reference needs an image of two model tiles (448 px); smaller demos
    inpaint unconditioned (``--size 256`` used to fail with "no real tissue within 224 px")."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--size", "256", "--steps", "1"]) == 0
    said = capsys.readouterr().err
    assert "--size 256 < 448 px (two model tiles): inpainting unconditioned" in said
    edits = zarr.open_group(str(out / "inpainted.edits"), mode="r").attrs["napari_cytosyn"]["edits"]
    assert len(edits) == 1 and "reference" not in edits[0]
    assert edits[0]["recipe"]["model"]["name"] == "cytosyn-tiny"
    assert edits[0]["mask_px"] > 0.05 * 256 * 256


def test_autocast_flag_reaches_the_sampler_settings(capsys):
    import pytest

    from napari_cytosyn.cli import build_parser, sampler_settings

    base = ["synthesize", "--width", "64", "--height", "64", "--seed", "1", "--out", "x.ome.zarr"]
    args = build_parser().parse_args([*base, "--model", GRF])
    assert sampler_settings(args, 1).autocast == "auto"
    args = build_parser().parse_args([*base, "--model", GRF, "--autocast", "off"])
    assert sampler_settings(args, 1).autocast == "off"
    with pytest.raises(SystemExit):
        build_parser().parse_args([*base, "--autocast", "half"])
    assert "invalid choice: 'half'" in capsys.readouterr().err


def test_python_m_napari_cytosyn_reaches_every_subcommand():
    import argparse

    from napari_cytosyn.cli import SUBCOMMANDS, build_parser

    actions = build_parser()._actions
    sub = next(a for a in actions if isinstance(a, argparse._SubParsersAction))
    assert sorted(SUBCOMMANDS) == sorted(sub.choices)
