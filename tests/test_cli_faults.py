"""The command line under attack: stored code, outputs over inputs, foreign folders, absurd
inputs, kills and SIGTERM (issue 18, items 2, 5, 11, 13)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_cytosyn.cli import main
from napari_cytosyn.cli_masks import MaskError, fill_rings, read_mask
from napari_cytosyn.models.grf import GRFModel
from napari_cytosyn.sampling import SamplerSettings
from napari_cytosyn.slide.composite import CompositeSlide
from napari_cytosyn.slide.provenance import file_sha256
from napari_cytosyn.slide.store import MAX_CHUNKS, StoreError
from napari_cytosyn.slide.synthetic import SyntheticSlide

GRF = "py:napari_cytosyn.models.grf:GRFModel"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def cli(*args, cwd=None, check=False, timeout=180):
    return subprocess.run(
        [sys.executable, "-m", "napari_cytosyn.cli", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=ENV, cwd=cwd,
    )  # fmt: skip


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("napari-cytosyn: error:") and "\n" not in err, err
    return err


def small_store(path: Path) -> SyntheticSlide:
    slide = SyntheticSlide.create(
        path, GRFModel(), 128, 64, SamplerSettings(steps=2, seed=1), chunk_px=64
    )
    slide.render_all()
    return slide


def test_item2_a_store_naming_python_code_is_refused_by_render(tmp_path):
    store = tmp_path / "s.cytosyn"
    SyntheticSlide.create(store, GRFModel(), 128, 64, SamplerSettings(steps=2, seed=1), chunk_px=64)
    (tmp_path / "evil.py").write_text(
        "from pathlib import Path\n"
        "def factory():\n"
        "    Path('MARKER').write_text('ran')\n"
        "    from napari_cytosyn.models.grf import GRFModel\n"
        "    return GRFModel()\n"
    )
    meta_path = store / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"]["napari_cytosyn"]["recipe"]["model"]["name"] = "py:evil:factory"
    meta_path.write_text(json.dumps(meta))
    proc = cli("render", store, "-q", cwd=tmp_path)
    assert proc.returncode == 1
    assert "Python code" in proc.stderr and "--model py:evil:factory" in proc.stderr
    assert not (tmp_path / "MARKER").exists()
    # the API path (no model given) refuses too
    with pytest.raises(StoreError, match="Python code"):
        SyntheticSlide.open(store).ensure_chunk(0, 0, 0)
    assert not (tmp_path / "MARKER").exists()


def test_item5_out_can_never_be_an_input(tmp_path, ome_tiff_slide, capsys):
    slide = tmp_path / "case.ome.tiff"
    shutil.copyfile(ome_tiff_slide, slide)
    mask = tmp_path / "m.geojson"
    mask.write_text(json.dumps({"type": "Polygon", "coordinates": [
        [[10, 10], [60, 10], [60, 60], [10, 10]]]}))  # fmt: skip
    before = file_sha256(slide)
    for out in (slide, mask.with_suffix(".ome.zarr")):
        if out != slide:
            shutil.copyfile(mask, out)  # a mask named like an output is still an input
            args = ["--mask", str(out)]
        else:
            args = ["--mask", str(mask)]
        argv = ["inpaint", str(slide), *args, "--model", GRF, "--out", str(out), "--overwrite"]
        assert main(argv) == 1
        assert "which this job reads" in one_line_error(capsys)
    assert file_sha256(slide) == before
    # a folder holding the slide cannot be the output either
    folder = tmp_path / "inside.ome.zarr"
    folder.mkdir()
    shutil.copyfile(ome_tiff_slide, folder / "s.ome.tiff")
    argv = ["inpaint", str(folder / "s.ome.tiff"), "--mask", str(mask), "--model", GRF,
            "--out", str(folder), "--overwrite"]  # fmt: skip
    assert main(argv) == 1
    assert "contains" in one_line_error(capsys)
    assert (folder / "s.ome.tiff").is_file()


def test_item11_overwrite_removes_only_outputs_this_tool_wrote(
    tmp_path, generic_tiff_slide, capsys
):
    edits = tmp_path / "case.cytosyn"
    CompositeSlide(generic_tiff_slide, edits, chunk_px=256).close()
    argv = ["synthesize", "--width", "128", "--height", "64", "--seed", "0", "--model", GRF,
            "--steps", "2", "--chunk-px", "64", "--out", str(tmp_path / "case.ome.zarr"),
            "--overwrite", "-q"]  # fmt: skip
    assert main(argv) == 1
    assert "'edit-store' store" in one_line_error(capsys)
    assert (edits / "zarr.json").is_file()

    store = tmp_path / "s.cytosyn"
    small_store(store).close()
    foreign = tmp_path / "somefolder.ome.zarr"
    foreign.mkdir()
    (foreign / "data.txt").write_text("precious")
    argv = ["export", str(store), "--out", str(foreign), "--overwrite", "-q"]
    assert main(argv) == 1
    assert "not an export written by napari-cytosyn" in one_line_error(capsys)
    assert (foreign / "data.txt").read_text() == "precious"
    # an export of ours is replaced
    ours = tmp_path / "ours.ome.zarr"
    assert main(["export", str(store), "--out", str(ours), "-q"]) == 0
    assert main(["export", str(store), "--out", str(ours), "--overwrite", "-q"]) == 0


def test_item13_absurd_sizes_steps_mpp_and_devices_are_refused(tmp_path, capsys):
    cases = [
        (["--width", "10000000", "--height", "10000000"], "over the limit"),
        (["--width", "64", "--height", "64", "--steps", "1000000"], "--steps 1000000"),
        (["--width", "64", "--height", "64", "--mpp", "nan"], "--mpp nan"),
        (["--width", "64", "--height", "64", "--device", "cuda:7"], "cuda:7"),
    ]
    for extra, reason in cases:
        argv = ["synthesize", "--seed", "0", "--model", GRF, *extra,
                "--out", str(tmp_path / "x.cytosyn"), "-q"]  # fmt: skip
        assert main(argv) == 1, extra
        assert reason in one_line_error(capsys)
    assert not (tmp_path / "x.cytosyn").exists()


def test_item13_creation_cost_does_not_grow_with_the_slide(tmp_path):
    import tracemalloc

    tracemalloc.start()
    slide = SyntheticSlide.create(
        tmp_path / "big.cytosyn", GRFModel(), 500_000, 500_000, SamplerSettings(steps=2, seed=1)
    )
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    ny, nx = slide.store.grid(0)
    assert ny * nx <= MAX_CHUNKS
    assert peak < 9 * 1.4 * ny * nx + 5e6  # records + grid per chunk, no per-chunk objects
    missing = slide.iter_missing(0)
    assert next(iter(missing)) == (0, 0)


def test_item13_geojson_scales_with_area_skips_null_geometry_and_names_bad_polygons(tmp_path):
    from skimage.draw import polygon

    class Slide:
        level_shapes = ((3000, 3000),)

    n = 20_000
    ang = np.linspace(0, 2 * np.pi, n, endpoint=False)
    rad = 1000 + 200 * np.sin(50 * ang)
    ring = np.stack([1400 + rad * np.cos(ang), 1400 + rad * np.sin(ang)], 1)
    features = [
        {"type": "Feature", "geometry": None, "properties": {}},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring.tolist()]}},
    ]
    path = tmp_path / "m.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    t0 = time.perf_counter()
    with pytest.warns(UserWarning, match="without geometry"):
        [(_, mask)] = read_mask(path, Slide())
    assert time.perf_counter() - t0 < 20  # a point-in-polygon test per pixel took ~6 minutes
    small = ring[::50] / 10  # the same shape, 400 vertices: equal to skimage's fill
    ref = np.zeros((300, 300), bool)
    rr, cc = polygon(small[:, 1] - 0.5, small[:, 0] - 0.5, shape=(300, 300))
    ref[rr, cc] = True
    np.testing.assert_array_equal(fill_rings([small], (300, 300)), ref)
    assert mask.sum() > 0.9 * np.pi * 1000**2

    bad = [[[10, 10], [50, 10], [float("nan"), 40], [10, 10]]]
    features = [features[1], {"type": "Feature", "geometry": {"type": "Polygon",
                                                             "coordinates": bad}}]  # fmt: skip
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    with pytest.raises(MaskError, match=r"polygon 1 of m\.geojson has a non-finite"):
        read_mask(path, Slide())


TEMPORARY = (".tmp-", ".scratch-", ".edits-", ".creating-", ".deleting-")


def orphans(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*") if any(t in p.name for t in TEMPORARY))


def test_item13_sigterm_cleans_up_and_kill9_leftovers_are_removed_next_run(
    tmp_path, generic_tiff_slide
):
    mask = tmp_path / "m.geojson"
    mask.write_text(json.dumps({"type": "Polygon", "coordinates": [
        [[100, 100], [700, 100], [700, 700], [100, 100]]]}))  # fmt: skip
    out = tmp_path / "out.ome.zarr"
    argv = [sys.executable, "-m", "napari_cytosyn.cli", "inpaint", str(generic_tiff_slide),
            "--mask", str(mask), "--model", GRF, "--steps", "400", "--out", str(out)]  # fmt: skip
    for sig in (signal.SIGTERM, signal.SIGKILL):
        proc = subprocess.Popen(argv, env=ENV, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while not orphans(tmp_path) and time.time() < deadline:
            time.sleep(0.05)  # the temporary edit store exists: the job is working
        assert orphans(tmp_path), "the job never started"
        time.sleep(0.5)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
        if sig == signal.SIGTERM:
            assert proc.returncode == 143 and "terminated" in err
            assert orphans(tmp_path) == []
        else:
            assert orphans(tmp_path)  # kill -9 cannot clean up ...
    # ... the next job on the same output removes what the dead one left
    proc = cli("inpaint", generic_tiff_slide, "--mask", mask, "--model", GRF, "--steps", "2",
               "--out", out, "-q")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert orphans(tmp_path) == []


def test_synthesize_mpp_picks_the_embedded_model_scale_or_is_refused(tmp_path, capsys, monkeypatch):
    import napari_cytosyn.cli as cli
    from napari_cytosyn.models.embedded import has_40x_decoder

    argv = ["synthesize", "--seed", "0", "--width", "64", "--height", "64",
            "--out", str(tmp_path / "x.cytosyn"), "-q"]  # fmt: skip
    assert main([*argv, "--model", GRF, "--mpp", "0.25"]) == 1
    assert "generates at 0.5 um/px, not 0.25" in one_line_error(capsys)

    def loaded(name, *args, **kwargs):
        raise cli.CliError(f"would load {name}")

    monkeypatch.setattr(cli, "load_cli_model", loaded)
    assert main([*argv, "--model", "cytosyn-tiny", "--mpp", "0.25"]) == 1
    expected = "cytosyn-tiny-40x" if has_40x_decoder() else "cytosyn-tiny"
    assert one_line_error(capsys).endswith(f"would load {expected}")
    assert main([*argv, "--model", "cytosyn-tiny", "--mpp", "0.5"]) == 1
    assert one_line_error(capsys).endswith("would load cytosyn-tiny")
