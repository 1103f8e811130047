"""GUI event-loop stall while a synthetic slide renders in napari.

A QTimer ticks every 10 ms on the GUI thread and records the gap between ticks; a gap well over
10 ms means the event loop was blocked. Phases, side by side in one process and one viewer, the
camera parked over the middle of the slide at level 0 (one screen px per slide px), with a few
camera moves to send the renderer new requests:

1. ``idle``: the timer alone (what the machine and the display give);
   ``repaint_floor``: a label in the window changes 4x a second: the cost of any repaint here
   (with napari's OpenGL canvas in the window, Qt composites the whole window on every update);
2. ``render_no_refresh``: camera parked; the lazy view renders the chunks in view and a "Render
   all" job (no progress bar) fills the rest, but the layer is not refreshed: what generation
   itself costs the GUI thread (GIL contention, signals);
3. ``refresh_only``: no generation; the camera hops and the layer is refreshed at the rate
   chunks landed in phase 4: what napari's own re-slice + texture upload + redraw costs here;
4. ``render``: the real thing: camera hops, generation, refreshes as chunks land, napari
   progress bar of the "Render all" job; ``render_no_progress_bar``: the same without napari's
   progress bar (whose activity spinner repaints the window continuously).

Every tick gap over 40 ms of phase 4 is attributed: GUI-thread time in the layer's reads of
chunk pixels (``read``), in napari's layer refreshes (``refresh``: slicing, which includes
``read``, and the hand-over to vispy), in the canvas draw (``paint``: vispy's OpenGL calls, and
napari's re-slicing after a camera move), and in the window's update (``window``: Qt composing
the whole window, which includes ``paint``), and in Python's garbage collector (``gc0``-``gc2``
by generation; a collection in any thread holds the GIL); the rest is waiting (the GIL, the
CPU) or other event handlers.

Needs a display (run under ``xvfb-run -a``; Xvfb renders OpenGL in software, so napari's own
redraws are far slower there than on a desktop GPU). Examples::

    xvfb-run -a python benchmarks/gui_stall.py --quick
    xvfb-run -a python benchmarks/gui_stall.py --model cytosyn-tiny --seconds 20
    xvfb-run -a python benchmarks/gui_stall.py --quick --no-chunk-cache   # the layer decodes
    xvfb-run -a python benchmarks/gui_stall.py --quick --async-slicing    # napari's experiment
    xvfb-run -a python benchmarks/gui_stall.py --embedded-path runs/smoke/w

Prints the figures; last line ``RESULT {json}``: ``max_stall_ms`` (largest tick gap minus the
10 ms period) of phase 4, and of the other phases for comparison.
"""

from __future__ import annotations

import argparse
import functools
import gc
import itertools
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

TICK_MS = 10


def load(args: argparse.Namespace):
    if args.embedded_path:
        from napari_cytosyn.models.backend import BackendModel
        from napari_cytosyn.models.embedded import load_embedded

        return BackendModel.wrap(load_embedded(device="cpu", path=args.embedded_path))
    if args.model == "grf":
        from napari_cytosyn.models.grf import GRFModel

        return GRFModel()
    from napari_cytosyn.models import load_model

    return load_model(args.model, device="cpu")


class GuiTimeline:
    """Intervals the GUI thread spends in a few known places (see the module doc), so that a
    long tick gap can be attributed. Wraps the methods in place for the benchmark's process."""

    def __init__(self) -> None:
        from napari._qt.qt_main_window import _QtMainWindow
        from napari.layers.base.base import Layer
        from qtpy.QtCore import QEvent
        from vispy.app.backends._qt import CanvasBackendDesktop

        from napari_cytosyn._napari._layers import SlideLevel

        self.events: list[tuple[str, float, float]] = []
        self._main = threading.main_thread().ident
        self._wrap(SlideLevel, "__getitem__", "read")
        self._wrap(Layer, "refresh", "refresh")
        self._wrap(CanvasBackendDesktop, "paintGL", "paint")
        update = QEvent.Type.UpdateRequest
        self._wrap(_QtMainWindow, "event", "window", lambda args: args[1].type() == update)
        self._gc_start = 0.0
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict) -> None:
        # Python's garbage collector holds the GIL: a collection in any thread stalls the GUI.
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.events.append((f"gc{info['generation']}", self._gc_start, time.perf_counter()))

    def _wrap(self, cls, name: str, label: str, when=None) -> None:
        original = getattr(cls, name)
        events, main = self.events, self._main

        @functools.wraps(original)
        def timed(*args, **kwargs):
            if threading.get_ident() != main or (when is not None and not when(args)):
                return original(*args, **kwargs)
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                events.append((label, t0, time.perf_counter()))

        setattr(cls, name, timed)

    def attribute(self, ticks: list[float], over_ms: float = 40.0) -> list[dict]:
        """For each gap between ``ticks`` over ``over_ms``: its length and the ms spent in each
        place (outermost calls only, clipped to the gap), worst first."""
        out = []
        for a, b in itertools.pairwise(ticks):
            if (b - a) * 1000 <= over_ms:
                continue
            spent: dict[str, float] = {"gap": (b - a) * 1000}
            for label in ("read", "refresh", "paint", "window", "gc0", "gc1", "gc2"):
                spans = sorted((x, y) for n, x, y in self.events if n == label and y > a and x < b)
                total, end = 0.0, a
                for x, y in spans:  # nested calls (napari refreshes inside a paint) count once
                    x, y = max(x, end, a), min(y, b)
                    if y > x:
                        total += y - x
                        end = y
                spent[label] = total * 1000
            out.append({k: round(v, 1) for k, v in spent.items()})
        return sorted(out, key=lambda d: -d["gap"])


class TickRecorder:
    """Records the gaps between QTimer ticks (ms)."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.ticks: list[float] = []
        self.gaps: list[float] = []
        self._last = time.perf_counter()
        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        self.gaps.append((now - self._last) * 1000)
        self.ticks.append(now)
        self._last = now

    def start(self) -> None:
        self.gaps.clear()
        self._last = time.perf_counter()
        self.ticks = [self._last]
        self.timer.start()

    def stop(self) -> dict:
        self.timer.stop()
        g = np.asarray(self.gaps[1:] or [0.0])
        return {
            "ticks": len(g),
            "max_gap_ms": float(g.max()),
            "max_stall_ms": float(max(0.0, g.max() - TICK_MS)),
            "p99_gap_ms": float(np.percentile(g, 99)),
            "median_gap_ms": float(np.median(g)),
            "gaps_over_50ms": int((g > 50).sum()),
        }


def settle(app, seconds: float = 1.5) -> None:
    """Let first draws (shader compilation, texture allocation) happen before measuring."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.002)


def run_phase(app, rec: TickRecorder, seconds: float, step=None, every_s: float = 2.0) -> dict:
    """Pump events for ``seconds`` with the tick recorder on; ``step(k)`` every ``every_s``."""
    rec.start()
    end = time.perf_counter() + seconds
    next_step, k = time.perf_counter(), 0
    while time.perf_counter() < end:
        if step is not None and time.perf_counter() >= next_step:
            step(k)
            k += 1
            next_step += every_s
        app.processEvents()
        time.sleep(0.002)
    return rec.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="GRF model, small slide, short run")
    parser.add_argument("--model", default="grf", help="grf, cytosyn-tiny, or a registry name")
    parser.add_argument("--embedded-path", default=None, help="folder of embedded weights")
    parser.add_argument("--size", type=int, default=8192, help="slide side (px)")
    parser.add_argument("--chunk", type=int, default=256, help="chunk side (px; the widget's)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of each phase")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--window", type=int, default=1000, help="viewer window width (px)")
    parser.add_argument(
        "--no-chunk-cache",
        action="store_true",
        help="the layer reads and decodes chunk files on the GUI thread (before the chunk cache)",
    )
    parser.add_argument(
        "--async-slicing",
        action="store_true",
        help="napari's experimental asynchronous slicing (NAPARI_ASYNC=1, not saved)",
    )
    args = parser.parse_args()
    if args.quick:
        args.model, args.size, args.chunk, args.steps, args.seconds = "grf", 2048, 256, 4, 8.0
    if args.async_slicing:
        os.environ["NAPARI_ASYNC"] = "1"  # read when napari's settings load; never saved

    import napari
    import torch
    from qtpy.QtWidgets import QApplication, QLabel

    from napari_cytosyn._napari import _chunk_cache, _layers
    from napari_cytosyn._napari._qt._jobs import Job
    from napari_cytosyn.sampling import SamplerSettings
    from napari_cytosyn.slide.synthetic import SyntheticSlide

    if args.no_chunk_cache:
        _chunk_cache.DEFAULT_CACHE_MB = 0
    timeline = GuiTimeline()
    torch.set_num_threads(args.threads)
    os.environ["NAPARI_CYTOSYN_MODEL_THREADS"] = str(args.threads)  # network calls too
    model = load(args)
    settings = SamplerSettings(steps=args.steps, seed=5)
    viewer = napari.Viewer(show=True)
    camera = getattr(viewer, "scene", viewer).camera  # napari >= 0.9: viewer.scene
    viewer.window._qt_window.resize(args.window, int(args.window * 0.75))
    app = QApplication.instance()
    tmp = Path(tempfile.mkdtemp(prefix="gui_stall_"))
    mpp = float(model.mpp)
    zoom = 1.0 / mpp  # one screen px per level-0 px: level 0 is what napari reads

    centre_um = (args.size * mpp / 2, args.size * mpp / 2)
    view_um = 400 * mpp  # the camera hops by about half a screen

    def hop(k: int) -> None:
        dy, dx = ((0, 0), (1, 0), (1, 1), (0, 1))[k % 4]
        camera.center = (centre_um[0] + dy * view_um, centre_um[1] + dx * view_um)

    def make_slide(name: str):
        slide = SyntheticSlide.create(
            tmp / name, model, args.size, args.size, settings.replace(seed=2), chunk_px=args.chunk
        )
        camera.zoom = zoom
        hop(0)
        layer, view = _layers.add_synthetic_layer(viewer, slide)
        camera.zoom = zoom
        hop(0)
        return slide, layer, view

    # Warm-up: first calls (imports, allocator, kernels) are not what a user sees twice.
    warm = SyntheticSlide.create(
        tmp / "warm.zarr",
        model,
        args.chunk,
        args.chunk,
        settings.replace(seed=0),
        chunk_px=args.chunk,
    )
    Job("warm-up", lambda progress, cancel: warm.render_all()).start().wait(300_000)

    rec = TickRecorder()
    phases: dict[str, dict] = {}
    phases["idle"] = run_phase(app, rec, min(5.0, args.seconds))
    # The floor of any visible change here: a label's text changes 4x a second (each change
    # repaints the window; under Xvfb the OpenGL canvas makes that a full software composite).
    label = QLabel("0")
    viewer.window.add_dock_widget(label, name="tick")
    settle(app)
    phases["repaint_floor"] = run_phase(
        app, rec, min(5.0, args.seconds), lambda k: label.setText(str(k)), 0.25
    )

    # 2. generation without refreshes
    slide, layer, view = make_slide("a.zarr")
    view.live = False  # chunks land, the layer is not re-sliced for them
    job = Job(
        "Render all",
        lambda progress, cancel: slide.render_all(progress, cancel),
        show_progress=False,
    ).start()
    settle(app)
    phases["render_no_refresh"] = run_phase(app, rec, args.seconds)  # camera parked
    job.cancel()
    job.wait(120_000)
    view.close(timeout=60)
    made_a = slide.compute_count
    viewer.layers.remove(layer)

    # 4. generation with refreshes (run before 3 so that 3 can copy its refresh rate), with
    # napari's progress bar (4) and without it (4b: napari's activity spinner animates while a
    # progress bar is open, and every frame of it repaints the window)
    runs, worst = {}, {}
    for name, show in (("render", True), ("render_no_progress_bar", False)):
        slide, layer, view = make_slide(f"{name}.zarr")
        job = Job(
            "Render all",
            lambda progress, cancel, s=slide: s.render_all(progress, cancel),
            total=len(slide.missing_chunks(0)),
            show_progress=show,
        ).start()
        settle(app)
        timeline.events.clear()
        t0 = time.perf_counter()
        phases[name] = run_phase(app, rec, args.seconds, hop)
        elapsed = time.perf_counter() - t0
        worst[name] = timeline.attribute(rec.ticks)
        job.cancel()
        job.wait(120_000)
        view.close(timeout=60)
        cache = view.cache
        runs[name] = (
            view.refreshes,
            view.refreshes_skipped,
            slide.compute_count,
            elapsed,
            f"{cache.hits} hits, {cache.misses} misses",
        )
        if name != "render":
            viewer.layers.remove(layer)
        else:
            keep = layer
            keep.visible = False  # 4b measures one layer too, not two stacked
    layer = keep
    layer.visible = True
    refreshes, skipped, made_b, elapsed, cache_stats = runs["render"]

    # 3. the same number of refreshes of the same (now partly rendered) layer, no generation
    every = args.seconds / max(1, refreshes)

    def refresh_and_hop(k: int) -> None:
        if k % max(1, round(2.0 / every)) == 0:
            hop(k)
        layer.refresh(extent=False, thumbnail=False)

    phases["refresh_only"] = run_phase(app, rec, args.seconds, refresh_and_hop, every)

    print(
        f"model={getattr(model, 'name', args.model)} slide={args.size}px chunk={args.chunk}px "
        f"steps={args.steps} torch_threads={args.threads} phase={args.seconds:.0f}s"
    )
    names = (
        "idle",
        "repaint_floor",
        "render_no_refresh",
        "refresh_only",
        "render",
        "render_no_progress_bar",
    )
    for name in names:
        print(f"{name:>18}: {json.dumps({k: round(v, 1) for k, v in phases[name].items()})}")
    print(
        f"chunks rendered: {made_a} (no refresh), {made_b} in {elapsed:.1f} s with "
        f"{refreshes} layer refreshes ({skipped} skipped: napari had re-sliced already); "
        f"chunk cache: {cache_stats}"
    )
    for name in ("render", "render_no_progress_bar"):
        print(f"GUI-thread ms in the gaps over 40 ms of {name} (worst first):")
        for row in worst[name][:8]:
            print(f"    {json.dumps(row)}")
    result = {
        "max_stall_ms": round(phases["render"]["max_stall_ms"], 1),
        "p99_gap_ms": round(phases["render"]["p99_gap_ms"], 1),
        "render_no_refresh_max_stall_ms": round(phases["render_no_refresh"]["max_stall_ms"], 1),
        "refresh_only_max_stall_ms": round(phases["refresh_only"]["max_stall_ms"], 1),
        "idle_max_stall_ms": round(phases["idle"]["max_stall_ms"], 1),
        "repaint_floor_max_stall_ms": round(phases["repaint_floor"]["max_stall_ms"], 1),
        "repaint_floor_p99_gap_ms": round(phases["repaint_floor"]["p99_gap_ms"], 1),
        "render_no_refresh_p99_gap_ms": round(phases["render_no_refresh"]["p99_gap_ms"], 1),
        "render_no_progress_bar_max_stall_ms": round(
            phases["render_no_progress_bar"]["max_stall_ms"], 1
        ),
        "render_no_progress_bar_p99_gap_ms": round(
            phases["render_no_progress_bar"]["p99_gap_ms"], 1
        ),
        "render_worst_gap_ms": worst["render"][0] if worst["render"] else None,
        "chunks_rendered": made_b,
        "chunk_cache": not args.no_chunk_cache,
        "async_slicing": bool(args.async_slicing),
        "refreshes": refreshes,
        "model": getattr(model, "name", args.model),
        "chunk_px": args.chunk,
        "target_ms": 100,
    }
    viewer.close()
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
