"""One fixed intra-op thread count for every network call: pixels independent of the thread and
process layout.

oneDNN splits some reductions (1x1 convolutions) by thread count, so the same network differs in
the last bits between 1 and 2 threads, and after decoding a few pixels differ by 1 (3 of
cytosyn-tiny's 28 decoder convolutions). Every network call therefore runs with
:func:`model_threads` torch threads (``NAPARI_CYTOSYN_MODEL_THREADS``, default 1): a slide
rendered in one process, a viewer or any number of dask workers is bit-identical. Raising it
trades that identity for intra-op parallelism. The count is process-wide, set on the first
network call and left there.

The other cores run independent network calls side by side (:func:`parallel_calls`: the model
batches of a lazy phase, the decoder crops of a chunk), up to :func:`model_workers` at once;
each still runs with :func:`model_threads` threads, so its result does not depend on what runs
beside it.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import suppress
from typing import Any

import torch

#: Environment variable: intra-op torch threads of every network call (default 1).
THREADS_ENV = "NAPARI_CYTOSYN_MODEL_THREADS"
#: Environment variable: network calls run side by side (default: usable cores / model threads).
WORKERS_ENV = "NAPARI_CYTOSYN_MODEL_WORKERS"


def _whole_number(env: str, default: str) -> int:
    value = os.environ.get(env, default).strip()
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{env}={value!r}: give a whole number of threads, at least 1")
    return n


def model_threads() -> int:
    """The intra-op thread count network calls run with (``NAPARI_CYTOSYN_MODEL_THREADS``)."""
    return _whole_number(THREADS_ENV, "1")


def model_workers() -> int:
    """How many independent network calls :func:`parallel_calls` runs at once
    (``NAPARI_CYTOSYN_MODEL_WORKERS``; default: the usable cores over :func:`model_threads`)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return _whole_number(WORKERS_ENV, str(max(1, (cores or 1) // model_threads())))


_POOLS: dict[int, ThreadPoolExecutor] = {}  # one per worker count asked for
_POOL_LOCK = threading.Lock()


def parallel_calls(fn: Callable[[Any], Any], items: Sequence[Any], cpu: bool = True) -> list:
    """``[fn(item) for item in items]``, up to :func:`model_workers` calls at once on the CPU.

    For independent network calls: torch releases the GIL inside its kernels, so with one
    intra-op thread per call two calls keep two cores busy, and every result is bit-identical to
    a serial run. Each call runs without autograd, at the calling thread's CPU priority (a
    viewer's background thread lowers its own so that the GUI thread gets the CPU first; the
    pool's threads, made by whichever thread asked first, follow it). Waits for every call; the
    first exception raised (e.g. ``Cancelled``) is re-raised. ``cpu=False`` (a GPU model) runs
    them in turn.
    """
    workers = model_workers() if cpu else 1
    if min(workers, len(items)) < 2 or threading.current_thread().name.startswith("cytosyn-model"):
        return [fn(item) for item in items]

    nice = _niceness()

    def call(item: Any) -> Any:
        if nice is not None and _niceness() != nice:
            with suppress(OSError):  # raising it back needs a privilege: then it runs lower
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        with torch.no_grad():
            return fn(item)

    with _POOL_LOCK:
        pool = _POOLS.get(workers)
        if pool is None:
            pool = _POOLS[workers] = ThreadPoolExecutor(workers, f"cytosyn-model{workers}")
    futures = [pool.submit(call, item) for item in items]
    try:
        wait(futures)
    except BaseException:  # e.g. KeyboardInterrupt: the calls not started yet are dropped
        for f in futures:
            f.cancel()
        raise
    return [f.result() for f in futures]


def _niceness() -> int | None:
    """The calling thread's nice value (Linux, where it is per thread), else ``None``."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    except OSError:
        return None


def pin_threads() -> None:
    """Set torch's intra-op thread count to :func:`model_threads` (before a network call)."""
    n = model_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
