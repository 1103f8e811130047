"""The render-ahead policy of render_all, the viewport renderer and the distributed renderer."""

from __future__ import annotations

import pytest

from napari_cytosyn.slide.render_ahead import blocks, nearest_first, split_ahead, stream_ahead


def test_nearest_first_orders_by_distance_from_the_centre_ties_in_given_order():
    chunks = [(0, 0), (2, 2), (1, 1), (1, 2), (2, 1)]
    assert nearest_first(chunks, (1.5, 1.5)) == [(1, 1), (1, 2), (2, 1), (0, 0), (2, 2)]


def test_split_ahead_takes_a_batch_of_the_same_kind_then_fills_with_the_rest():
    ahead, upcoming = split_ahead("k", ["a", "b", "c", "d"], ["x", "y"], size=3)
    assert ahead == ["k", "a", "b"] and upcoming == ["c", "d", "x"]
    ahead, upcoming = split_ahead("k", ["a", "b"], ["x"], size=3, alone=True)
    assert ahead == ["k"] and upcoming == ["a", "b", "x"]
    with pytest.raises(ValueError, match="at least one chunk"):
        split_ahead("k", [], size=0)


def test_stream_ahead_prepares_each_batch_once_with_the_next_batch_as_upcoming():
    got = list(stream_ahead(iter(range(10)), size=4))
    assert [c for c, _, _ in got] == list(range(10))
    prepared = [(c, a, u) for c, a, u in got if a]
    assert prepared == [
        (0, [0, 1, 2, 3], [4, 5, 6, 7]),
        (4, [4, 5, 6, 7], [8, 9]),
        (8, [8, 9], []),
    ]


def test_stream_ahead_reads_the_source_only_two_batches_ahead():
    pulled = []

    def source():
        for i in range(100):
            pulled.append(i)
            yield i

    walk = stream_ahead(source(), size=4)
    next(walk)
    assert pulled == list(range(8))


def test_blocks_group_neighbouring_chunks_row_major():
    chunks = [(3, 0), (0, 1), (0, 0), (1, 1), (2, 3)]
    assert blocks(chunks, 2) == [[(0, 0), (0, 1), (1, 1)], [(2, 3)], [(3, 0)]]
    assert blocks(chunks, 1) == [[c] for c in sorted(chunks)]
    with pytest.raises(ValueError, match="at least one chunk"):
        blocks(chunks, 0)
