"""Render synthetic slides on dask.distributed: blocks of neighbouring level-0 chunks are
tasks, workers write to the store.

Each worker process caches one opened slide and one loaded model per (store, model). A task
renders with the slide's own ``generate_chunk`` (written atomically, then marked under the
store's file lock). Failures: a task that raises is retried; a dead worker's tasks are rerun
by the scheduler; a chunk half-written by a killed worker was never marked, so it is computed
again, and chunks are deterministic, so a chunk computed twice is the same bytes; a rerun
submits only the missing chunks. Coarse levels are built at the end in the client (cheap 2x2
means; a worker sees only its own marks until it rereads the map).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import threading
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ModelSource = str | Callable[[], Any] | None
ProgressFn = Callable[[int, int], None]

_CACHE_LOCK = threading.Lock()
_WORKER_MODELS: dict[str, Any] = {}
_WORKER_SLIDES: dict[tuple[str, str], Any] = {}


def model_key(model: ModelSource, device: str = "auto") -> str:
    """Cache key of a model source: the registry name, or a digest of the pickled factory."""
    if model is None or isinstance(model, str):
        return f"name:{model}:{device}"
    return "factory:" + hashlib.sha256(pickle.dumps(model)).hexdigest()[:16]


def _load(model: ModelSource, device: str, store: str) -> Any:
    if callable(model):
        return model()
    from napari_cytosyn.models import load_model

    if model is None:
        from napari_cytosyn.slide.store import read_store_attrs

        model = read_store_attrs(store)["recipe"]["model"]["name"]
    return load_model(model, device=device)


def worker_model(model: ModelSource, device: str = "auto", store: str = "") -> Any:
    """The model for this process, loaded on first use and cached (one load per worker)."""
    key = model_key(model, device)
    with _CACHE_LOCK:
        if key not in _WORKER_MODELS:
            _WORKER_MODELS[key] = _load(model, device, store)
        return _WORKER_MODELS[key]


def _worker_slide(store: str, model: ModelSource, device: str, torch_threads: int | None) -> Any:
    key = (store, model_key(model, device))
    with _CACHE_LOCK:
        slide = _WORKER_SLIDES.get(key)
    if slide is not None:
        return slide
    # a worker process is one of N on N cores: its network calls run one at a time (the
    # default would run cores / model threads side by side in each process: N^2 on N cores)
    from napari_cytosyn.sampling.threads import WORKERS_ENV

    os.environ.setdefault(WORKERS_ENV, "1")
    if torch_threads:
        import torch

        torch.set_num_threads(torch_threads)
    from napari_cytosyn.slide.synthetic import SyntheticSlide

    loaded = worker_model(model, device, store)
    slide = SyntheticSlide.open(store, model=loaded)
    with _CACHE_LOCK:
        return _WORKER_SLIDES.setdefault(key, slide)


def render_chunks_task(
    store: str,
    chunks: Sequence[tuple[int, int]],
    model: ModelSource = None,
    device: str = "auto",
    torch_threads: int | None = 1,
) -> int:
    """Task body: finish the level-0 ``chunks`` ``[(cy, cx), ...]`` of ``store``; returns how
    many this task rendered (chunks finished meanwhile are skipped)."""
    slide = _worker_slide(store, model, device, torch_threads)
    slide.store.completion(0).refresh()
    slide.prepare_chunks(chunks)  # their phase states in one batched pass
    made = 0
    for cy, cx in chunks:
        written = slide.generate_chunk(0, cy, cx)
        made += any(level == 0 for level, _, _ in written)
    return made


def make_client(workers: int | None = None, scheduler: str | None = None):
    """A dask ``Client`` of ``scheduler`` (an address), or of a new ``LocalCluster`` of
    ``workers`` single-threaded processes (a model each); close it with :func:`close_client`."""
    from distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler)
    n = int(workers or 1)
    if n < 1:
        raise ValueError(f"--workers must be >= 1, got {n}")
    return Client(
        LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                     memory_limit=0)
    )  # fmt: skip


def close_client(client: Any) -> None:
    """Close a client and the local cluster it was made on, if any (:func:`make_client`)."""
    cluster = client.cluster  # None for a client of a scheduler address
    client.close()
    if cluster is not None:
        cluster.close()


def render_distributed(
    store: str | os.PathLike,
    *,
    model: ModelSource = None,
    device: str = "auto",
    client: Any = None,
    workers: int | None = None,
    scheduler: str | None = None,
    retries: int = 2,
    torch_threads: int | None = 1,
    chunks: Sequence[tuple[int, int]] | None = None,
    group: int = 2,
    progress: ProgressFn | None = None,
    cancel: Any = None,
) -> int:
    """Render the missing level-0 chunks of a synthetic-slide store on a dask cluster, then
    build the coarse levels; returns the number of level-0 chunks rendered.

    Parameters
    ----------
    store: a ``SyntheticSlide`` store (on a shared file system when the cluster spans machines).
    model: a registry name, a picklable zero-argument factory, or ``None`` (the store's model).
    client: a ``distributed.Client``; else one is made from ``workers`` (a ``LocalCluster``)
        or ``scheduler`` (an address), and closed after.
    retries: extra attempts for a task that raised.
    torch_threads: ``torch.set_num_threads`` in each worker; pixels never depend on it (network
        calls use ``NAPARI_CYTOSYN_MODEL_THREADS``, :mod:`napari_cytosyn.sampling.threads`).
        A worker runs its network calls one at a time unless its environment sets
        ``NAPARI_CYTOSYN_MODEL_WORKERS``.
    chunks: ``(cy, cx)`` level-0 chunks to render (default: all missing ones).
    group: a task renders a ``group x group`` block of chunks (``render_ahead.blocks``).
    progress: ``progress(done, total)`` in chunks; ``cancel.is_set()`` cancels pending tasks
        (``Cancelled``); finished chunks stay finished.
    """
    from distributed import as_completed

    from napari_cytosyn.sampling import Cancelled
    from napari_cytosyn.slide.render_ahead import blocks
    from napari_cytosyn.slide.synthetic import SyntheticSlide

    store = str(Path(store).resolve())
    slide = SyntheticSlide.open(store, mode="r+")
    todo = list(chunks) if chunks is not None else slide.missing_chunks(0)
    own = client is None
    if own:
        client = make_client(workers, scheduler)
    rendered = 0
    try:
        if todo:
            run = uuid.uuid4().hex[:8]
            batches = blocks(todo, max(1, int(group)))
            futures = {
                client.submit(
                    render_chunks_task,
                    store,
                    block,
                    model,
                    device,
                    torch_threads,
                    key=f"cytosyn-chunks-{run}-{block[0][0]}-{block[0][1]}",
                    retries=retries,
                    pure=False,
                ): len(block)
                for block in batches
            }
            done = 0
            try:
                for fut in as_completed(list(futures)):
                    if cancel is not None and cancel.is_set():
                        raise Cancelled(f"rendering cancelled after {done} of {len(todo)} chunks")
                    rendered += fut.result()
                    done += futures[fut]
                    if progress is not None:
                        progress(done, len(todo))
            except BaseException:
                client.cancel(list(futures))
                raise
        slide.finish_pyramid()
    finally:
        if own:
            close_client(client)
    return rendered
