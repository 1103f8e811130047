"""Python's cyclic garbage collector runs on the GUI thread only while the dock is open: a
collection in a worker thread would run the C++ destructors of a closed viewer's Qt objects
there (see napari_cytosyn/_napari/_qt/_gc.py)."""

from __future__ import annotations

import gc
import threading
import weakref

import pytest

from napari_cytosyn._napari._qt._gc import collect_on_gui_thread, stop_collecting_on_gui_thread

from .conftest import new_slide


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


@pytest.fixture
def collections():
    """Names of the threads that started a collection while the test ran."""
    seen: list[str] = []

    def record(phase: str, info: dict) -> None:
        if phase == "start":
            seen.append(threading.current_thread().name)

    gc.callbacks.append(record)
    yield seen
    gc.callbacks.remove(record)


def _garbage_in_a_thread(n: int) -> weakref.ref:
    first: list[weakref.ref] = []

    def make() -> None:
        for k in range(n):
            node = Node()
            if k == 0:
                first.append(weakref.ref(node))

    worker = threading.Thread(target=make, name="worker")
    worker.start()
    worker.join()
    return first[0]


def test_without_the_collector_a_worker_thread_collects(qapp, collections):
    stop_collecting_on_gui_thread()
    assert gc.isenabled() and gc.get_threshold()[0] > 0
    _garbage_in_a_thread(20_000)
    assert "worker" in collections  # the hazard the collector removes


def test_the_collector_collects_a_worker_threads_garbage_on_the_gui_thread(qtbot, collections):
    collector = collect_on_gui_thread()
    try:
        assert gc.get_threshold()[0] == 0  # no automatic collection
        # dask's slicing calls gc.enable() on its way out, whatever the state was before
        dask_array = pytest.importorskip("dask.array")
        dask_array.ones((8, 8), chunks=4)[2:5].compute()
        assert gc.get_threshold()[0] == 0
        cycle = _garbage_in_a_thread(20_000)
        assert collections == []  # nothing collected in the worker
        assert cycle() is not None
        qtbot.waitUntil(lambda: cycle() is None, timeout=5_000)  # the GUI thread collected
        assert collections and set(collections) == {threading.main_thread().name}
        assert sum(collector.collections) >= 1
    finally:
        stop_collecting_on_gui_thread()
    assert gc.get_threshold()[0] > 0


def test_while_a_synthetic_slide_renders_every_collection_runs_on_the_gui_thread(
    he_widget, qtbot, collections
):
    _, widget, _ = he_widget
    assert gc.get_threshold()[0] == 0  # the dock started the collector
    _, slide, _ = new_slide(widget, 2048, 2048)
    qtbot.waitUntil(lambda: slide.is_done(0, 0, 0), timeout=60_000)
    qtbot.wait(500)
    assert collections, "nothing was collected while the slide rendered"
    assert set(collections) == {threading.main_thread().name}
