"""Rendering on a real dask LocalCluster: bit-identical to one process, survives a killed worker."""

import os
import signal
import threading

import numpy as np
import pytest

pytest.importorskip("distributed")
torch = pytest.importorskip("torch")

from napari_cytosyn.distributed import close_client, make_client, render_distributed  # noqa: E402
from napari_cytosyn.models.grf import GRFModel  # noqa: E402
from napari_cytosyn.sampling import SamplerSettings  # noqa: E402
from napari_cytosyn.sampling.threads import model_workers  # noqa: E402
from napari_cytosyn.slide.synthetic import SyntheticSlide  # noqa: E402

SETTINGS = SamplerSettings(steps=4)


def _create(path, width=512, height=256, seed=5):
    return SyntheticSlide.create(
        path, GRFModel(), width, height, SETTINGS.replace(seed=seed), chunk_px=128
    )


@pytest.fixture(scope="module")
def client():
    c = make_client(workers=2)
    yield c
    close_client(c)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The same slide rendered in this process, single-threaded."""
    torch.set_num_threads(1)
    slide = _create(tmp_path_factory.mktemp("ref") / "ref.cytosyn")
    slide.render_all()
    return slide


def _assert_complete_and_equal(path, reference):
    """Every chunk of every level finished and equal to the single-process reference."""
    slide = SyntheticSlide.open(path, mode="r")
    for k in range(slide.store.n_levels):
        assert slide.store.completion(k).grid.all()
        np.testing.assert_array_equal(
            np.asarray(slide.store.level_array(k)[...]),
            np.asarray(reference.store.level_array(k)[...]),
        )


def test_two_worker_processes_render_bit_identical_chunks(tmp_path, client, reference):
    path = tmp_path / "d.cytosyn"
    _create(path)
    assert len(set(client.run(os.getpid).values())) == 2  # two worker processes
    ticks = []
    rendered = render_distributed(
        path, model=GRFModel, client=client, group=1, progress=lambda d, t: ticks.append((d, t))
    )
    assert rendered == 8  # 2 x 4 chunks of 128 px
    assert ticks[-1] == (8, 8)
    _assert_complete_and_equal(path, reference)
    # each worker process loaded the model once, and both took part
    loads = client.run(
        lambda: len(__import__("napari_cytosyn.distributed").distributed._WORKER_MODELS)
    )
    assert sorted(loads.values()) == [1, 1]
    # two processes on this machine's cores: each runs its network calls one at a time
    assert set(client.run(model_workers).values()) == {1}


def test_worker_killed_mid_run_still_yields_complete_correct_slide(tmp_path, client, reference):
    path = tmp_path / "k.cytosyn"
    _create(path)
    pids = client.run(os.getpid)
    killed = threading.Event()

    def kill_one_worker(done, total):
        if done >= 2 and not killed.is_set():
            busy = [addr for addr, tasks in client.processing().items() if tasks]
            victim = busy[0] if busy else next(iter(pids))
            os.kill(pids[victim], signal.SIGKILL)
            killed.set()

    render_distributed(path, model=GRFModel, client=client, group=1, progress=kill_one_worker)
    assert killed.is_set()
    client.wait_for_workers(2, timeout=60)  # the nanny has replaced the dead process
    _assert_complete_and_equal(path, reference)


def test_resume_renders_only_the_missing_chunks(tmp_path, client, reference):
    path = tmp_path / "r.cytosyn"
    local = _create(path)
    local.render_all(chunks=[(0, 0), (0, 1), (1, 3)])  # an earlier run got this far
    rendered = render_distributed(path, model=GRFModel, client=client)  # 2x2-chunk tasks
    assert rendered == 5
    _assert_complete_and_equal(path, reference)


def test_cli_render_joins_an_existing_scheduler(tmp_path, client, reference, capsys):
    from napari_cytosyn.cli import main

    path = tmp_path / "c.cytosyn"
    _create(path)
    model = "py:napari_cytosyn.models.grf:GRFModel"  # imported by each worker itself
    address = client.scheduler.address
    assert main(["render", str(path), "--model", model, "--scheduler", address, "-q"]) == 0
    assert capsys.readouterr().err == ""
    _assert_complete_and_equal(path, reference)
