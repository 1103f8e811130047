"""The plain-Python session model behind the widget (no Qt): jobs, progress text, edits."""

from __future__ import annotations

import pytest

from napari_cytosyn._napari._session import (
    JobProgress,
    Session,
    SessionBusyError,
    format_duration,
    session_for,
)


def test_progress_text_has_counts_rate_and_time_left():
    job = JobProgress(title="Render all", unit="chunks", total=150, started=100.0, updated=100.0)
    assert job.text() == "Render all: 0 / 150 chunks"
    job.done, job.updated = 12, 106.0  # 2 chunks/s
    assert job.rate == pytest.approx(2.0)
    assert job.eta_s == pytest.approx(69.0)
    assert job.text() == "Render all: 12 / 150 chunks · 2 chunks/s · 1 min 9 s left"
    job.cancelling = True
    assert job.text().endswith("cancelling…")


def test_format_duration():
    assert [format_duration(s) for s in (4.4, 59.6, 200, 7500)] == [
        "4 s",
        "1 min 0 s",
        "3 min 20 s",
        "2 h 5 min",
    ]


def test_one_job_at_a_time_and_events_in_order():
    session = Session()
    seen = []
    session.job_changed.connect(lambda job: seen.append((job.done, job.outcome)))
    cancelled = []
    session.begin_job("Inpaint", "steps", 10, cancel=lambda: cancelled.append(True))
    assert session.busy
    with pytest.raises(SessionBusyError, match="'Inpaint' is still running"):
        session.begin_job("Export", "tiles")
    session.progress(3, 10)
    session.cancel()
    assert cancelled == [True] and session.job.cancelling
    session.end_job("cancelled")
    assert not session.busy
    assert seen == [(0, None), (3, None), (3, None), (3, "cancelled")]
    session.begin_job("Export", "tiles")  # free again


def test_render_jobs_leave_a_chunk_rate_for_estimates():
    session = Session()
    job = session.begin_job("Render all", "chunks", 100)
    job.started = job.updated - 10.0
    session.progress(20, 100)
    job.started = job.updated - 10.0
    session.end_job("done")
    assert session.chunk_rate == pytest.approx(2.0, rel=0.05)


def test_one_session_per_viewer_behind_proxies():
    class Viewer:
        pass

    class Proxy:
        def __init__(self, wrapped):
            self.__wrapped__ = wrapped

    a, b = Viewer(), Viewer()
    assert session_for(a) is session_for(Proxy(a)) is session_for(a)
    assert session_for(b) is not session_for(a)


def test_warm_up_builds_the_unit_registry_napari_parses_layer_units_with():
    import pint

    from napari_cytosyn._napari._session import warm_up

    thread = warm_up()
    assert warm_up() is thread  # once per process
    thread.join(60)
    import sys

    assert "scipy.ndimage" in sys.modules  # napari's first image layer needs it
    from vispy.visuals.line.dash_atlas import _make_pattern

    assert _make_pattern.cache_info().currsize >= 13  # napari's first labels layer needs them
    registry = pint.get_application_registry()
    assert type(registry.get()).__name__ != "LazyRegistry"  # built, not deferred
    assert registry("um").to("mm").magnitude == 1e-3


def test_layer_links_live_in_the_viewer_session_and_go_with_the_layer():
    import gc

    from napari_cytosyn._napari._session import links_of, session_for

    class Viewer:  # any object a session can be kept for
        pass

    class Layer:
        pass

    a, b = Viewer(), Viewer()
    layer, other, slide = Layer(), Layer(), object()
    session_for(a).layers.sources[layer] = slide
    session_for(b).layers.masks[other] = Layer()  # its "synthetic" labels layer
    assert links_of(layer) is session_for(a).layers
    assert links_of(layer).sources[layer] is slide
    assert links_of(other) is session_for(b).layers and links_of(Layer()) is None
    del layer
    gc.collect()
    assert len(session_for(a).layers.sources) == 0  # weak: a removed layer forgets its links


def test_a_loaded_model_is_frozen_out_of_full_garbage_collections(monkeypatch):
    import gc

    import napari_cytosyn.models as models
    from napari_cytosyn._napari._actions import ModelProvider, thaw

    class Model:  # a model object, as load_model returns one
        pass

    monkeypatch.setattr(models, "load_model", lambda name, **kw: Model())
    thaw()
    provider = ModelProvider()
    model = provider.get("some-model", "cpu")
    try:
        # in Python's permanent generation: no collection scans it (nor what existed with it)
        assert gc.get_freeze_count() > 0
        assert not any(obj is model for obj in gc.get_objects())
        assert provider.get("some-model", "cpu") is model  # loaded once
    finally:
        thaw()  # a closing viewer gives them back to the collector
    assert gc.get_freeze_count() == 0
    assert any(obj is model for obj in gc.get_objects())


def test_warm_up_imports_the_slide_readers_napari_would_import_on_the_gui_thread():
    """In a fresh interpreter (the suite has imported everything already): opening a real slide
    after the warm-up imports none of dask, distributed, tifffile or openslide."""
    import ast
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(
        """
        import sys
        from napari_cytosyn._napari._session import warm_up
        readers = ("dask.array", "distributed", "tifffile", "imagecodecs", "openslide",
                   "napari_cytosyn._napari._reader")
        assert not [m for m in readers if m in sys.modules], "imported before the warm-up"
        warm_up().join(120)
        before = set(sys.modules)
        import numpy as np
        from napari_cytosyn._napari._sample_data import _he_layer_data, real_sample_path
        import tempfile, pathlib
        data, _, _ = _he_layer_data(*real_sample_path(pathlib.Path(tempfile.mkdtemp())))
        np.asarray(data[-1])
        print("NEW", sorted(set(sys.modules) - before))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    [line] = [ln for ln in out.stdout.splitlines() if ln.startswith("NEW")]
    heavy = {"dask.array", "distributed", "tifffile", "imagecodecs", "openslide", "PIL.Image"}
    heavy |= {"PIL.PngImagePlugin", "imagecodecs._zlib", "dask.cache", "tornado"}
    assert not heavy & set(ast.literal_eval(line[4:])), line
