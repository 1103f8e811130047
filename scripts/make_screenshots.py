"""Rebuild the user-guide screenshots (docs/images/ui-*.png) by driving the real widget.

Runs napari with the CytoSyn dock widget, opens the small H&E sample (real tissue, shipped with
the plugin), draws masks, inpaints (grabbing the progress display mid-job, then the synthetic
labels outline and the edit list), synthesizes a region, creates a synthetic slide and lets it
render around the view (its progressive preview first), then a 30,000 px slide seen whole, and
a synthetic twin of the sample next to it, and saves canvas and widget screenshots. Needs a display
(``xvfb-run -a``). Examples::

    xvfb-run -a python scripts/make_screenshots.py                      # embedded cytosyn-tiny
    xvfb-run -a python scripts/make_screenshots.py --embedded-path runs/train/w
    xvfb-run -a python scripts/make_screenshots.py --model grf --out /tmp/shots   # fast check

Every image is written by this script; nothing in docs/images/ui-*.png is edited by hand.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


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


def pump(app, seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.01)


def save(img: np.ndarray, path: Path) -> None:
    from skimage.io import imsave

    imsave(path, np.ascontiguousarray(img[..., :3]), check_contrast=False)
    print(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="cytosyn-tiny", help="cytosyn-tiny, grf, ...")
    parser.add_argument("--embedded-path", default=None, help="folder of embedded weights")
    parser.add_argument("--steps", type=int, help="default: the widget's, the model's own")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    import napari
    import torch
    from qtpy.QtWidgets import QApplication

    from napari_cytosyn._napari import _layers
    from napari_cytosyn._napari._qt._wait import wait_loaded
    from napari_cytosyn._napari._qt._widget import CytoSynWidget

    torch.set_num_threads(2)
    work = Path(tempfile.mkdtemp(prefix="cytosyn_shots_"))
    config = work / "widget.json"
    config.write_text(f'{{"cache_dir": "{work / "cache"}", "device": "cpu"}}')
    os.environ["NAPARI_CYTOSYN_CONFIG"] = str(config)

    viewer = napari.Viewer(show=True, title="napari-cytosyn")
    viewer.window._qt_window.resize(1500, 950)
    app = QApplication.instance()
    widget = CytoSynWidget(viewer)
    viewer.window.add_dock_widget(widget, name="CytoSyn")
    widget.models.override = load(args)
    if args.steps is not None:
        widget.sampling.steps_spin.setValue(args.steps)
    widget.sampling.seed_spin.setValue(42)
    widget.chunk_px = 256

    # 1. The widget next to the sample slide (the real 250 um H&E field at 0.25 um/px), with a
    # rectangle and an ellipse drawn on it, each about 85 um (170 px of the model) across.
    [real] = viewer.open_sample("napari-cytosyn", "he_slide")
    wait_loaded(real)  # it loads in a worker thread
    h0, w0 = real.data[0].shape[:2]
    mpp = float(real.scale[-1])
    cy, cx = h0 / 2 * mpp, w0 / 2 * mpp  # world um
    s = min(h0, w0) * mpp
    rect = np.array(
        [
            [cy - 0.36 * s, cx - 0.4 * s],
            [cy - 0.36 * s, cx - 0.06 * s],
            [cy - 0.02 * s, cx - 0.06 * s],
            [cy - 0.02 * s, cx - 0.4 * s],
        ]
    )
    ellipse = np.array(
        [
            [cy + 0.04 * s, cx + 0.04 * s],
            [cy + 0.04 * s, cx + 0.4 * s],
            [cy + 0.38 * s, cx + 0.4 * s],
            [cy + 0.38 * s, cx + 0.04 * s],
        ]
    )
    shapes = viewer.add_shapes(
        [rect, ellipse],
        shape_type=["rectangle", "ellipse"],
        name="mask",
        edge_color="yellow",
        face_color=[1, 1, 0, 0.15],
        edge_width=2,
        units=("um", "um"),
    )
    widget.edit_box.image_combo.select(real)
    widget.edit_box.mask_combo.select(shapes)
    pump(app, 1)  # the canvas takes its final size before the view is fitted to it
    viewer.reset_view()  # the whole field: the embedded model is made for low zoom
    pump(app, 2)
    save(viewer.screenshot(canvas_only=False, flash=False), args.out / "ui-widget.png")
    save(viewer.screenshot(canvas_only=True, flash=False), args.out / "ui-inpaint-before.png")

    # 2. Inpaint: the edited layer appears above the slide, its "synthetic" labels outline
    # above it; the edit list shows the edit. The progress display is grabbed mid-job.
    widget.confirm = lambda text: True
    job = widget.inpaint()
    assert job is not None
    steps = widget.sampling.steps_spin.value()
    while not job.is_finished and widget.session.job.done < max(2, steps // 3):
        pump(app, 0.05)
    pump(app, 0.3)
    save(_grab(widget.progress), args.out / "ui-progress.png")
    assert job.wait(3_600_000) and job.state == "done", job.error
    # the edited layer and its outline are built over a few turns of the event loop
    deadline = time.monotonic() + 60
    outline = None
    while outline is None and time.monotonic() < deadline:
        pump(app, 0.1)
        edited = next((ly for ly in viewer.layers if ly.name == f"{real.name} (edited)"), None)
        outline = None if edited is None else _layers.mask_layer_of(edited)
    assert outline is not None, "the edited layer's outline did not appear within 60 s"
    shapes.visible = False
    outline.visible = False
    pump(app, 2)
    save(viewer.screenshot(canvas_only=True, flash=False), args.out / "ui-inpaint-after.png")
    outline.visible = True
    pump(app, 2)
    save(viewer.screenshot(canvas_only=True, flash=False), args.out / "ui-synthetic-labels.png")
    widget.edit_box.image_combo.select(edited)
    pump(app, 1)
    # every box of the panel (its scroll area's whole content, not the part in view)
    save(_grab(widget.scroll.widget()), args.out / "ui-widget-panel.png")
    save(_grab(widget.edits_box), args.out / "ui-edits.png")

    # 3. Synthesize region: fill a rectangle drawn on the glass next to the tissue.
    viewer.layers.remove(shapes)
    box = viewer.add_shapes(
        [
            np.array(
                [
                    [0.1 * s, 1.02 * w0 * mpp],
                    [0.1 * s, 1.02 * w0 * mpp + 0.4 * s],
                    [0.5 * s, 1.02 * w0 * mpp + 0.4 * s],
                    [0.5 * s, 1.02 * w0 * mpp],
                ]
            )
        ],
        shape_type="rectangle",
        name="region",
        edge_color="yellow",
        face_color=[0, 0, 0, 0],
        units=("um", "um"),
    )
    widget.edit_box.mask_combo.select(box)
    job = widget.synthesize_region()
    assert job is not None and job.wait(3_600_000) and job.state == "done", job and job.error
    viewer.reset_view()
    pump(app, 2)
    save(viewer.screenshot(canvas_only=True, flash=False), args.out / "ui-synthesize-region.png")

    # 4. New synthetic slide: it renders around the view while the user looks.
    viewer.layers.clear()
    widget.synthetic_box.width_spin.setValue(4096)
    widget.synthetic_box.height_spin.setValue(4096)
    job = widget.new_synthetic_slide()
    assert job.wait(600_000) and job.state == "done", job.error
    layer = widget.edit_box.image_combo.layer()  # the new slide is selected
    widget.scroll.ensureWidgetVisible(widget.synthetic_box)
    view = widget.views[id(layer)]
    slide = _layers.slide_of(layer)
    camera = getattr(viewer, "scene", viewer).camera  # napari >= 0.9: viewer.scene
    camera.center = (2048 * slide.mpp.y, 2048 * slide.mpp.x)
    camera.zoom = 1.0
    # The progressive preview: early estimates of the chunks in view, before any is finished.
    end = time.perf_counter() + 600
    while view.previews_landed < 8 and slide.compute_count == 0 and time.perf_counter() < end:
        pump(app, 0.05)
    pump(app, 0.3)
    save(viewer.screenshot(canvas_only=True, flash=False), args.out / "ui-preview.png")
    end = time.perf_counter() + 1800
    while slide.compute_count < 6 and time.perf_counter() < end:
        pump(app, 0.5)
    pump(app, 1)
    save(viewer.screenshot(canvas_only=False, flash=False), args.out / "ui-synthetic-slide.png")
    view.close(timeout=600)

    # 5. A 30,000 px slide fitted to the window: only the middle is generated (provisional
    # coarse chunks from the finished ones), the rest shows the grey "not generated yet" checks.
    viewer.layers.clear()
    widget.synthetic_box.width_spin.setValue(30_000)
    widget.synthetic_box.height_spin.setValue(30_000)
    job = widget.new_synthetic_slide()
    assert job.wait(600_000) and job.state == "done", job.error
    layer = widget.edit_box.image_combo.layer()
    widget.scroll.ensureWidgetVisible(widget.synthetic_box)  # with its zoom note
    view = widget.views[id(layer)]
    slide = _layers.slide_of(layer)
    end = time.perf_counter() + 1800
    while slide.compute_count < 48 and time.perf_counter() < end:
        pump(app, 0.5)
    pump(app, 2)
    save(viewer.screenshot(canvas_only=False, flash=False), args.out / "ui-zoomed-out.png")
    view.close(timeout=600)  # only the view: the widget goes on (close_views unhooks it)

    # 6. A synthetic twin of the H&E sample next to it (napari's grid mode), with a
    # conditional model (the embedded model's v2 weights are).
    viewer.layers.clear()
    widget.update_conditioning()
    if widget.reference_box.conditional:
        [real] = viewer.open_sample("napari-cytosyn", "he_slide")
        wait_loaded(real)
        widget.edit_box.image_combo.select(real)
        widget.scroll.ensureWidgetVisible(widget.reference_box)
        job = widget.synthetic_twin()
        assert job is not None and job.wait(3_600_000) and job.state == "done", job and job.error
        pump(app, 0.5)
        twin = next(ly for ly in viewer.layers if ly is not real and ly.metadata.get("twin_of"))
        slide = _layers.slide_of(twin)
        slide.render_all()  # every chunk, so the picture is the finished twin
        twin.refresh()
        viewer.grid.enabled = True  # side by side: the real slide and its twin
        viewer.reset_view()
        pump(app, 3)
        save(viewer.screenshot(canvas_only=False, flash=False), args.out / "ui-twin.png")
        viewer.grid.enabled = False
        widget.close_views(timeout=600)
    else:
        print("the model is not conditional: no twin screenshot")
    viewer.close()


def _grab(widget) -> np.ndarray:
    """The dock widget as an RGB array (what the user sees in the panel)."""
    from qtpy.QtGui import QImage

    image = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGB888)
    w, h, stride = image.width(), image.height(), image.bytesPerLine()
    ptr = image.constBits()
    ptr.setsize(stride * h)
    buf = np.frombuffer(ptr, dtype=np.uint8)
    return buf.reshape(h, stride)[:, : w * 3].reshape(h, w, 3).copy()


if __name__ == "__main__":
    main()
