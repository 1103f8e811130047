"""Progressive preview in napari: a synthetic layer at full zoom shows an early estimate of the
chunk being generated within a model call, then the finished pixels (real viewer, real store)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from napari_cytosyn._napari import _layers
from napari_cytosyn._napari._chunk_cache import checker
from napari_cytosyn.models.grf import GRFModel
from napari_cytosyn.sampling import SamplerSettings
from napari_cytosyn.slide.synthetic import SyntheticSlide


@dataclass(eq=False)
class SlowGRF(GRFModel):
    """The GRF model with a slow denoiser (a network on a busy CPU)."""

    delay_s: float = 0.15

    def denoise(self, *args, **kwargs):
        time.sleep(self.delay_s)
        return super().denoise(*args, **kwargs)


def _wait_until(qtbot, condition, timeout_s: float = 60.0) -> None:
    end = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < end, "timed out"
        qtbot.wait(10)


def test_preview_shows_before_the_chunk_and_is_replaced_by_it(make_napari_viewer, qtbot, tmp_path):
    torch.set_num_threads(1)
    slide = SyntheticSlide.create(
        tmp_path / "s.cytosyn", SlowGRF(), 512, 512, SamplerSettings(steps=6, seed=3), chunk_px=256
    )
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(900, 700)
    layer, view = _layers.add_synthetic_layer(viewer, slide)
    um = slide.mpp.x
    camera = getattr(viewer, "scene", viewer).camera  # napari >= 0.9: viewer.scene
    camera.center = (0, 128.0 * um, 128.0 * um)  # the centre of chunk (0, 0)
    camera.zoom = 1.0 / um  # one screen px per slide px: level 0
    t0 = time.perf_counter()
    _wait_until(qtbot, lambda: view.first_preview_shown is not None)
    assert view.preview_error is None
    assert not slide.is_done(0, 0, 0)  # the chunk is still being generated
    shown = np.asarray(layer.data[0][0:256, 0:256])
    bare = checker(0, 0, 256, 256)
    # The first model call's windows cover most of the chunk already.
    assert (shown != bare).any(axis=-1).mean() > 0.5
    assert not slide.store.is_done(0, 0, 0)  # and nothing of it was stored
    _wait_until(qtbot, lambda: slide.is_done(0, 0, 0) and view.first_chunk_shown is not None)
    assert view.first_preview_shown < view.first_chunk_shown
    print(
        f"preview after {view.first_preview_shown - t0:.2f} s, chunk after "
        f"{view.first_chunk_shown - t0:.2f} s, {view.previews_landed} preview updates"
    )
    view.close(timeout=30)
    np.testing.assert_array_equal(
        np.asarray(layer.data[0][0:256, 0:256]), slide.store.read_chunk(0, 0, 0)
    )
    assert (0, 0) not in view.cache.previews


def test_preview_off_shows_only_finished_chunks(make_napari_viewer, qtbot, tmp_path):
    torch.set_num_threads(1)
    slide = SyntheticSlide.create(
        tmp_path / "s.cytosyn", GRFModel(), 256, 256, SamplerSettings(steps=2, seed=3), chunk_px=256
    )
    viewer = make_napari_viewer(show=True)
    _, view = _layers.add_synthetic_layer(viewer, slide, preview=False)
    _wait_until(qtbot, lambda: slide.is_done(0, 0, 0))
    view.close(timeout=30)
    assert view.previews_landed == 0 and view.cache.previews is None


def test_the_first_view_is_planned_when_napari_places_the_layer_not_after_the_debounce(
    make_napari_viewer, qtbot, tmp_path
):
    slide = SyntheticSlide.create(
        tmp_path / "s.cytosyn", GRFModel(), 2048, 2048, SamplerSettings(steps=2, seed=3)
    )
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(900, 700)
    # a camera debounce far longer than the test: only the first placement can plan the view
    layer, view = _layers.add_synthetic_layer(viewer, slide, debounce_ms=600_000)
    um = slide.mpp.x
    camera = getattr(viewer, "scene", viewer).camera  # napari >= 0.9: viewer.scene
    camera.center = (0, 1024.0 * um, 1024.0 * um)
    camera.zoom = 1.0 / um  # level 0 around the centre
    _wait_until(qtbot, lambda: view._request is not None, timeout_s=10)
    level, (y0, x0, y1, x1) = view._request
    assert level == layer.data_level == 0
    assert y0 < 1024 < y1 and x0 < 1024 < x1 and (y1 - y0) < 2048  # the view, not the slide
    view.close(timeout=30)


def test_previews_reach_the_gui_thread_before_events_queued_earlier(qtbot):
    import threading

    from napari_cytosyn._napari._qt._lazy_view import _ChunkRelay

    relay, seen = _ChunkRelay(), []
    relay.note.connect(lambda: seen.append("note"))
    relay.preview.connect(lambda chunks: seen.append(chunks))

    def worker() -> None:  # as the renderer's thread does: a queued signal, then previews
        relay.note.emit()
        relay.post_preview([(0, 1)])
        relay.post_preview([(2, 3)])

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    _wait_until(qtbot, lambda: len(seen) == 3)
    assert seen == [[(0, 1)], [(2, 3)], "note"]  # in order, ahead of the earlier signal


def test_a_data_refresh_leaves_the_layer_list_alone_and_a_thumbnail_refresh_reaches_it(
    make_napari_viewer, qtbot, tmp_path
):
    # napari's layer list answers any layer event with a relayout and a repaint of the whole
    # list, a window compose of its own: a refresh of new chunks must reach only the canvas.
    slide = SyntheticSlide.create(
        tmp_path / "s.cytosyn", GRFModel(), 512, 512, SamplerSettings(steps=2, seed=3)
    )
    viewer = make_napari_viewer(show=True)
    layer, view = _layers.add_synthetic_layer(viewer, slide, preview=False)
    _wait_until(qtbot, lambda: view._drawn() and slide.is_done(0, 0, 0))
    view.live = False  # only the refreshes below
    qtbot.wait(300)
    list_changes, data_sent = [], []
    viewer.window._qt_viewer.layers.model().dataChanged.connect(lambda *a: list_changes.append(a))
    layer.events.set_data.connect(data_sent.append)
    view._landed_seq += 1  # a visible chunk landed
    view._thumbnail_stale = False
    view._do_refresh()
    assert len(data_sent) == 1  # the canvas gets the new pixels
    assert list_changes == []
    view._landed_seq += 1
    view._thumbnail_stale, view._thumbnail_t = True, 0.0  # the thumbnail is due
    view._do_refresh()
    assert len(data_sent) == 2 and list_changes  # the list shows the new thumbnail
    view.close(timeout=30)
