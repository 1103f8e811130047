"""What a user waits for in napari: first pixels, zoomed-out first pixels, Cancel, GUI stalls.

Drives the real dock widget in a real viewer (one process, the camera set as a user would) and
measures, with a 10 ms QTimer ticking on the GUI thread the whole time:

- ``first_pixels_s``: from pressing "New synthetic slide" (8192 px a side) with the camera at
  full zoom (one screen px per slide px) to the first pixels refreshed on screen: the
  progressive preview of the chunks being generated (x0 estimates through a linear
  latent -> RGB map), or a finished chunk; ``first_final_pixels_s``: to the first finished
  chunk on screen;
- ``zoomed_out_first_pixels_s`` (``zoomed_out_first_final_s``): the same for a 100,000 px slide
  with the view fitted to the whole slide (its coarse chunks are provisional, built from the
  first finished chunks' pixels or previews);
- ``cancel_s``: the longest time from Cancel to the job's end over every job kind (inpaint,
  synthesize region, render all, export), each cancelled a second after it started; inpaint
  and synthesize region also run to the end once (phases "... to the end": the plugin adds
  the edited slide's or region's layer and its "synthetic" outline layer);
- ``max_stall_ms``: the largest gap between two ticks minus the 10 ms period, over the whole
  run after start-up (model loading excluded, and the benchmark's own blocking joins of the
  renderers it stops between measurements, reported as the phase "teardown"), the user's own
  napari action excluded: adding the Shapes mask layer before pressing Inpaint (its phase,
  counted in ``max_stall_with_user_layers_ms``); the largest gap
  of each phase is split into the GUI thread's time on a CPU, waiting for a CPU (the machine's
  load) and blocked (the GIL held by a worker thread, or a lock) (``max_stall_split_ms``);
- ``napari_alone_stall_ms``, for scale: napari's own stalls on the same machine, in the same
  run, at the end, with no job running: adding a 1000 px RGB image layer with
  ``viewer.add_image`` (napari builds it in one turn), selecting a layer and removing one
  (phases "napari alone: ...", not counted in ``max_stall_ms``).

Needs a display (``xvfb-run -a``). Examples::

    xvfb-run -a python benchmarks/gui_latency.py                       # embedded cytosyn-tiny
    xvfb-run -a python benchmarks/gui_latency.py --model grf           # the fast test model
    xvfb-run -a python benchmarks/gui_latency.py --lp-threads 0        # llvmpipe rasterising
                                                                       # on the GUI thread

Prints the figures (with the OpenGL renderer, Mesa's ``LP_NUM_THREADS`` and the load average
at start and end); last line ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

TICK_MS = 10
TARGETS = {
    "cancel_s": 2.0,
    "first_pixels_s": 1.0,
    "zoomed_out_first_pixels_s": 3.0,
    "max_stall_ms": 100.0,
}


def _sched_ms() -> tuple[float, float]:
    """This thread's time on a CPU and waiting in the run queue, ms (Linux schedstat)."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            run, wait = f.read().split()[:2]
        return int(run) / 1e6, int(wait) / 1e6
    except OSError:
        return float("nan"), float("nan")


class Ticker:
    """Records the gaps between ticks of a 10 ms QTimer on the GUI thread, and how each gap
    splits into time the GUI thread ran on a CPU, waited for one (run queue: the machine's
    load) and was blocked (the GIL held by a worker thread, a lock, or the event loop)."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.gaps: list[float] = []
        self.phase = "start"
        self.by_phase: dict[str, float] = {}  # largest gap (ms) of each phase
        # (gap, ran, run-queue wait, blocked) ms of the largest gap of each phase
        self.split: dict[str, tuple[float, float, float, float]] = {}
        self.last, self.sched = time.perf_counter(), _sched_ms()
        self.worst_at = 0.0  # time.perf_counter() at the end of the latest phase record
        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self._tick)
        self.timer.start()

    def _tick(self) -> None:
        now, sched = time.perf_counter(), _sched_ms()
        gap = (now - self.last) * 1000
        self.gaps.append(gap)
        if gap > self.by_phase.get(self.phase, 0.0):
            self.by_phase[self.phase], self.worst_at = gap, now
            ran, queued = (b - a for a, b in zip(self.sched, sched, strict=True))
            self.split[self.phase] = (gap, ran, queued, gap - ran - queued)
        self.last, self.sched = now, sched


class StallSampler:
    """Where the GUI thread is when a tick is overdue: a watcher thread samples the GUI
    thread's stack every 20 ms while the last tick is more than ``after_ms`` old and counts
    the innermost frames of the project and of napari (``--why-stalls``).

    The stack is read with ``faulthandler`` (text), never as frame objects: a frame of the GUI
    thread held by another thread keeps its locals alive after it returns, and napari's
    ``SVGBufferIconEngine.pixmap`` relies on its ``QPainter`` local dying at return: the pixmap
    was then destroyed while painted ("QPaintDevice: Cannot destroy paint device that is being
    painted") and the process crashed."""

    #: innermost frames of a thread that is only waiting for work (not reported)
    IDLE = ("threading.py", "queue.py", "selectors.py", "thread.py:81 _worker")

    def __init__(self, ticker: Ticker, after_ms: float = 150.0, others: bool = False) -> None:
        import collections
        import threading

        self.ticker, self.after_ms, self.others = ticker, after_ms, others
        self.counts: collections.Counter = collections.Counter()
        self._main = f"Thread 0x{threading.main_thread().ident:016x}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _stacks(self, dump) -> dict[bool, list[list[tuple[str, str, str]]]]:
        """``(file, line, function)`` frames, innermost first, of the GUI thread (``True``)
        and of the other threads (``False``), one list per thread."""
        import faulthandler
        import re

        dump.seek(0)
        dump.truncate()
        faulthandler.dump_traceback(dump, all_threads=True)
        dump.seek(0)
        out: dict[bool, list] = {True: [], False: []}
        for block in dump.read().decode(errors="replace").split("\n\n"):
            frames = re.findall(r'File "(.+)", line (\d+) in (\S+)', block)
            if frames and "Current thread" not in block:  # not this sampler
                out[self._main in block].append(frames)
        return out

    @staticmethod
    def _key(stack: list[tuple[str, str, str]]) -> str:
        ours = [f for f in stack if "napari_cytosyn" in f[0]]
        return " <- ".join(f"{Path(f).name}:{line} {fn}" for f, line, fn in (ours or stack)[:3])

    def _run(self) -> None:
        with tempfile.TemporaryFile() as dump:
            while not self._stop.wait(0.02):
                if (time.perf_counter() - self.ticker.last) * 1000 < self.after_ms:
                    continue
                stacks = self._stacks(dump)
                for stack in stacks[True]:
                    self.counts[(self.ticker.phase, self._key(stack))] += 1
                for stack in stacks[False] if self.others else ():
                    first = f"{Path(stack[0][0]).name}:{stack[0][1]} {stack[0][2]}"
                    if not first.startswith(self.IDLE):
                        self.counts[(self.ticker.phase, "other thread: " + self._key(stack))] += 1

    def report(self) -> None:
        self._stop.set()
        print("GUI thread while stalled (phase, innermost frames: samples of 20 ms):")
        for (ph, key), n in self.counts.most_common(24 if self.others else 12):
            print(f"  {n * 20:6d} ms  [{ph}] {key}")


def pump_until(app, condition, timeout_s: float) -> bool:
    end = time.perf_counter() + timeout_s
    while not condition():
        if time.perf_counter() > end:
            return False
        app.processEvents()
        time.sleep(0.002)
    return True


def first_pixels(app, widget, size: int, zoom_to_fit: bool) -> tuple[float, float]:
    """Seconds from "New synthetic slide" to the first pixels on screen (the progressive
    preview of a chunk being generated, or a finished chunk), and to the first finished chunk
    on screen."""
    from napari_cytosyn._napari import _layers

    viewer = widget.viewer
    widget.synthetic_box.width_spin.setValue(size)
    widget.synthetic_box.height_spin.setValue(size)
    t0 = time.perf_counter()
    job = widget.new_synthetic_slide()
    assert job is not None, widget.status.text()
    assert pump_until(app, lambda: job.is_finished, 120) and job.state == "done", job.error
    layer = widget.edit_box.image_combo.layer()
    view = widget.views[id(layer)]
    slide = _layers.slide_of(layer)
    if not zoom_to_fit:  # full zoom at the slide's centre: one screen px per slide px
        camera = getattr(viewer, "scene", viewer).camera  # napari >= 0.9: viewer.scene
        camera.center = (size / 2 * slide.mpp.y, size / 2 * slide.mpp.x)
        camera.zoom = 1.0 / slide.mpp.x

    def shown() -> list[float]:
        return [t for t in (view.first_preview_shown, view.first_chunk_shown) if t is not None]

    t_ready = time.perf_counter()  # the slide is created, its view exists
    ok = pump_until(app, lambda: bool(shown()), 600)
    first = min(shown()) - t0 if ok else float("nan")
    ok = pump_until(app, lambda: view.first_chunk_shown is not None, 600)
    final = view.first_chunk_shown - t0 if ok else float("nan")
    painted = view.first_preview_painted
    fit = view.preview_fit_s
    print(
        f"  slide created after {t_ready - t0:.2f} s; first preview painted after "
        f"{(painted - t0) if painted else float('nan'):.2f} s (latent -> RGB fit "
        f"{fit if fit is not None else float('nan'):.2f} s)"
    )
    print(
        f"  {size} px, {'fitted' if zoom_to_fit else 'full zoom'}: first pixels after "
        f"{first:.2f} s ({'preview' if view.first_preview_shown else 'finished chunk'}), first "
        f"finished chunk after {final:.2f} s, {view.previews_landed} preview updates (shown "
        f"level {layer.data_level}; {view.zoom_note()})"
    )
    before = TICKER.phase if TICKER is not None else None
    phase(TEARDOWN)  # the benchmark blocks the GUI thread to stop the renderer: not a user's wait
    view.close(timeout=60)
    viewer.layers.clear()
    phase(before)
    return first, final


TICKER: Ticker | None = None
#: Phase of the benchmark's own blocking waits (joining a renderer it stops); not counted.
TEARDOWN = "teardown (benchmark's own waits)"
#: Phase of what the user does in napari itself (drawing the mask layer): counted only in
#: ``max_stall_with_user_layers_ms``.
USER = "user adds a Shapes mask layer (napari)"


def phase(name: str) -> None:
    if TICKER is None:
        return
    if TICKER.phase == TEARDOWN:  # the gap so far is the benchmark's own wait: not counted
        TICKER.last, TICKER.sched = time.perf_counter(), _sched_ms()
    TICKER.phase = name


def cancel_times(app, widget, tmp: Path) -> dict[str, float]:
    """Seconds from Cancel to the end of each job kind, cancelled 1 s after its start."""
    from napari_cytosyn._napari._qt._wait import wait_loaded

    viewer = widget.viewer
    out: dict[str, float] = {}

    def measure(kind: str, start) -> None:
        phase(f"cancel {kind}")
        job = start()
        assert job is not None, f"{kind}: {widget.status.text()}"
        pump_until(app, lambda: job.is_finished, 1.0)
        if job.is_finished:
            print(f"  {kind}: finished within 1 s, nothing to cancel ({job.state})")
            return
        t0 = time.perf_counter()
        widget.cancel()
        assert pump_until(app, lambda: job.is_finished, 120), f"{kind} did not stop"
        out[kind] = time.perf_counter() - t0
        print(f"  {kind}: stopped {out[kind]:.2f} s after Cancel ({job.state})")

    phase("opening the H&E sample")
    [real] = viewer.open_sample("napari-cytosyn", "he_slide")
    wait_loaded(real)  # it loads in a worker thread
    # The user draws the mask layer before pressing Inpaint: napari adding and first drawing
    # a Shapes layer is the user's action, timed in a phase of its own (see USER)
    phase(USER)
    shapes = viewer.add_shapes(
        [np.array([[50, 50], [50, 200], [200, 200], [200, 50]], float)], shape_type="rectangle"
    )
    pump_until(app, lambda: False, 1.0)
    widget.edit_box.image_combo.select(real)
    widget.edit_box.mask_combo.select(shapes)
    steps = widget.sampling.steps_spin.value()
    widget.sampling.steps_spin.setValue(max(steps, 200))
    measure("inpaint", widget.inpaint)
    measure("synthesize region", widget.synthesize_region)
    widget.sampling.steps_spin.setValue(steps)
    # Run to the end: the plugin adds its layers (edited slide, region, "synthetic" outlines)
    for kind, start in (
        ("inpaint", widget.inpaint),
        ("synthesize region", widget.synthesize_region),
    ):
        phase(f"{kind} to the end")
        job = start()
        assert pump_until(app, lambda j=job: j.is_finished, 300) and job.state == "done", job.error
        pump_until(app, lambda: False, 1.0)  # the new layers drawn

    phase("new 4096 px slide")
    widget.synthetic_box.width_spin.setValue(4096)
    widget.synthetic_box.height_spin.setValue(4096)
    job = widget.new_synthetic_slide()
    assert pump_until(app, lambda: job.is_finished, 120) and job.state == "done", job.error
    layer = widget.edit_box.image_combo.layer()
    phase(TEARDOWN)
    widget.views[id(layer)].close(timeout=60)
    measure("render all", widget.render_all)

    # Export of a whole 4096 px slide rendered on the way: cancelled while rendering or writing.
    widget.edit_box.image_combo.select(layer)
    measure("export", lambda: widget.export(str(tmp / "export.ome.zarr"), "OME-Zarr"))
    # one by one: after layers.clear() with a Shapes layer among them, napari 0.9.2 under
    # Mesa's llvmpipe crashed drawing the second image added next (a segfault in glDrawArrays)
    while len(viewer.layers):
        viewer.layers.pop()
    return out


NAPARI_ALONE = "napari alone: "  # phases of napari's own actions, for scale (not counted)


def napari_alone(app, viewer) -> dict[str, float]:
    """napari's own largest tick gap (ms over the tick) when it adds a 1000 px RGB image layer,
    selects a layer and removes one, with nothing else running (each after a quiet 0.5 s)."""
    image = np.random.default_rng(0).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)
    first: list = []
    actions = {
        "add_image": lambda: first.append(viewer.add_image(image, rgb=True, name="napari A")),
        "add_image again": lambda: viewer.add_image(image, rgb=True, name="napari B"),
        "select": lambda: setattr(viewer.layers.selection, "active", first[0]),
        "remove": lambda: viewer.layers.remove(first[0]),
    }
    for name, act in actions.items():
        phase(TEARDOWN)
        pump_until(app, lambda: False, 0.5)
        phase(NAPARI_ALONE + name)
        act()
        pump_until(app, lambda: False, 1.0)
    viewer.layers.clear()
    by_phase = TICKER.by_phase if TICKER is not None else {}
    return {k: round(by_phase.get(NAPARI_ALONE + k, float("nan")) - TICK_MS, 1) for k in actions}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="cytosyn-tiny", help="grf, cytosyn-tiny, ...")
    parser.add_argument("--steps", type=int, default=None, help="default: the model's")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--big", type=int, default=100_000, help="zoomed-out slide side (px)")
    parser.add_argument(
        "--why-stalls", action="store_true", help="sample the GUI thread's stack during stalls"
    )
    parser.add_argument(
        "--stall-threads",
        action="store_true",
        help="with --why-stalls: also the other threads that are not idle (a GUI thread "
        "blocked, not on a CPU, waits for one of them)",
    )
    parser.add_argument(
        "--stall-after-ms",
        type=float,
        default=150.0,
        help="with --why-stalls: sample once the latest tick is this old (ms)",
    )
    parser.add_argument(
        "--lp-threads",
        type=int,
        default=None,
        help="set Mesa's LP_NUM_THREADS (software OpenGL, llvmpipe) before the window opens; "
        "0: the GUI thread rasterises itself instead of waiting for llvmpipe's threads",
    )
    args = parser.parse_args()
    if args.lp_threads is not None:  # read by Mesa when the first GL context is made
        os.environ["LP_NUM_THREADS"] = str(args.lp_threads)

    import napari
    import torch
    from qtpy.QtWidgets import QApplication

    from napari_cytosyn._napari._qt._widget import CytoSynWidget

    torch.set_num_threads(args.threads)
    os.environ["NAPARI_CYTOSYN_MODEL_THREADS"] = str(args.threads)  # network calls too
    work = Path(tempfile.mkdtemp(prefix="cytosyn_latency_"))
    os.environ["NAPARI_CYTOSYN_CONFIG"] = str(work / "widget.json")
    viewer = napari.Viewer(show=True)
    viewer.window._qt_window.resize(1400, 900)
    app = QApplication.instance()
    widget = CytoSynWidget(viewer)
    viewer.window.add_dock_widget(widget, name="CytoSyn")
    widget.model_box.cache_edit.setText(str(work / "cache"))
    widget._save_config()
    if args.model == "grf":
        from napari_cytosyn.models.grf import GRFModel

        widget.models.override = GRFModel()
    else:  # loaded by the widget's model cache, as the first job would (not timed)
        widget.model_box.model_combo.setCurrentText(args.model)
        assert widget.model_box.model_combo.currentText() == args.model, args.model
        widget._snapshot_model_choice()
        widget.get_model()
    if args.steps:
        widget.sampling.steps_spin.setValue(args.steps)
    widget.confirm = lambda text: True  # no dialog in a benchmark
    pump_until(app, lambda: False, 2.0)
    from vispy.gloo import gl

    renderer = str(gl.glGetParameter(gl.GL_RENDERER))  # the window's context is current

    global TICKER
    load0 = os.getloadavg()[0]
    ticker = TICKER = Ticker()
    sampler = (
        StallSampler(ticker, args.stall_after_ms, args.stall_threads) if args.why_stalls else None
    )
    print(
        f"model {args.model}, {widget.sampling.steps_spin.value()} steps, "
        f"{args.threads} torch thread(s); OpenGL: {renderer}, LP_NUM_THREADS "
        f"{os.environ.get('LP_NUM_THREADS', 'unset')}; load {os.getloadavg()[0]:.1f}"
    )
    phase("first pixels")
    fp, fp_final = first_pixels(app, widget, 8192, zoom_to_fit=False)
    phase("zoomed-out first pixels")
    zo, zo_final = first_pixels(app, widget, args.big, zoom_to_fit=True)
    cancels = cancel_times(app, widget, work)
    alone = napari_alone(app, viewer)
    gaps = np.asarray(ticker.gaps[5:])
    counted = [
        v
        for k, v in ticker.by_phase.items()
        if k not in (TEARDOWN, USER) and not k.startswith(NAPARI_ALONE)
    ]
    stall = float(max(counted) - TICK_MS) if counted else float("nan")
    with_user = max(stall, ticker.by_phase.get(USER, 0.0) - TICK_MS)
    result = {
        "cancel_s": round(max(cancels.values()), 3) if cancels else None,
        "cancel_by_kind_s": {k: round(v, 3) for k, v in cancels.items()},
        "first_pixels_s": round(fp, 3),
        "zoomed_out_first_pixels_s": round(zo, 3),
        "first_final_pixels_s": round(fp_final, 3),
        "zoomed_out_first_final_s": round(zo_final, 3),
        "max_stall_ms": round(stall, 1),
        "max_stall_with_user_layers_ms": round(with_user, 1),
        "napari_alone_stall_ms": alone,
        "max_stall_ms_by_phase": {k: round(v - TICK_MS, 1) for k, v in ticker.by_phase.items()},
        # the largest gap of each phase split: GUI thread on a CPU / waiting for one / blocked
        "max_stall_split_ms": {
            k: [round(v, 1) for v in split[1:]] for k, split in ticker.split.items()
        },
        "p99_tick_gap_ms": round(float(np.percentile(gaps, 99)), 1) if gaps.size else None,
        "model": args.model,
        "steps": int(widget.sampling.steps_spin.value()),
        "threads": args.threads,
        "gl_renderer": renderer,
        "lp_num_threads": os.environ.get("LP_NUM_THREADS"),
        "load_1min": [round(load0, 1), round(os.getloadavg()[0], 1)],  # at start, at end
    }
    for key, target in TARGETS.items():
        value = result[key]
        ok = value is not None and value == value and value <= target
        print(f"{key}: {value} (target <= {target}) {'met' if ok else 'NOT met'}")
    if sampler is not None:
        sampler.report()
    widget.close_views(timeout=30)
    viewer.close()
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
