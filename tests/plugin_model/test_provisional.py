"""Zoomed-out synthetic slides: provisional coarse chunks built from whatever finer chunks are
finished equal the finished chunks bit for bit where known, are never stored, and the rest
reads as the grey "not generated yet" checker."""

from __future__ import annotations

import numpy as np

from napari_cytosyn._napari import _layers
from napari_cytosyn._napari._chunk_cache import ChunkCache
from napari_cytosyn.chunk_grid import downsample_area
from napari_cytosyn.models.grf import GRFModel
from napari_cytosyn.sampling import SamplerSettings
from napari_cytosyn.slide.synthetic import SyntheticSlide

C = 64


def _slide(tmp_path, size=512):
    return SyntheticSlide.create(
        tmp_path / "s.cytosyn",
        GRFModel(boundary="periodic"),
        size,
        size,
        SamplerSettings(steps=2, seed=3),
        chunk_px=C,
    )


def test_provisional_chunk_equals_the_finished_one_where_known(tmp_path):
    slide = _slide(tmp_path)
    top = slide.store.n_levels - 1
    assert top == 3  # 512 -> 256 -> 128 -> 64
    slide.generate_chunk(0, 0, 0)
    slide.generate_chunk(0, 1, 1)
    cache = ChunkCache(slide.store)
    rgb, known = cache.provisional(top, 0, 0)
    assert not slide.is_done(top, 0, 0)  # nothing was written to the store
    # Known: the 8x8 px of the top level over level-0 chunks (0, 0) and (1, 1).
    expected_known = np.zeros((C, C), bool)
    expected_known[0:8, 0:8] = expected_known[8:16, 8:16] = True
    np.testing.assert_array_equal(known, expected_known)
    slide.render_all()  # now the real top chunk exists
    final = slide.store.read_chunk(top, 0, 0)
    np.testing.assert_array_equal(rgb[known], final[known])


def test_landing_chunks_refresh_provisional_ancestors(tmp_path):
    slide = _slide(tmp_path)
    cache = ChunkCache(slide.store)
    assert cache.provisional(2, 0, 0) is None  # nothing finished under it
    slide.generate_chunk(0, 2, 3)
    cache.landed(0, 2, 3, rebuild_levels=2)
    _rgb, known = cache.provisional(2, 0, 0)
    assert known.sum() == (C // 4) ** 2


def test_layer_shows_provisional_pixels_and_checker_elsewhere(tmp_path):
    slide = _slide(tmp_path)
    slide.generate_chunk(0, 0, 0)
    top = _layers.synthetic_levels(slide)[-1]
    view = np.asarray(top[:, :])
    assert view.shape == (64, 64, 3)
    finished = slide.read_region(0, 0, 0, C, C, generate=False)
    expected = downsample_area(downsample_area(downsample_area(finished)))  # the pyramid's rule
    np.testing.assert_array_equal(view[:8, :8], expected)
    np.testing.assert_array_equal(view[8:, 8:], _layers.checker(8, 8, 56, 56))
    assert not (view == 255).all(axis=-1).any()  # never white: white is glass


def test_planned_tissue_layout_shows_before_generation(tmp_path):
    tissue = np.zeros((8, 8), bool)
    tissue[2:6, 2:6] = True  # tissue in the middle of a 512 px slide: px 128-383
    slide = SyntheticSlide.create(
        tmp_path / "t.cytosyn",
        GRFModel(boundary="periodic"),
        512,
        512,
        SamplerSettings(steps=2, seed=3),
        tissue_mask=tissue,
        chunk_px=C,
    )
    level2 = np.asarray(_layers.synthetic_levels(slide)[2][:, :])  # 128 x 128, nothing generated
    glass = (level2 == 255).all(axis=-1)
    assert glass[:32].all() and glass[:, 96:].all()  # outside the planned tissue: white glass
    np.testing.assert_array_equal(level2[32:96, 32:96], _layers.checker(32, 32, 64, 64))
