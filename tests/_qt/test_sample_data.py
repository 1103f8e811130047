"""Sample data: a small real H&E slide and a synthetic slide rendered where the viewer looks."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from napari_cytosyn._napari import _layers, _sample_data
from napari_cytosyn.models.grf import GRFModel

PLUGIN = "napari-cytosyn"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    config = tmp_path / "widget.json"
    config.write_text(f'{{"cache_dir": "{tmp_path / "cache"}", "device": "cpu"}}')
    monkeypatch.setenv("NAPARI_CYTOSYN_CONFIG", str(config))
    return tmp_path / "cache"


def test_he_sample_is_a_pyramidal_slide_at_half_a_micron(make_napari_viewer, cache):
    viewer = make_napari_viewer()
    [layer] = viewer.open_sample(PLUGIN, "he_slide")
    path, credit = _sample_data.real_sample_path(cache)
    assert path.parent == cache / "samples" and path.exists()
    assert layer.metadata["path"] == str(path)
    assert layer.metadata["credit"] == credit
    if _sample_data.training_image() is None:
        assert "test pattern" in credit  # says plainly that it is not real tissue
    else:
        assert "BSD" in credit
    assert layer.multiscale and len(layer.data) >= 3
    np.testing.assert_allclose(layer.scale, (0.5, 0.5))
    shapes = [d.shape[:2] for d in layer.data]
    for fine, coarse in itertools.pairwise(shapes):
        assert coarse == (fine[0] // 2, fine[1] // 2)
    coarsest = np.asarray(layer.data[-1][:, :])
    assert coarsest.dtype == np.uint8 and coarsest.std() > 10  # an image, not a blank
    # Written once: opening the sample again reuses the file.
    mtime = path.stat().st_mtime_ns
    viewer.open_sample(PLUGIN, "he_slide")
    assert path.stat().st_mtime_ns == mtime


def test_synthetic_sample_renders_where_the_viewer_looks(
    make_napari_viewer, cache, qtbot, monkeypatch
):
    import napari_cytosyn.models as models

    def grf(name, device="auto", **kw):
        assert name == "cytosyn-tiny"
        return GRFModel()

    # The embedded model is replaced by the fast test model; the sample's wiring is the same.
    monkeypatch.setattr(models, "load_model", grf)
    monkeypatch.setattr(_sample_data, "SYNTHETIC_STEPS", 3)
    viewer = make_napari_viewer(show=True)
    [layer] = viewer.open_sample(PLUGIN, "synthetic_slide")
    slide = _layers.slide_of(layer)
    assert _layers.view_of(layer) is not None
    assert layer.metadata["cytosyn"]["kind"] == "synthetic"
    assert slide.level_shapes[0] == (16384, 16384)
    centre = (8192 // slide.chunk_px, 8192 // slide.chunk_px)
    viewer.camera.center = (0, 4096.0, 4096.0)
    viewer.camera.zoom = 2.0
    end = time.monotonic() + 60
    while not slide.is_done(0, *centre):
        assert time.monotonic() < end, "the chunk under the camera was not rendered"
        qtbot.wait(50)
    assert slide.metadata()["chunks_done"] < 64  # only around the view, not the whole slide
    viewer.layers.remove(layer)  # closes the renderer
