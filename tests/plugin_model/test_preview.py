"""Progressive preview: the latent -> RGB map fitted from a model's VAE, and chunk previews at
every level (latent resolution, marked with the checker, dropped when a chunk finishes)."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest
import torch

from napari_cytosyn._napari import _layers
from napari_cytosyn._napari._chunk_cache import ChunkCache, checker
from napari_cytosyn._napari._preview import (
    PREVIEW_MARK,
    ChunkPreviews,
    LatentToRGB,
    fit_latent_rgb,
    latent_rgb_of,
)
from napari_cytosyn.models.grf import _BASE, _MIX, GRFModel
from napari_cytosyn.sampling import SamplerSettings
from napari_cytosyn.sampling.lazy import preview_scope
from napari_cytosyn.slide.synthetic import SyntheticSlide


def test_fitted_map_of_a_linear_autoencoder_is_its_decoder():
    # The GRF model's decoder is linear (a colour matrix after upsampling): the fit from its
    # encoder on the shipped H&E sample must find exactly that matrix.
    grf = GRFModel()
    to_rgb = latent_rgb_of(grf)
    assert latent_rgb_of(grf) is to_rgb  # fitted once per model
    z = torch.randn(4, 6, 5, generator=torch.Generator().manual_seed(0)) * 0.5
    expected = 127.5 * (torch.einsum("rc,chw->hwr", _MIX, z) + _BASE + 1.0)
    np.testing.assert_allclose(to_rgb(z.numpy()), expected.clamp(0, 255).numpy(), atol=0.05)


def test_fit_needs_pixels_it_can_pool_and_rejects_wrong_latents():
    to_rgb = fit_latent_rgb(GRFModel(), [np.full((20, 20, 3), 200, np.uint8)] * 2)
    with pytest.raises(ValueError, match=r"expected latents \(4, h, w\)"):
        to_rgb(np.zeros((3, 2, 2)))
    with pytest.raises(ValueError, match="weight"):
        LatentToRGB(np.zeros((4, 2)))


def _grey_map(value: float) -> LatentToRGB:
    """A map whose RGB is ``value`` times channel 0 (grey), for hand-computed expectations."""
    w = np.zeros((5, 3))
    w[0] = value
    return LatentToRGB(w)


def _unmark(rgb: np.ndarray, known: np.ndarray, y: int, x: int) -> np.ndarray:
    """Channel 0 of preview pixels without the checker mixed in (hand-computed inverse)."""
    mark = checker(y, x, *known.shape)[..., 0].astype(np.float64)
    return (rgb[..., 0].astype(np.float64) - PREVIEW_MARK * mark) / (1 - PREVIEW_MARK)


def test_previews_paint_level0_at_latent_resolution_and_average_coarse_levels():
    shapes = [(1024, 1024), (512, 512), (256, 256), (128, 128), (64, 64)]
    p = ChunkPreviews(shapes, 64, 8, _grey_map(1.0))  # chunk = 8 x 8 latents
    z = np.zeros((1, 4, 8, 12), np.float32)
    z[0, 0] = 100.0
    z[0, 0, :, 5:] = 200.0  # latents x 2-6: 100, x 7-13: 200
    touched = p.paint([(4, 2, 8, 12)], z)  # latents y 4-12, x 2-14: chunks (0..1, 0..1)
    assert touched == {(0, 0), (0, 1), (1, 0), (1, 1)}
    rgb, known = p.read(0, 0, 0)
    expect = np.zeros((64, 64), bool)
    expect[32:, 16:] = True  # latents y 4-8, x 2-8 of chunk (0, 0), 8 x 8 px each
    np.testing.assert_array_equal(known, expect)
    # the checker where no estimate is known, so that a slice copies the picture whole
    np.testing.assert_array_equal(rgb[~known], checker(0, 0, 64, 64)[~known])
    got = _unmark(rgb, known, 0, 0)
    np.testing.assert_allclose(got[32:, 16:56], 100, atol=0.7)
    np.testing.assert_allclose(got[32:, 56:], 200, atol=0.7)
    # Level 2: 2 x 2 px per latent (repeated); rows 8-24, columns 4-28.
    rgb2, known2 = p.read(2, 0, 0)
    expect = np.zeros((64, 64), bool)
    expect[8:24, 4:28] = True
    np.testing.assert_array_equal(known2, expect)
    got2 = _unmark(rgb2, known2, 0, 0)
    np.testing.assert_allclose(got2[8:24, 4:14], 100, atol=0.7)
    np.testing.assert_allclose(got2[8:24, 14:28], 200, atol=0.7)
    # Level 4: 2 x 2 latents per px (averaged); rows 2-6, columns 1-7, column 3 half and half.
    rgb4, known4 = p.read(4, 0, 0)
    expect = np.zeros((64, 64), bool)
    expect[2:6, 1:7] = True
    np.testing.assert_array_equal(known4, expect)
    np.testing.assert_allclose(
        _unmark(rgb4, known4, 0, 0)[2, 1:7], [100, 100, 150, 200, 200, 200], atol=0.7
    )
    p.drop(0, 0)
    assert p.read(0, 0, 0) is None and (0, 0) not in p and len(p) == 3
    assert p.read(4, 0, 0)[1].sum() < known4.sum()  # coarse previews forget it too


def test_finished_chunks_are_not_previewed():
    p = ChunkPreviews([(128, 128), (64, 64)], 64, 8, _grey_map(1.0), finished=lambda y, x: x == 0)
    touched = p.paint([(0, 0, 8, 16)], np.ones((1, 4, 8, 16), np.float32))
    assert touched == {(0, 1)} and p.read(0, 0, 0) is None


def test_a_chunk_that_lands_while_it_is_painted_keeps_no_preview():
    # The renderer's thread paints a preview while the writer finishes the chunk: the writer
    # marks it done, then drops its preview. A drop between paint's check and its insert
    # used to leave a stale preview of a finished chunk (seen under load in
    # tests/_qt/test_lazy_preview.py).
    done: set = set()
    writer: list[threading.Thread] = []

    def finishing(cy: int, cx: int) -> bool:
        if not writer:  # the chunk lands right after paint asked
            done.add((cy, cx))
            writer.append(threading.Thread(target=p.drop, args=(cy, cx)))
            writer[0].start()
            writer[0].join(0.2)  # done at once unless paint holds the previews' lock
            return False
        return (cy, cx) in done

    p = ChunkPreviews([(64, 64)], 64, 8, _grey_map(1.0), finished=finishing)
    p.paint([(0, 0, 8, 8)], np.ones((1, 4, 8, 8), np.float32))
    writer[0].join()
    assert (0, 0) not in p and p.read(0, 0, 0) is None


def test_reads_while_another_thread_paints_see_whole_estimates():
    # The GUI thread builds a coarse preview from the arrays it took under the lock while the
    # renderer's thread paints the next model call; changed in place, a build once mixed the
    # known mask of one moment with the pixels of the next ("the weights and list don't have
    # the same length", in the Qt event loop).
    shapes = [(1024, 1024), (512, 512), (256, 256), (128, 128), (64, 64)]
    p = ChunkPreviews(shapes, 64, 8, _grey_map(1.0))
    rng = np.random.default_rng(0)
    rects = [(int(y), int(x), 3, 3) for y, x in rng.integers(0, 14, (400, 2))]
    stop = threading.Event()
    errors: list[BaseException] = []

    def paint() -> None:
        while not stop.is_set():
            for k, rect in enumerate(rects):
                p.paint([rect], np.full((1, 4, 3, 3), 120.0, np.float32))
                if k % 20 == 0:
                    p.drop(0, 0)  # its estimates start again from nothing known

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # threads interleave often: the race showed within a second
    painter = threading.Thread(target=paint)
    painter.start()
    try:
        end = time.monotonic() + 4.0
        while time.monotonic() < end:
            try:
                got = p.read(4, 0, 0)
            except ValueError as exc:
                errors.append(exc)
                break
            if got is not None:
                rgb, known = got
                assert known.any() and np.isin(rgb[~known], checker(0, 0, 64, 64)).all()
    finally:
        stop.set()
        painter.join()
        sys.setswitchinterval(switch)
    assert not errors, errors[0]


def test_layer_shows_the_preview_until_the_chunk_lands_and_the_store_never_has_it(tmp_path):
    grf = GRFModel()
    slide = SyntheticSlide.create(
        tmp_path / "s.cytosyn", grf, 256, 256, SamplerSettings(steps=4, seed=3), chunk_px=64
    )
    cache = ChunkCache(slide.store)
    cache.previews = ChunkPreviews(slide.level_shapes, 64, 8, latent_rgb_of(grf))
    # Paint the previews of the model calls of chunk (0, 1, 2), without finishing it: the
    # reports of its first model calls only (cancelled after 3).
    calls = []

    def report(model, rects, x0):
        cache.previews.paint(rects, x0)
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # stop mid-chunk, as a cancel would

    with preview_scope(report), pytest.raises(KeyboardInterrupt):
        slide.generate_chunk(0, 1, 2)
    assert not slide.is_done(0, 1, 2)
    shown = _layers.read_finished(slide, 0, 64, 128, 64, 64, cache)
    greys = checker(64, 128, 64, 64)
    assert (shown != greys).any(axis=-1).mean() > 0.5  # the preview, not the bare checker
    early, known = cache.previews.read(0, 1, 2)
    np.testing.assert_array_equal(shown[known], early[known])
    np.testing.assert_array_equal(shown[~known], greys[~known])
    assert not slide.store.is_done(0, 1, 2)  # never stored
    slide.generate_chunk(0, 1, 2)
    cache.landed(0, 1, 2)
    np.testing.assert_array_equal(
        _layers.read_finished(slide, 0, 64, 128, 64, 64, cache), slide.store.read_chunk(0, 1, 2)
    )
    assert (1, 2) not in cache.previews
