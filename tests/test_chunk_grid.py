"""The chunk grid: level shapes, chunks under a rectangle, pasting, and the area downsampler."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cytosyn.chunk_grid import (
    build_parent_chunk,
    child_chunks,
    chunk_bounds,
    chunk_range,
    downsample_area,
    downsample_known,
    grid_shape,
    level_shapes,
    pieces,
    thumbnail,
    tiles,
)


def test_level_shapes_round_up_until_one_chunk_holds_the_level():
    assert level_shapes(1000, 601, 256) == [(1000, 601), (500, 301), (250, 151)]
    assert level_shapes(100, 100, 256) == [(100, 100)]
    with pytest.raises(ValueError, match="positive"):
        level_shapes(0, 10, 256)


def test_grid_bounds_and_tiles_agree():
    shape = (700, 530)
    assert grid_shape(shape, 256) == (3, 3)
    assert chunk_bounds(shape, 256, 2, 2) == (512, 700, 512, 530)
    with pytest.raises(IndexError, match="outside the 3 x 3"):
        chunk_bounds(shape, 256, 3, 0)
    bounds = [chunk_bounds(shape, 256, cy, cx) for cy in range(3) for cx in range(3)]
    assert tiles(shape, 256) == bounds
    assert tiles((5, 7), (2, 3))[-1] == (4, 5, 6, 7)


def test_pieces_paste_a_level_back_exactly():
    rng = np.random.default_rng(0)
    level = rng.integers(0, 256, (300, 210, 3), dtype=np.uint8)
    c = 64
    y, x, h, w = 37, 5, 190, 250  # runs past the right edge of the level
    out = np.zeros((h, w, 3), np.uint8)
    seen = []
    for p in pieces(level.shape[:2], c, y, x, h, w):
        y0, y1, x0, x1 = chunk_bounds(level.shape[:2], c, p.cy, p.cx)
        out[p.out] = level[y0:y1, x0:x1][p.chunk]
        seen.append((p.cy, p.cx))
    assert np.array_equal(out[:, : 210 - x], level[y : y + h, x:210])
    assert not out[:, 210 - x :].any()
    assert seen == [(cy, cx) for cy in range(0, 4) for cx in range(0, 4)]


def test_chunk_range_clips_and_widens_by_a_margin():
    shape = (1000, 1000)
    assert chunk_range(shape, 100, 150, 250, 350, 260) == (range(1, 4), range(2, 3))
    assert chunk_range(shape, 100, 150, 250, 350, 260, margin=2) == (range(0, 6), range(0, 5))
    assert chunk_range(shape, 100, 950, 0, 2000, 50) == (range(9, 10), range(0, 1))
    rows, cols = chunk_range(shape, 100, 10, 10, 10, 50)
    assert len(rows) == 0 and len(cols) == 0


def _brute_mean(image: np.ndarray, fy: int, fx: int) -> np.ndarray:
    h, w = image.shape[:2]
    out = np.empty((-(-h // fy), -(-w // fx), *image.shape[2:]), image.dtype)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            block = image[i * fy : (i + 1) * fy, j * fx : (j + 1) * fx].astype(np.int64)
            s, n = block.sum(axis=(0, 1)), block.shape[0] * block.shape[1]
            out[i, j] = (2 * s + n) // (2 * n)  # mean rounded half up
    return out


@pytest.mark.parametrize("factor", [2, 3, (2, 4)])
def test_downsample_area_averages_the_pixels_a_border_block_holds(factor):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (11, 13, 3), dtype=np.uint8)
    fy, fx = (factor, factor) if isinstance(factor, int) else factor
    np.testing.assert_array_equal(downsample_area(image, factor), _brute_mean(image, fy, fx))


def test_downsample_area_rounds_ties_up_and_max_keeps_any_set_pixel():
    assert downsample_area(np.array([[1, 2], [1, 2]], np.uint8))[0, 0] == 2  # 1.5 -> 2
    assert downsample_area(np.array([[0, 1], [1, 2]], np.uint8))[0, 0] == 1  # 1.0
    mask = np.zeros((5, 5), np.uint8)
    mask[4, 4] = 1
    small = downsample_area(mask, 2, "max")
    assert small.shape == (3, 3) and small[2, 2] == 1 and small.sum() == 1
    with pytest.raises(ValueError, match="reduce"):
        downsample_area(mask, 2, "median")
    with pytest.raises(ValueError, match=">= 1"):
        downsample_area(mask, 0)


def test_downsample_known_matches_the_full_rule_where_all_is_known():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (8, 6, 3), dtype=np.uint8)
    known = np.ones((8, 6), bool)
    known[:4, :2] = False  # two blocks entirely unknown
    known[6, 5] = False  # one block partly known
    mean, any_known = downsample_known(image, known)
    full = downsample_area(image)
    assert not any_known[:2, 0].any() and any_known[2:].all()
    np.testing.assert_array_equal(mean[2:, :2], full[2:, :2])
    kept = image[6:8, 4:6][known[6:8, 4:6]].astype(np.int64)
    assert np.array_equal(mean[3, 2], (2 * kept.sum(0) + len(kept)) // (2 * len(kept)))
    assert not mean[:2, 0].any()


@pytest.mark.parametrize("shape", [(64, 48, 3), (33, 17, 3), (1, 1, 3), (9, 12)])
def test_downsample_known_of_uint8_by_2_equals_the_general_rule(shape):
    # uint8 by 2 takes a 16-bit path; the general path (here for uint16) is the reference
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    known = rng.random(shape[:2]) < 0.6
    mean, any_known = downsample_known(image, known)
    ref_mean, ref_any = downsample_known(image.astype(np.uint16), known)
    assert mean.dtype == np.uint8 and mean.shape == ref_mean.shape
    np.testing.assert_array_equal(mean, ref_mean)
    np.testing.assert_array_equal(any_known, ref_any)


def test_parent_chunk_from_children_equals_the_whole_level_downsample():
    rng = np.random.default_rng(3)
    child_level = rng.integers(0, 256, (300, 170, 3), dtype=np.uint8)
    c = 64
    parent_shape = level_shapes(300, 170, c)[1]
    whole = downsample_area(child_level)
    for cy, cx in [(0, 0), (2, 1)]:
        kids = {
            (y, x): child_level[b[0] : b[1], b[2] : b[3]]
            for y, x in child_chunks(child_level.shape[:2], c, cy, cx)
            for b in [chunk_bounds(child_level.shape[:2], c, y, x)]
        }
        y0, y1, x0, x1 = chunk_bounds(parent_shape, c, cy, cx)
        got = build_parent_chunk(kids, parent_shape, c, cy, cx)
        np.testing.assert_array_equal(got, whole[y0:y1, x0:x1])


def test_pieces_of_an_unbounded_plane_reach_negative_chunks():
    got = [(p.cy, p.cx, p.out, p.chunk) for p in pieces(None, 10, -15, 5, 20, 10)]
    assert [(cy, cx) for cy, cx, _, _ in got] == [
        (-2, 0),
        (-2, 1),
        (-1, 0),
        (-1, 1),
        (0, 0),
        (0, 1),
    ]
    assert got[0][2:] == ((slice(0, 5), slice(0, 5)), (slice(5, 10), slice(5, 10)))
    assert got[-1][2:] == ((slice(15, 20), slice(5, 10)), (slice(0, 5), slice(0, 5)))
    assert list(pieces(None, 10, 0, 0, 0, 5)) == []


def test_thumbnail_reads_the_right_level_in_blocks_and_equals_one_whole_downsample():
    rng = np.random.default_rng(3)
    level0 = rng.integers(0, 256, (9001, 301, 3), dtype=np.uint8)
    level1 = downsample_area(level0, 2)
    levels = [level0, level1, downsample_area(level1, 2)]
    reads = []

    def read_region(k, y, x, h, w):
        reads.append((k, h * w))
        return levels[k][y : y + h, x : x + w]

    thumb = thumbnail(read_region, [lv.shape[:2] for lv in levels], max_px=100)
    # level 2 (2251 px) is the coarsest at least 100 px long: reduced by ceil(2251 / 100) = 23
    assert {k for k, _ in reads} == {2} and thumb.shape == (98, 4, 3)
    np.testing.assert_array_equal(thumb, downsample_area(levels[2], 23))
    reads.clear()
    thumb = thumbnail(read_region, [level0.shape[:2]], max_px=50)  # f = 181: 3 row blocks
    assert len(reads) == 3 and max(n for _, n in reads) <= 4096 * 4096
    np.testing.assert_array_equal(thumb, downsample_area(level0, 181))
    with pytest.raises(ValueError, match="max_px"):
        thumbnail(read_region, [level0.shape[:2]], max_px=0)
