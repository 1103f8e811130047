"""Cancel of an Inpaint (or a Synthesize region) on a busy machine: CPU-bound processes beside
napari, Cancel pressed at several moments of the job, seconds from Cancel to the job's end.

Drives the real dock widget in a real viewer: opens the H&E sample, draws a rectangle mask,
starts Inpaint or Synthesize region (``--job``, ``--steps`` sampler steps) and presses Cancel
``--at`` seconds after each start (cycled over ``--presses`` jobs). ``--hogs`` processes
spinning on the CPU at normal priority run the whole time (started ``--warm-s`` before the
first job, so that the load average reflects them). Every 20 ms the job threads' stacks are
sampled: each press prints where the time from Cancel to the end went (the step of the plugin
in flight), so a slow Cancel names the step that held it. The first job also loads what a first
job loads (the slide's model, its tissue mask). ``gui_latency.py`` measures Cancel of every job
kind on a quiet machine.

Needs a display::

    xvfb-run -a python benchmarks/cancel_busy.py                  # 2 hogs, 6 presses
    xvfb-run -a python benchmarks/cancel_busy.py --hogs 0 --at 1  # quiet machine
    xvfb-run -a python benchmarks/cancel_busy.py --job region

Last line ``RESULT {json}``: ``cancel_s`` per press, ``max_cancel_s``, ``load_1min``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np

SAMPLE_S = 0.02
JOBS = {"inpaint": "Inpaint", "region": "Synthesize region"}  # --job: the job's title
_WORK_FRAMES = ("composite.py:inpaint", "_actions.py:work", "_actions.py:make")


def _step(prefix: str) -> str | None:
    """The plugin's frames (three) under the work function of the newest thread named
    ``prefix``, or ``None`` when no such thread runs."""
    for thread in reversed(threading.enumerate()):
        if not thread.name.startswith(prefix):
            continue
        frame = sys._current_frames().get(thread.ident)
        if frame is None:
            return None
        ours = [
            f"{Path(f.filename).name}:{f.name}"
            for f in traceback.extract_stack(frame)
            if "napari_cytosyn" in f.filename
            and not f.filename.endswith(("_jobs.py", "threads.py", "tiling.py"))
        ]
        below = [i for i, s in enumerate(ours) if s in _WORK_FRAMES]
        start = below[-1] + 1 if below else 0
        return " > ".join(ours[start : start + 3]) or "(outside the plugin)"
    return None


def job_step(title: str) -> str:
    """Where the job ``title`` is: its own thread's step, or the step of the background thread
    it waits for."""
    step = _step(f"cytosyn-{title}") or "(no job thread)"
    if "finish_in_background" in step:
        step = "background: " + (_step("cytosyn-background") or "(ended)")
    return step


def pump(app, seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.002)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--job", choices=JOBS, default="inpaint", help="the job cancelled")
    parser.add_argument("--hogs", type=int, default=2, help="CPU-bound processes beside napari")
    parser.add_argument("--presses", type=int, default=6, help="jobs started and cancelled")
    parser.add_argument("--at", default="1,3,6", help="seconds after the start, cycled")
    parser.add_argument("--steps", type=int, default=200, help="sampler steps of the inpaint")
    parser.add_argument("--model", default="cytosyn-tiny")
    parser.add_argument("--warm-s", type=float, default=20.0, help="hogs alone before the jobs")
    args = parser.parse_args()
    delays = [float(v) for v in args.at.split(",")]

    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.hogs)]
    try:
        result = run(args, delays)
    finally:
        for hog in hogs:
            hog.kill()
    print("RESULT " + json.dumps(result))


def run(args: argparse.Namespace, delays: list[float]) -> dict:
    import napari
    import torch
    from qtpy.QtWidgets import QApplication

    from napari_cytosyn._napari._qt._wait import wait_loaded
    from napari_cytosyn._napari._qt._widget import CytoSynWidget

    torch.set_num_threads(1)
    os.environ["NAPARI_CYTOSYN_MODEL_THREADS"] = "1"
    work = Path(tempfile.mkdtemp(prefix="cytosyn_cancel_busy_"))
    os.environ["NAPARI_CYTOSYN_CONFIG"] = str(work / "widget.json")
    viewer = napari.Viewer(show=True)
    app = QApplication.instance()
    widget = CytoSynWidget(viewer)
    viewer.window.add_dock_widget(widget, name="CytoSyn")
    widget.model_box.cache_edit.setText(str(work / "cache"))
    widget._save_config()
    widget.model_box.model_combo.setCurrentText(args.model)
    widget._snapshot_model_choice()
    widget.get_model()
    widget.confirm = lambda text: True
    [real] = viewer.open_sample("napari-cytosyn", "he_slide")
    wait_loaded(real)
    corners = np.array([[50, 50], [50, 200], [200, 200], [200, 50]], float)
    shapes = viewer.add_shapes([corners], shape_type="rectangle")
    widget.edit_box.image_combo.select(real)
    widget.edit_box.mask_combo.select(shapes)
    widget.sampling.steps_spin.setValue(args.steps)
    pump(app, max(1.0, args.warm_s))
    print(f"{args.hogs} hog(s); load {os.getloadavg()[0]:.1f} before the first job", flush=True)

    times = []
    for press in range(args.presses):
        delay = delays[press % len(delays)]
        job = widget.inpaint() if args.job == "inpaint" else widget.synthesize_region()
        assert job is not None, widget.status.text()
        start = last = time.perf_counter()
        pressed, at_cancel = None, ""
        after: collections.Counter = collections.Counter()
        while not job.is_finished:
            now = time.perf_counter()
            if pressed is None and now - start >= delay:
                at_cancel, pressed = job_step(JOBS[args.job]), time.perf_counter()
                widget.cancel()
            if pressed is not None and now - last >= SAMPLE_S:
                after[job_step(JOBS[args.job])] += now - last
            if now - last >= SAMPLE_S:
                last = now
            app.processEvents()
            time.sleep(0.002)
        if pressed is None:
            print(f"press {press}: the job ended within {delay} s ({job.state})")
            continue
        took = time.perf_counter() - pressed
        times.append(took)
        print(
            f"press {press} (Cancel {delay} s after the start): ended {took:.3f} s later "
            f"({job.state}); load {os.getloadavg()[0]:.1f}; at Cancel: {at_cancel}",
            flush=True,
        )
        for step, seconds in after.most_common(3):
            print(f"    {seconds:6.2f} s  {step}")
        pump(app, 0.5)
    viewer.close()
    return {
        "cancel_s": [round(t, 3) for t in times],
        "max_cancel_s": round(max(times), 3) if times else None,
        "job": args.job,
        "hogs": args.hogs,
        "steps": args.steps,
        "load_1min": round(os.getloadavg()[0], 1),
    }


if __name__ == "__main__":
    main()
