"""Fault matrix: kill, corrupt, race and misuse the CLI and stores, count what survives.

Every fault runs the real command line in subprocesses (GRF test model, small slides, so the
cost is process start-up, not a network) on real stores in a temporary folder, then checks the
outcome against a reference rendered once in this process:

- ``survived``: the job either produced the reference pixels / kept every record, or failed
  with a one-line reason and the documented recovery (rerun, ``render``, ``check --repair``)
  restored the reference;
- ``silent_corruption``: a command exited 0 (or a read succeeded) with pixels that differ from
  the reference, or an export that lacks an edit;
- ``data_lost``: something the user made (a slide file, an edit record, a foreign folder, a
  finished store) was removed or changed;
- ``orphans_left``: temporary files and folders (``.tmp-*``, ``.scratch-*``, ``.edits-*``,
  ``.creating-*``, ``.deleting-*``, ``<store>/.tmp/*``) still present after the recovery runs.

A disk-full fault needs a small tmpfs (root only); without root it is skipped with a message.

    python benchmarks/faults.py          # every fault (~3-6 minutes on 2 cores)
    python benchmarks/faults.py --quick  # a subset

Last line: ``RESULT {"faults_tried": ..., "faults_survived": ..., "silent_corruptions": ...,
"data_lost": ..., "orphans_left": ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

GRF = "py:napari_cytosyn.models.grf:GRFModel"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
W, H, CHUNK, STEPS, SEED = 256, 192, 64, 4, 3
TEMPORARY = (".tmp-", ".scratch-", ".edits-", ".creating-", ".deleting-", ".job-")


def cli(
    *args: object, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "napari_cytosyn.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=cwd,
        timeout=timeout,
    )


def synth_args(out: Path, *extra: object) -> list[object]:
    return ["synthesize", "--width", W, "--height", H, "--seed", SEED, "--model", GRF,
            "--steps", STEPS, "--chunk-px", CHUNK, "--out", out, "-q", *extra]  # fmt: skip


def read_export(path: Path) -> np.ndarray:
    import zarr

    return np.moveaxis(np.asarray(zarr.open_group(str(path), mode="r")["0"][...]), 0, -1)


def orphans(folder: Path) -> list[str]:
    found = [p for p in folder.rglob(".*") if any(t in p.name for t in TEMPORARY)]
    found += [p for p in folder.rglob(".tmp") if p.is_dir() for p in p.iterdir()]
    return sorted(str(p.relative_to(folder)) for p in found)


class Matrix:
    """Runs faults and keeps the counts."""

    def __init__(self, work: Path, reference: np.ndarray) -> None:
        self.work, self.reference = work, reference
        self.counts = dict(
            faults_tried=0, faults_survived=0, silent_corruptions=0, data_lost=0, orphans_left=0
        )
        self.rows: list[tuple[str, str]] = []

    def run(self, name: str, fault: Callable[[Path], str]) -> None:
        folder = self.work / name
        folder.mkdir()
        self.counts["faults_tried"] += 1
        t0 = time.perf_counter()
        try:
            outcome = fault(folder)
        except Exception as exc:  # a fault that breaks the harness counts as not survived
            outcome = f"error: {type(exc).__name__}: {exc}"
        left = orphans(folder)
        if left:
            self.counts["orphans_left"] += len(left)
            outcome += f" (orphans: {left})"
        if outcome == "survived" and not left:
            self.counts["faults_survived"] += 1
        elif outcome.startswith("silent"):
            self.counts["silent_corruptions"] += 1
        elif outcome.startswith("lost"):
            self.counts["data_lost"] += 1
        self.rows.append((name, outcome))
        print(f"{name:<34} {outcome}  ({time.perf_counter() - t0:.1f} s)", flush=True)

    def exported_is_reference(self, store: Path, out: Path) -> str:
        """Export ``store``; a 0 exit must give the reference, else the failure must be clear."""
        proc = cli("export", store, "--out", out, "-q", "--overwrite")
        if proc.returncode == 0:
            same = np.array_equal(read_export(out), self.reference)
            return "survived" if same else "silent: export exited 0 with wrong pixels"
        return "failed" if "error:" in proc.stderr else f"unclear failure: {proc.stderr[-200:]}"


def kill_during(argv: list[object], sig: int, wait_for: Callable[[], bool]) -> int:
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_cytosyn.cli", *map(str, argv)],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not wait_for() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.wait(timeout=60)


def make_faults(m: Matrix, slide_file: Path, quick: bool) -> list[tuple[str, Callable]]:
    def done_chunks(store: Path) -> Callable[[], bool]:
        def check() -> bool:
            return any((store / "levels" / "0" / "c").rglob("0")) if store.exists() else False

        return check

    def interrupted_render(sig: int) -> Callable[[Path], str]:
        def fault(d: Path) -> str:
            out = d / "s.ome.zarr"
            store = d / "s.cytosyn"
            kill_during(synth_args(out), sig, done_chunks(store))
            proc = cli(*synth_args(out))
            if proc.returncode != 0:
                return f"failed to resume: {proc.stderr[-200:]}"
            same = np.array_equal(read_export(out), m.reference)
            return "survived" if same else "silent: resumed export differs"

        return fault

    def rendered_store(d: Path) -> Path:
        proc = cli(*synth_args(d / "s.cytosyn"))
        assert proc.returncode == 0, proc.stderr
        return d / "s.cytosyn"

    def damaged_chunk(how: str) -> Callable[[Path], str]:
        def fault(d: Path) -> str:
            store = rendered_store(d)
            f = store / "levels" / "0" / "c" / "1" / "2" / "0"
            raw = f.read_bytes()
            if how == "delete":
                f.unlink()
            elif how == "truncate":
                f.write_bytes(raw[:-9])
            elif how == "empty":
                f.write_bytes(b"")
            else:
                flipped = bytearray(raw)
                flipped[len(raw) // 2] ^= 0x04
                f.write_bytes(bytes(flipped))
            first = m.exported_is_reference(store, d / "a.ome.zarr")
            if first.startswith("silent") or first.startswith("unclear"):
                return first
            # recovery: check --repair (what the error says), render, export
            cli("check", store, "--repair")
            proc = cli("render", store, "--model", GRF, "-q")
            if proc.returncode != 0:
                return f"render failed: {proc.stderr[-200:]}"
            return m.exported_is_reference(store, d / "b.ome.zarr")

        return fault

    def garbled_map(d: Path) -> str:
        store = rendered_store(d)
        (store / "done" / "0" / "c" / "0" / "0").write_bytes(b"\x00garbage")
        proc = cli("info", store)
        if proc.returncode == 0:
            return "silent: info accepted a garbled completion map"
        if "--repair" not in proc.stderr:
            return f"unclear failure: {proc.stderr[-200:]}"
        cli("check", store, "--repair")
        cli("render", store, "--model", GRF, "-q")
        return m.exported_is_reference(store, d / "a.ome.zarr")

    def damaged_phase_cache(d: Path) -> str:
        store = rendered_store(d)
        for i, entry in enumerate(p for p in (store / "phase_cache").iterdir() if p.is_dir()):
            if entry.name.startswith("."):
                continue
            chunk = next(f for f in entry.iterdir() if f.name != "zarr.json")
            raw = bytearray(chunk.read_bytes())
            if i % 2:
                raw[len(raw) // 3] ^= 0x01
                chunk.write_bytes(bytes(raw))
            else:
                chunk.write_bytes(bytes(raw[: len(raw) // 2]))
        for f in (store / "levels" / "0" / "c").rglob("0"):
            if f.is_file():
                f.unlink()  # every chunk must be computed again, from the damaged cache
        cli("render", store, "--model", GRF, "-q")
        return m.exported_is_reference(store, d / "a.ome.zarr")

    def edited_geometry(d: Path) -> str:
        store = rendered_store(d)
        meta_path = store / "levels" / "0" / "zarr.json"
        meta = json.loads(meta_path.read_text())
        meta["shape"] = [H, W - 32, 3]
        meta_path.write_text(json.dumps(meta))
        out = m.exported_is_reference(store, d / "a.ome.zarr")
        return "survived" if out == "failed" else out

    def racing_creators(d: Path) -> str:
        store = d / "race.cytosyn"
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "napari_cytosyn.cli",
                    *map(str, synth_args(store)[:-1]),
                    "--seed",
                    str(seed),
                    "-q",
                ],  # later --seed wins
                env=ENV,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for seed in (SEED, SEED + 1)
        ]
        codes = [p.wait(timeout=300) for p in procs]
        from napari_cytosyn.slide.synthetic import SyntheticSlide

        slide = SyntheticSlide.open(store, mode="r")
        pixels = np.asarray(slide.store.level_array(0)[...])
        seed = slide.seed
        slide.close()
        if seed == SEED and not np.array_equal(pixels, m.reference):
            return "silent: the store mixes two seeds"
        if codes.count(0) == 2 and seed == SEED + 1:
            # both succeeded: the second one must have resumed the first's store... never
            return "silent: both creators succeeded"
        return "survived"

    def overwrite_while_exporting(d: Path) -> str:
        store = rendered_store(d)
        hold = d / "hold.py"
        hold.write_text(textwrap.dedent("""
            import sys, time
            from napari_cytosyn.slide.synthetic import SyntheticSlide
            slide = SyntheticSlide.open(sys.argv[1], mode="r")
            print("open", flush=True)
            time.sleep(30)
        """))  # fmt: skip
        reader = subprocess.Popen(
            [sys.executable, str(hold), str(store)], stdout=subprocess.PIPE, text=True, env=ENV
        )
        try:
            reader.stdout.readline()
            # another seed: a different slide, so --overwrite would replace the store
            proc = cli(*synth_args(store, "--overwrite", "--seed", SEED + 1))
        finally:
            reader.kill()
            reader.wait()
        if proc.returncode == 0:
            return "lost: --overwrite replaced a store another process was reading"
        return m.exported_is_reference(store, d / "a.ome.zarr")

    def out_is_the_slide(d: Path) -> str:
        slide = d / "case.ome.tif"
        shutil.copyfile(slide_file, slide)
        before = slide.read_bytes()
        mask = d / "m.geojson"
        mask.write_text(json.dumps({"type": "Polygon", "coordinates": [
            [[10, 10], [60, 10], [60, 60], [10, 10]]]}))  # fmt: skip
        proc = cli("inpaint", slide, "--mask", mask, "--model", GRF, "--steps", 2,
                   "--out", slide, "--overwrite", "-q")  # fmt: skip
        if slide.read_bytes() != before:
            return "lost: the input slide was overwritten"
        return "survived" if proc.returncode == 1 else f"unexpected exit {proc.returncode}"

    def overwrite_foreign(d: Path) -> str:
        store = rendered_store(d)
        foreign = d / "mine.ome.zarr"
        foreign.mkdir()
        (foreign / "data.txt").write_text("precious")
        edits = d / "case.cytosyn"
        shutil.copytree(store, edits)  # any store of another recipe stands for the user's data
        attrs = json.loads((edits / "zarr.json").read_text())
        attrs["attributes"]["napari_cytosyn"]["kind"] = "edit-store"
        (edits / "zarr.json").write_text(json.dumps(attrs))
        p1 = cli("export", store, "--out", foreign, "--overwrite", "-q")
        p2 = cli(*synth_args(d / "case.ome.zarr", "--overwrite"))
        if not (foreign / "data.txt").exists() or not (edits / "zarr.json").exists():
            return "lost: --overwrite removed data this tool did not write"
        return "survived" if p1.returncode == p2.returncode == 1 else "unexpected exit"

    def stored_code(d: Path) -> str:
        store = d / "s.cytosyn"
        proc = cli(*synth_args(store))
        (d / "evil.py").write_text("open('MARKER', 'w').write('ran')\ndef f():\n    pass\n")
        meta = json.loads((store / "zarr.json").read_text())
        meta["attributes"]["napari_cytosyn"]["recipe"]["model"]["name"] = "py:evil:f"
        (store / "zarr.json").write_text(json.dumps(meta))
        for f in (store / "levels" / "0" / "c").rglob("0"):
            if f.is_file():
                f.unlink()
        proc = cli("render", store, "-q", cwd=d)
        if (d / "MARKER").exists():
            return "lost: code named by the store ran"
        return "survived" if proc.returncode == 1 else "unexpected exit"

    def concurrent_inpaints(d: Path) -> str:
        script = d / "inpaint.py"
        script.write_text(textwrap.dedent("""
            import sys
            import numpy as np, torch
            torch.set_num_threads(1)
            from napari_cytosyn.models.grf import GRFModel
            from napari_cytosyn.sampling import SamplerSettings
            from napari_cytosyn.slide.composite import CompositeSlide
            comp = CompositeSlide(sys.argv[1], sys.argv[2])
            for i in range(3):
                comp.inpaint((64 + 96 * i, int(sys.argv[3]), 32, 32), np.ones((32, 32), bool),
                             GRFModel(), SamplerSettings(steps=2), halo_px=16)
        """))  # fmt: skip
        from napari_cytosyn.slide.composite import CompositeSlide

        store = d / "edits.cytosyn"
        CompositeSlide(slide_file, store).close()
        procs = [
            subprocess.Popen(
                [sys.executable, str(script), str(slide_file), str(store), str(x)],
                env=ENV,
                stderr=subprocess.PIPE,
            )
            for x in (100, 400)
        ]
        if any(p.wait(timeout=300) for p in procs):
            return "failed: an inpaint process failed"
        comp = CompositeSlide(slide_file, store)
        h, w = comp.level_shapes[0]
        n_edits, masked = len(comp.edits), int(comp.mask_region(0, 0, 0, h, w).sum())
        comp.close()
        if n_edits != 6:
            return f"lost: {6 - n_edits} edit records"
        return "survived" if masked == 6 * 32 * 32 else "silent: mask and records disagree"

    def killed_inpaint(d: Path) -> str:
        mask = d / "m.geojson"
        mask.write_text(json.dumps({"type": "Polygon", "coordinates": [
            [[100, 100], [400, 100], [400, 400], [100, 100]]]}))  # fmt: skip
        out = d / "out.ome.zarr"
        common = ["inpaint", slide_file, "--mask", mask, "--model", GRF, "--out", out]
        kill_during([*common, "--steps", 200], signal.SIGKILL, lambda: bool(orphans(d)))
        proc = cli(*common, "--steps", 2, "-q")
        return "survived" if proc.returncode == 0 else f"failed: {proc.stderr[-200:]}"

    def disk_full(d: Path) -> str:
        if os.geteuid() != 0 or shutil.which("mount") is None:
            return "skipped"
        mnt = d / "small"
        mnt.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mnt)],
                          capture_output=True).returncode:  # fmt: skip
            return "skipped"
        try:
            proc = cli(*synth_args(mnt / "s.cytosyn"))
            if proc.returncode == 0:  # it fitted: it must be right
                return m.exported_is_reference(mnt / "s.cytosyn", d / "a.ome.zarr")
            if "error:" not in proc.stderr:
                return f"unclear failure: {proc.stderr[-200:]}"
            # free space by moving the store out, then resume it: the finished chunks are sound
            target = d / "s.cytosyn"
            shutil.copytree(mnt / "s.cytosyn", target)
            shutil.rmtree(mnt / "s.cytosyn")
            proc = cli("render", target, "--model", GRF, "-q")
            if proc.returncode != 0:
                return f"resume failed: {proc.stderr[-200:]}"
            return m.exported_is_reference(target, d / "a.ome.zarr")
        finally:
            subprocess.run(["umount", str(mnt)], capture_output=True)

    faults = [
        ("kill -9 mid-render, resume", interrupted_render(signal.SIGKILL)),
        ("SIGTERM mid-render, resume", interrupted_render(signal.SIGTERM)),
        ("deleted chunk", damaged_chunk("delete")),
        ("truncated chunk", damaged_chunk("truncate")),
        ("zero-length chunk", damaged_chunk("empty")),
        ("bit-flipped chunk", damaged_chunk("flip")),
        ("garbled completion map", garbled_map),
        ("damaged phase cache", damaged_phase_cache),
        ("edited level shape", edited_geometry),
        ("two processes create one store", racing_creators),
        ("--overwrite during an export", overwrite_while_exporting),
        ("--out equal to the slide", out_is_the_slide),
        ("--overwrite of foreign data", overwrite_foreign),
        ("store naming Python code", stored_code),
        ("concurrent inpaints, one store", concurrent_inpaints),
        ("kill -9 mid-inpaint, rerun", killed_inpaint),
        ("disk full (small tmpfs)", disk_full),
    ]
    if quick:
        faults = [f for i, f in enumerate(faults) if i % 3 == 0]
    return faults


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", help="run only the faults whose name contains this")
    args = parser.parse_args()

    import torch

    from napari_cytosyn.models.grf import GRFModel
    from napari_cytosyn.sampling import SamplerSettings
    from napari_cytosyn.slide.sample import sample_tissue, write_pyramidal_tiff
    from napari_cytosyn.slide.synthetic import SyntheticSlide

    torch.set_num_threads(1)
    os.environ.setdefault("NAPARI_CYTOSYN_AUTOCAST", "off")
    ENV.setdefault("NAPARI_CYTOSYN_AUTOCAST", "off")
    work = Path(tempfile.mkdtemp(prefix="cytosyn-faults-"))
    try:
        ref = SyntheticSlide.create(
            work / "reference.cytosyn",
            GRFModel(),
            W,
            H,
            SamplerSettings(steps=STEPS, seed=SEED),
            chunk_px=CHUNK,
        )
        ref.render_all()
        reference = np.asarray(ref.store.level_array(0)[...])
        ref.close()
        level0 = sample_tissue(0, 0, 512, 768, 512, 768)
        slide_file = write_pyramidal_tiff(
            work / "slide.ome.tif", [level0], mpp=(0.5, 0.5), tile_px=256, compression="zlib",
            ome=True,
        )  # fmt: skip
        m = Matrix(work, reference)
        skipped = []
        for name, fault in make_faults(m, slide_file, args.quick):
            if args.only and args.only not in name:
                continue
            m.run(name.replace(" ", "_").replace(",", ""), fault)
            if m.rows[-1][1] == "skipped":
                skipped.append(name)
                m.counts["faults_tried"] -= 1
                m.rows.pop()
        for name in skipped:
            print(f"{name}: skipped (needs root to mount a small tmpfs)")
        for key, value in m.counts.items():
            print(f"{key}: {value}")
        print("RESULT " + json.dumps({**m.counts, "skipped": skipped}))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
