"""The render-ahead policy: which level-0 chunks of a synthetic slide to render next, and which
to compute together.

``SyntheticSlide.render_all`` (row-major), the :class:`~.viewport.ViewportRenderer` (nearest
the view's centre first, then a margin) and ``distributed.render_distributed`` (blocks as dask
tasks) differ only in their order; all hand the chunks they are about to render to
``SyntheticSlide.prepare_chunks`` together, because neighbouring chunks share windows and a
batch of chunks fills the model's batches. Pixels never depend on the order or the batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

K = TypeVar("K")
Chunk = tuple[int, int]

#: Chunks ``render_all`` prepares together (and how many after them fill padded slots).
BATCH_CHUNKS = 4
#: Chunks the viewport renderer prepares together after the first chunk of a view.
VIEW_BATCH_CHUNKS = 8


def nearest_first(chunks: Iterable[Chunk], centre: tuple[float, float]) -> list[Chunk]:
    """``(cy, cx)`` chunks ordered by the distance of their centres from ``centre`` (in chunks,
    ``(y, x)``); ties keep their given order."""
    return sorted(
        chunks, key=lambda k: (k[0] + 0.5 - centre[0]) ** 2 + (k[1] + 0.5 - centre[1]) ** 2
    )


def split_ahead(
    key: K,
    same: Sequence[K],
    others: Sequence[K] = (),
    size: int = BATCH_CHUNKS,
    alone: bool = False,
) -> tuple[list[K], list[K]]:
    """``(ahead, upcoming)``: ``key`` and the next ``size - 1`` of ``same`` (the chunks planned
    after it that may share its batch; ``key`` alone with ``alone``, so a view's first chunk
    shows soonest), and the next ``size`` planned chunks (``same``, then ``others``: planned
    chunks that may not share it), whose work may fill the batch's padded slots."""
    if size < 1:
        raise ValueError(f"a render-ahead batch holds at least one chunk, got {size}")
    n = 1 if alone else size
    ahead = [key, *same[: n - 1]]
    upcoming = [*same[n - 1 :], *others][:size]
    return ahead, upcoming


def stream_ahead(
    source: Iterable[K], size: int = BATCH_CHUNKS
) -> Iterator[tuple[K, list[K], list[K]]]:
    """Walk ``source`` (any iterable, read ``2 * size`` items ahead), yielding for each chunk
    ``(chunk, ahead, upcoming)``: ``ahead`` and ``upcoming`` as :func:`split_ahead` gives them
    at the first chunk of each batch of ``size``, empty for the rest of the batch."""
    it = iter(source)
    buffer = _take(it, 2 * size)
    while buffer:
        key, rest = buffer[0], buffer[1:]
        ahead, upcoming = split_ahead(key, rest, size=size)
        for i, chunk in enumerate(ahead):
            yield chunk, (ahead if i == 0 else []), (upcoming if i == 0 else [])
        buffer = buffer[len(ahead) :] + _take(it, len(ahead))


def blocks(chunks: Iterable[Chunk], group: int) -> list[list[Chunk]]:
    """Chunks grouped into ``group x group`` blocks of the grid (row-major), one distributed
    task each: the windows neighbouring chunks share are computed once, by one worker."""
    if group < 1:
        raise ValueError(f"a block holds at least one chunk per side, got {group}")
    out: dict[Chunk, list[Chunk]] = {}
    for cy, cx in sorted(chunks):
        out.setdefault((cy // group, cx // group), []).append((cy, cx))
    return list(out.values())


def _take(source: Iterator[K], n: int) -> list[K]:
    out: list[K] = []
    for item in source:
        out.append(item)
        if len(out) == n:
            break
    return out
