"""Rebuild the test-kit screenshots (docs/images/testkit/ui-*.png) by driving the real widget.

Runs napari with the "Test a segmentation tool" dock widget, makes a procedural layout,
synthesizes it with the embedded mask-conditioned model, runs the reference segmenter on all
stress variants, and saves the window and the canvas (errors layer over the image). Needs a
display (``xvfb-run -a``)::

    xvfb-run -a python scripts/make_testkit_screenshots.py
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--method", default="builtin:otsu_watershed")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "testkit")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    import napari
    import torch
    from qtpy.QtWidgets import QApplication
    from skimage.io import imsave

    from napari_cytosyn._napari._qt._testkit_widget import TestkitWidget

    torch.set_num_threads(2)
    viewer = napari.Viewer(show=True, title="napari-cytosyn: test a segmentation tool")
    viewer.window._qt_window.resize(1500, 950)
    app = QApplication.instance()
    widget = TestkitWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Test a segmentation tool")
    widget.size_spin.setValue(args.size)
    widget.seed_spin.setValue(args.seed)
    widget.make_layout()
    job = widget.synthesize()
    if not job.wait(1_800_000) or job.state != "done":
        raise SystemExit(f"synthesis failed: {job.error}")
    widget.method_combo.setCurrentText(args.method)
    job = widget.run_method()
    if not job.wait(600_000) or job.state != "done":
        raise SystemExit(f"run failed: {job.error}")
    viewer.reset_view()
    end = time.perf_counter() + 1.0
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.01)

    def save(img: np.ndarray, name: str) -> None:
        imsave(args.out / name, np.ascontiguousarray(img[..., :3]), check_contrast=False)
        print(f"wrote {args.out / name}", flush=True)

    save(viewer.screenshot(canvas_only=False, flash=False), "ui-testkit.png")
    viewer.layers["errors"].visible = False
    save(viewer.screenshot(canvas_only=True, flash=False), "ui-testkit-image.png")
    viewer.layers["errors"].visible = True
    save(viewer.screenshot(canvas_only=True, flash=False), "ui-testkit-errors.png")
    viewer.close()


if __name__ == "__main__":
    main()
