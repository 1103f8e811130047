"""Decoded-chunk cache of synthetic layers, and the lazy view's refresh economy (real zarr store,
real napari viewer)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from napari_cytosyn._napari import _chunk_cache, _layers
from napari_cytosyn._napari._chunk_cache import ChunkCache, chunk_cache
from napari_cytosyn.models.grf import GRFModel
from napari_cytosyn.sampling import SamplerSettings
from napari_cytosyn.slide.synthetic import SyntheticSlide


@pytest.fixture
def slide(tmp_path):
    torch.set_num_threads(1)
    return SyntheticSlide.create(
        tmp_path / "s.zarr", GRFModel(), 768, 512, SamplerSettings(steps=2, seed=3), chunk_px=256
    )


def test_cache_returns_the_stored_pixels_and_keeps_at_most_max_bytes(slide):
    for cy, cx in ((0, 0), (0, 1), (0, 2), (1, 0)):
        slide.generate_chunk(0, cy, cx)
    chunk_bytes = 256 * 256 * 3
    cache = ChunkCache(slide.store, max_bytes=2 * chunk_bytes)
    first = cache.get(0, 0, 0)
    np.testing.assert_array_equal(first, slide.store.read_chunk(0, 0, 0))
    assert (cache.hits, cache.misses) == (0, 1)
    assert cache.get(0, 0, 0) is first and cache.hits == 1
    assert not first.flags.writeable  # shared: nobody may paint into it
    cache.get(0, 0, 1)
    cache.get(0, 0, 2)  # over the budget: the least recently used chunk (0, 0, 0) goes
    assert len(cache) == 2 and cache.nbytes == 2 * chunk_bytes
    cache.get(0, 0, 0)
    assert cache.misses == 4
    cache.prefetch(0, 1, 0)
    assert cache.get(0, 1, 0) is not None and cache.misses == 4


def test_cache_of_zero_bytes_decodes_every_read(slide):
    slide.generate_chunk(0, 0, 0)
    cache = ChunkCache(slide.store, max_bytes=0)
    cache.prefetch(0, 0, 0)
    a, b = cache.get(0, 0, 0), cache.get(0, 0, 0)
    np.testing.assert_array_equal(a, b)
    assert (len(cache), cache.misses) == (0, 2)
    with pytest.raises(ValueError, match="max_bytes >= 0"):
        ChunkCache(slide.store, max_bytes=-1)


def test_layer_reads_finished_chunks_through_the_cache_checker_elsewhere(slide):
    slide.generate_chunk(0, 0, 1)
    level0 = _layers.synthetic_levels(slide)[0]
    region = np.asarray(level0[100:400, 200:600])
    expected = _layers.checker(100, 200, 300, 400)
    assert set(np.unique(expected)) == set(_chunk_cache.CHECKER_GREYS)  # grey, never white glass
    expected[:156, 56:312] = slide.store.read_chunk(0, 0, 1)[100:, :]
    np.testing.assert_array_equal(region, expected)
    assert chunk_cache(slide).misses == 1
    np.asarray(level0[0:256, 256:512])
    assert chunk_cache(slide).hits == 1


def _wait_until(qtbot, condition, timeout_s: float = 30.0) -> None:
    end = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < end, "timed out"
        qtbot.wait(20)


def test_view_decodes_landed_chunks_off_the_gui_thread(make_napari_viewer, qtbot, slide):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(900, 700)
    layer, view = _layers.add_synthetic_layer(viewer, slide)
    camera = getattr(viewer, "scene", viewer).camera  # napari >= 0.9: viewer.scene
    camera.center = (0, 64.0, 192.0)
    camera.zoom = 4.0  # level 0 around chunk (0, 1)
    # The refresh after the chunk landed: napari's slice reads it (a refresh counted before it,
    # for a preview, said nothing: on a loaded machine the landing's own came after).
    _wait_until(qtbot, lambda: slide.is_done(0, 0, 1) and view.cache.hits >= 1)
    view.close(timeout=30)
    # The chunk was decoded into the cache by the renderer's thread: napari's slice hit it
    # (the wait above fails after 30 s otherwise).
    assert (0, 0, 1) in view.cache._chunks
    np.testing.assert_array_equal(
        np.asarray(layer.data[0][0:256, 256:512]), slide.store.read_chunk(0, 0, 1)
    )


def test_view_skips_a_refresh_when_napari_resliced_after_the_chunk_landed(
    make_napari_viewer, qtbot, slide
):
    slide.render_all()  # nothing left to render: chunk landings are simulated below
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(900, 700)
    layer, view = _layers.add_synthetic_layer(viewer, slide, refresh_ms=300)
    camera = getattr(viewer, "scene", viewer).camera  # napari >= 0.9: viewer.scene
    camera.center = (0, 64.0, 192.0)
    camera.zoom = 4.0
    qtbot.wait(300)
    assert view.is_visible(0, 0, 1)
    before = view.refreshes
    view._thumbnail_t = time.monotonic()  # the thumbnail was just redrawn: not due for a while
    # A chunk lands on screen, then napari re-slices the layer (a camera move) before the
    # coalesced refresh fires: that refresh has nothing new to show and is skipped.
    view._on_chunk(0, 0, 1)
    assert view._refresh.isActive()
    layer.refresh(extent=False, thumbnail=False)  # what napari does after a camera move
    _wait_until(qtbot, lambda: not view._refresh.isActive())
    assert (view.refreshes, view.refreshes_skipped) == (before, 1)
    # No slice in between this time: the refresh happens.
    view._on_chunk(0, 0, 1)
    _wait_until(qtbot, lambda: not view._refresh.isActive())
    assert (view.refreshes, view.refreshes_skipped) == (before + 1, 1)
    view.close(timeout=30)


def test_checker_alternates_squares_anchored_at_the_level_origin():
    from napari_cytosyn._napari._chunk_cache import CHECKER_GREYS, CHECKER_PX, checker

    light, dark = CHECKER_GREYS
    s = CHECKER_PX
    out = checker(-s, s - 1, 2 * s, 3)  # rows -s..s-1, columns s-1..s+1
    assert out.shape == (2 * s, 3, 3) and out.dtype == np.uint8 and out.flags.writeable
    assert (out == out[..., :1]).all()  # grey
    # square (-1, 0) is dark, (-1, 1) light, (0, 0) light, (0, 1) dark
    np.testing.assert_array_equal(out[0, :, 0], [dark, light, light])
    np.testing.assert_array_equal(out[s, :, 0], [light, dark, dark])
    np.testing.assert_array_equal(checker(0, 0, 0, 5).shape, (0, 5, 3))
