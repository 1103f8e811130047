"""Sample data: the small real H&E slide (shipped image, credited) and a synthetic slide rendered
where the viewer looks."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest

from napari_cytosyn._napari import _chunk_cache, _layers, _sample_data, _sample_image
from napari_cytosyn._napari._qt._wait import wait_loaded
from napari_cytosyn.models.grf import GRFModel

PLUGIN = "napari-cytosyn"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    config = tmp_path / "widget.json"
    config.write_text(f'{{"cache_dir": "{tmp_path / "cache"}", "device": "cpu"}}')
    monkeypatch.setenv("NAPARI_CYTOSYN_CONFIG", str(config))
    return tmp_path / "cache"


def test_he_sample_is_the_shipped_real_image_as_a_credited_40x_pyramid(make_napari_viewer, cache):
    viewer = make_napari_viewer()
    [layer] = viewer.open_sample(PLUGIN, "he_slide")
    wait_loaded(layer)
    path, image = _sample_data.real_sample_path(cache)
    assert path.parent == cache / "samples" and path.exists()
    assert layer.metadata["path"] == str(path)
    # Credited where the user sees it: the layer's name and metadata.
    assert "TIA Centre" in layer.name
    assert layer.metadata["credit"] == image.credit
    assert "TIA Centre" in image.credit and "BSD-3-Clause" in image.credit
    assert layer.metadata["sample_source"]["package"] == "tiatoolbox==2.1.3"
    # Level 0 is the shipped image, pixel for pixel (lossless), at 0.25 um/px.
    assert image.rgb.shape == (1000, 1000, 3)
    np.testing.assert_array_equal(np.asarray(layer.data[0][:, :]), image.rgb)
    np.testing.assert_allclose(layer.scale, (0.25, 0.25))
    assert layer.multiscale and [d.shape[:2] for d in layer.data] == [
        (1000, 1000),
        (500, 500),
        (250, 250),
    ]
    for fine, coarse in itertools.pairwise(layer.data):
        f = np.asarray(fine[:, :]).astype(float)
        expected = f.reshape(f.shape[0] // 2, 2, f.shape[1] // 2, 2, 3).mean(axis=(1, 3))
        assert np.abs(np.asarray(coarse[:, :]) - expected).max() <= 1  # 2x area average
    # H&E, not a blank or a pattern: purple nuclei and pink tissue cover most of it.
    rgb = image.rgb.astype(int)
    stained = (rgb[..., 1] < rgb[..., 0] - 20) & (rgb[..., 1] < rgb[..., 2] - 10)
    assert stained.mean() > 0.6
    # Written once: opening the sample again reuses the file.
    mtime = path.stat().st_mtime_ns
    [again] = viewer.open_sample(PLUGIN, "he_slide")
    wait_loaded(again)
    assert path.stat().st_mtime_ns == mtime
    assert again.metadata["path"] == str(path) and layer.metadata["path"] == str(path)


def test_he_sample_layer_appears_at_once_and_loads_in_a_worker(make_napari_viewer, cache):
    import time

    from napari_cytosyn._napari._qt._widget import CytoSynWidget

    viewer = make_napari_viewer()
    widget = CytoSynWidget(viewer)
    t0 = time.perf_counter()
    [layer] = viewer.open_sample(PLUGIN, "he_slide")
    returned_s = time.perf_counter() - t0
    # napari called the sample on the GUI thread; the file work is not done yet.
    assert _sample_data.loading(layer) and "path" not in layer.metadata
    assert [d.shape[:2] for d in layer.data] == [(1000, 1000), (500, 500), (250, 250)]
    grey = np.asarray(layer.data[-1][:64, :64])
    assert set(np.unique(grey)) <= set(_chunk_cache.CHECKER_GREYS)
    # Nothing can be inpainted into it before it has loaded: a clear refusal.
    widget.edit_box.image_combo.select(layer)
    assert widget.inpaint() is None
    assert "still loading" in widget.status.text()
    wait_loaded(layer)
    assert not _sample_data.loading(layer)
    path, image = _sample_data.real_sample_path(cache)
    assert layer.metadata["path"] == str(path) and "TIA Centre" in layer.metadata["credit"]
    np.testing.assert_array_equal(np.asarray(layer.data[0][:, :]), image.rgb)
    print(f"open_sample returned after {returned_s * 1000:.0f} ms")
    # Closed as a user closes it: the objects frozen out of garbage collection while it was
    # open (the viewer's, when this is the process's first viewer) are collectable again.
    widget.close()


def test_sample_image_is_refused_when_it_is_not_the_credited_file(tmp_path, monkeypatch):
    import shutil
    from importlib import resources

    shipped = resources.files("napari_cytosyn._napari") / "sample_data"
    fake = tmp_path / "sample_data"
    shutil.copytree(str(shipped), fake)
    (fake / "tiatoolbox_target_image.png").write_bytes(b"not the image")

    class Package:
        def __truediv__(self, name):
            return fake if name == "sample_data" else None

    monkeypatch.setattr(_sample_image.resources, "files", lambda name: Package())
    with pytest.raises(ValueError, match="sha256"):
        _sample_image.sample_image()
    (fake / "sources.json").unlink()
    with pytest.raises(FileNotFoundError, match="reinstall"):
        _sample_image.sample_image()


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
    # The model loads in a worker thread: the layer is there at once (grey checks), its
    # rendering starts when the model is ready.
    [layer] = viewer.open_sample(PLUGIN, "synthetic_slide")
    assert set(np.unique(np.asarray(layer.data[-1][:64, :64]))) <= set(_chunk_cache.CHECKER_GREYS)
    qtbot.waitUntil(lambda: _layers.slide_of(layer) is not None, timeout=60_000)
    slide = _layers.slide_of(layer)
    assert _layers.view_of(layer) is not None
    assert layer.metadata["cytosyn"]["kind"] == "synthetic"
    assert slide.level_shapes[0] == (16384, 16384)
    centre = (8192 // slide.chunk_px, 8192 // slide.chunk_px)
    camera = getattr(viewer, "scene", viewer).camera  # napari >= 0.9: viewer.scene
    camera.center = (0, 4096.0, 4096.0)
    camera.zoom = 2.0
    end = time.monotonic() + 60
    while not slide.is_done(0, *centre):
        assert time.monotonic() < end, "the chunk under the camera was not rendered"
        qtbot.wait(50)
    assert slide.metadata()["chunks_done"] < 64  # only around the view, not the whole slide
    viewer.layers.remove(layer)  # closes the renderer
