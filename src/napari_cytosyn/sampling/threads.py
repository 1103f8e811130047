"""One fixed intra-op thread count for every network call: pixels independent of the machine's
thread and process layout.

oneDNN's 1x1 convolutions (and other reductions) split their sums differently with the number
of threads, so the same network on the same input differs in the last bits between 1 and 2
torch threads; after the decoder and quantisation that is a few pixel values off by 1 (measured
with cytosyn-tiny: 3 of its 28 decoder convolutions differ). Every network call of the sampler
(denoiser, decoder, encoder) therefore runs with exactly :func:`model_threads` torch threads,
``1`` unless the environment variable ``NAPARI_CYTOSYN_MODEL_THREADS`` says otherwise: a slide
rendered in one process, in a viewer, or on any number of dask workers is bit-identical, whatever
``torch.set_num_threads`` the caller chose. Raising it trades that identity (pixels are then
identical only among runs with the same value) for intra-op parallelism; processes (dask
workers) are the way to use more cores without losing it.

torch's thread count is process-wide: it is set on the first network call and left there (a
call in another thread never runs with a count changed under it).
"""

from __future__ import annotations

import os

import torch

#: Environment variable: intra-op torch threads of every network call (default 1).
THREADS_ENV = "NAPARI_CYTOSYN_MODEL_THREADS"


def model_threads() -> int:
    """The intra-op thread count network calls run with (``NAPARI_CYTOSYN_MODEL_THREADS``)."""
    value = os.environ.get(THREADS_ENV, "1").strip()
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{THREADS_ENV}={value!r}: give a whole number of threads, at least 1")
    return n


def pin_threads() -> None:
    """Set torch's intra-op thread count to :func:`model_threads` (before a network call)."""
    n = model_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
