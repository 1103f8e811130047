"""Render synthetic slides on dask.distributed: chunks are tasks, workers write to the store.

No scheduler of our own: a level-0 chunk of a synthetic slide
(:class:`~napari_cytosyn.slide.synthetic.SyntheticSlide`), or a small block of neighbouring
chunks, is one ``client.submit`` task. Each worker process keeps one opened slide and one loaded
model per (store, model) in a module-level cache, so the model is loaded once per process, not
once per task. A task renders its chunks with the store's own ``generate_chunk``: pixels are
written atomically, then marked in the completion map (under a file lock shared by all
processes).

Why this survives failures:

- a task that raises is retried (``retries``); a worker process that dies is replaced by its
  nanny and the scheduler reruns the tasks it held (``distributed.scheduler.allowed-failures``);
  a chunk half-written by a killed worker was never marked, so it is computed again;
- chunks are deterministic functions of (seed, settings, position), so a chunk computed twice is
  the same bytes, whichever worker computed it;
- an interrupted run leaves the completion map behind: the next run submits only the chunks that
  are still missing (resume).

Coarser pyramid levels are built from their children at the end, in the client process (they
are cheap: 2x2 area means), because a worker only sees its own marks until it rereads the map.
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
    """Task body: make the level-0 ``chunks`` ``[(cy, cx), ...]`` of ``store`` finished here.

    Returns how many of them this task rendered (chunks finished meanwhile by another run or a
    retried task are skipped).
    """
    slide = _worker_slide(store, model, device, torch_threads)
    slide.store.completion(0).refresh()
    # The phase states under all of the task's chunks in one batched pass (full model batches;
    # one chunk at a time pads every batch). Finished chunks are skipped there.
    slide.prepare_chunks(chunks)
    made = 0
    for cy, cx in chunks:
        written = slide.generate_chunk(0, cy, cx)
        made += any(level == 0 for level, _, _ in written)
    return made


def make_client(workers: int | None = None, scheduler: str | None = None, **cluster_kwargs: Any):
    """A dask ``Client``: joined to ``scheduler`` (an address), or on a new ``LocalCluster``.

    The local cluster has ``workers`` single-threaded worker *processes* (a model per process;
    torch uses its own threads). Close the client (and its cluster) when done.
    """
    from distributed import Client, LocalCluster

    if scheduler:
        return Client(scheduler)
    n = int(workers or 1)
    if n < 1:
        raise ValueError(f"--workers must be >= 1, got {n}")
    options = {
        "n_workers": n,
        "threads_per_worker": 1,
        "processes": True,
        "dashboard_address": None,
        "memory_limit": 0,
        **cluster_kwargs,
    }
    cluster = LocalCluster(**options)
    client = Client(cluster)
    client._cytosyn_owns_cluster = True  # closed with the client by close_client
    return client


def close_client(client: Any) -> None:
    """Close a client from :func:`make_client` (and the local cluster it started)."""
    cluster = client.cluster if getattr(client, "_cytosyn_owns_cluster", False) else None
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
    """Render the missing level-0 chunks of a synthetic-slide store on a dask cluster.

    Parameters
    ----------
    store: path of a store made by ``SyntheticSlide.create`` (a shared filesystem path when the
        cluster spans machines).
    model: registry name for ``load_model`` in each worker, a picklable zero-argument factory
        returning the model (e.g. a class), or ``None`` for the model named in the store.
    client: an existing ``distributed.Client``; else one is made from ``workers`` (a new
        ``LocalCluster`` of that many processes) or ``scheduler`` (an address) and closed after.
    retries: extra attempts for a task that raised.
    torch_threads: ``torch.set_num_threads`` in each worker (1 keeps processes from fighting
        over cores); network calls run with ``NAPARI_CYTOSYN_MODEL_THREADS`` threads whatever
        this is (:mod:`napari_cytosyn.sampling.threads`), so pixels never depend on it.
    chunks: ``(cy, cx)`` level-0 chunks to render (default: all missing ones).
    group: a task renders a ``group x group`` block of neighbouring chunks (1 = one chunk per
        task); see :func:`napari_cytosyn.slide.render_ahead.blocks`.
    progress: ``progress(done, total)`` in chunks after each task; ``cancel.is_set()`` stops
        submitting and cancels pending tasks (raising ``Cancelled``); finished chunks stay finished.

    Returns the number of level-0 chunks rendered by this call. Coarser levels are completed at
    the end (``SyntheticSlide.finish_pyramid``).
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
