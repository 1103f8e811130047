"""Reference conditioning: the condition field, and the per-window condition in every mode."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cytosyn.models.grf import ConditionalGRFModel, GRFModel
from napari_cytosyn.sampling import InpaintConfig, LazySpec, MemoryPhaseCache, SamplerSettings
from napari_cytosyn.sampling.conditioning import (
    ConditionField,
    LatticeCondition,
    embed_crops,
    is_conditional,
    require_conditional,
    surround_field,
)
from napari_cytosyn.sampling.inpainting import inpaint
from napari_cytosyn.sampling.lazy import LazyPlan, render_chunk
from napari_cytosyn.sampling.region import generate_region
from napari_cytosyn.sampling.tiling import fused_denoiser


def _position_field(ny: int, nx: int, cell: float, origin=(0.0, 0.0)) -> ConditionField:
    """A field whose embedding at cell (i, j) is its centre (y, x): bilinear gives positions."""
    iy, ix = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
    emb = np.stack([origin[0] + iy * cell, origin[1] + ix * cell], axis=-1)
    return ConditionField(emb.astype(np.float32), np.ones((ny, nx), bool), cell, origin)


def _colour(model, rgb: tuple[int, int, int]) -> torch.Tensor:
    """The conditional GRF's embedding of a flat colour patch ``(C,)``."""
    patch = np.zeros((32, 32, 3), np.uint8) + np.array(rgb, np.uint8)
    return torch.from_numpy(embed_crops(model, [patch])[0])


def test_field_is_bilinear_between_cell_centres_and_clamped_outside():
    field = _position_field(4, 5, 16.0, origin=(8.0, 8.0))
    ys = np.array([8.0, 20.0, 33.5, 56.0, 0.0, 100.0])
    xs = np.array([8.0, 30.0, 41.25, 72.0, -5.0, 200.0])
    got = field.at(ys, xs)
    np.testing.assert_allclose(got[:4, 0], ys[:4], atol=1e-4)
    np.testing.assert_allclose(got[:4, 1], xs[:4], atol=1e-4)
    # beyond the outermost centres the edge value holds
    np.testing.assert_allclose(got[4], [8.0, 8.0], atol=1e-5)
    np.testing.assert_allclose(got[5], [56.0, 72.0], atol=1e-5)


def test_cells_without_tissue_are_ignored_and_filled_from_their_neighbours():
    emb = np.array([[[1.0], [50.0], [3.0]]], np.float32)
    valid = np.array([[True, False, True]])
    field = ConditionField(emb, valid, 10.0)
    # the invalid cell's own value never shows: at its centre the two valid cells, equally far
    assert field.at(0.0, 10.0)[0] == pytest.approx(2.0)
    assert field.at(0.0, 0.0)[0] == pytest.approx(1.0)
    assert field.at(0.0, 20.0)[0] == pytest.approx(3.0)
    # continuous: a quarter of the way from the left cell, mostly the left one
    left = field.at(0.0, 2.5)[0]
    assert 1.0 < left < 2.0
    # the nearest tissue cell is far (beyond the local radius): it is found all the same
    far = np.zeros((1, 20, 1), np.float32)
    far[0, 19, 0] = 7.0
    lone = np.zeros((1, 20), bool)
    lone[0, 19] = True
    assert ConditionField(far, lone, 10.0).at(0.0, 0.0)[0] == pytest.approx(7.0)
    with pytest.raises(ValueError, match="no reference cell holds enough tissue"):
        ConditionField(emb, np.zeros((1, 3), bool), 10.0)


def test_a_window_on_a_lattice_node_gets_that_lattice_s_cell_and_others_the_nearest_lattice():
    # two lattices of window centres (8 px latents): period 48 from 24 px, period 64 from 0 px;
    # each cell's embedding is (lattice, y, x) so the test reads which cell a window got
    def lattice(k, period, origin, n):
        iy, ix = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
        emb = np.stack([np.full(iy.shape, k), origin + iy * period, origin + ix * period], -1)
        return ConditionField(emb.astype(np.float32), np.ones((n, n), bool), period, (origin,) * 2)

    cond = LatticeCondition((lattice(0, 48.0, 24.0, 5), lattice(1, 64.0, 0.0, 4)), 8)
    rects = [
        (1, 1, 4, 4),  # centre 24 px: node (0, 0) of lattice 0
        (-2, 6, 4, 4),  # centre (0, 64): node (0, 1) of lattice 1 (not on lattice 0 in x)
        (6, 6, 4, 4),  # centre 64: node (1, 1) of lattice 1
        (36, -10, 4, 4),  # beyond both grids: clamped onto an edge node of each, the first wins
        (2, 2, 4, 4),  # centre 32 px: on neither, lattice 0 is nearer (1/6 vs 1/2 spacing)
    ]
    got = cond.for_windows(rects).numpy()
    np.testing.assert_array_equal(got[0], [0, 24, 24])
    np.testing.assert_array_equal(got[1], [1, 0, 64])
    np.testing.assert_array_equal(got[2], [1, 64, 64])
    np.testing.assert_array_equal(got[3], [0, 216, 24])
    np.testing.assert_allclose(got[4], [0, 32, 32], atol=1e-5)  # bilinear on lattice 0
    assert cond.fingerprint().endswith("-f8") and cond.fingerprint().count("-") == 2


def test_fused_denoiser_passes_each_window_the_field_at_its_centre():
    f, window, stride = 8, 6, 4
    field = _position_field(20, 20, 8.0)
    seen: list[tuple[float, float, np.ndarray]] = []

    wc = field.window_cond(f)

    def base(x: torch.Tensor, t: float, rects) -> torch.Tensor:
        for win, c in zip(x, wc.for_windows(rects), strict=True):
            # channels 0/1 of the canvas hold the absolute latent row/column of each latent
            seen.append((float(win[0, 0, 0]), float(win[1, 0, 0]), c.numpy()))
        return x

    origin = (3, 5)
    h, w = 14, 17
    yy, xx = torch.meshgrid(
        torch.arange(h, dtype=torch.float32) + origin[0],
        torch.arange(w, dtype=torch.float32) + origin[1],
        indexing="ij",
    )
    canvas = torch.stack([yy, xx, yy * 0, xx * 0])[None]
    base.per_window = True
    fused = fused_denoiser(base, origin, window, stride, batch_size=3)
    fused(canvas, 0.5)
    assert len(seen) >= 9
    for y0, x0, c in seen:
        np.testing.assert_allclose(c, [(y0 + window / 2) * f, (x0 + window / 2) * f], atol=1e-3)


def test_region_mode_follows_the_reference_and_is_deterministic():
    model = ConditionalGRFModel()
    st = SamplerSettings(steps=6, seed=3)
    pink, purple = _colour(model, (230, 150, 190)), _colour(model, (120, 60, 160))
    a = generate_region(model, st, 0, 0, 96, 96, cond=ConditionField.constant(pink).window_cond(8))
    a2 = generate_region(model, st, 0, 0, 96, 96, cond=ConditionField.constant(pink).window_cond(8))
    b = generate_region(
        model, st, 0, 0, 96, 96, cond=ConditionField.constant(purple).window_cond(8)
    )
    np.testing.assert_array_equal(a, a2)
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 20
    # the generated tissue has the reference's mean colour (up to the decoder's null direction)
    assert a.reshape(-1, 3).mean(0)[1] > b.reshape(-1, 3).mean(0)[1] + 40


def test_lazy_windows_get_the_condition_of_their_location():
    model = ConditionalGRFModel()
    spec = LazySpec(settings=SamplerSettings(steps=6, seed=5), chunk_px=64, batch=4)
    pink, purple = _colour(model, (230, 150, 190)), _colour(model, (120, 60, 160))
    # left half pink, right half purple: 8 x 16 cells of 64 px
    emb = np.where(np.arange(16)[None, :, None] < 8, pink.numpy(), purple.numpy())
    emb = np.broadcast_to(emb, (8, 16, 4)).astype(np.float32)
    field = ConditionField(emb, np.ones((8, 16), bool), 64.0, (32.0, 32.0))
    calls: list[tuple[list, torch.Tensor]] = []

    class Recording:
        def for_windows(self, rects):
            c = field.window_cond(8).for_windows(rects)
            calls.append((list(rects), c))
            return c

    plan = LazyPlan(model, spec, MemoryPhaseCache(), cond=Recording())
    plan.final_latents(16, 16, 8, 8)
    assert calls
    for rects, c in calls:
        assert len(rects) == len(c)
        for (y, x, h, w), row in zip(rects, c, strict=True):
            assert h == w == plan.window
            np.testing.assert_array_equal(row.numpy(), field.at((y + h / 2) * 8, (x + w / 2) * 8))
    # a chunk deep in the pink half equals the same chunk under a pink reference everywhere
    local = render_chunk(model, spec, 2, 1, MemoryPhaseCache(), cond=field.window_cond(8))
    flat = ConditionField.constant(pink).window_cond(8)
    everywhere = render_chunk(model, spec, 2, 1, MemoryPhaseCache(), cond=flat)
    np.testing.assert_array_equal(local, everywhere)
    far = render_chunk(model, spec, 2, 14, MemoryPhaseCache(), cond=field.window_cond(8))
    assert far.reshape(-1, 3).mean(0)[1] < local.reshape(-1, 3).mean(0)[1] - 40


def test_lazy_chunks_with_a_field_are_identical_in_any_order():
    model = ConditionalGRFModel()
    spec = LazySpec(settings=SamplerSettings(steps=6, seed=9), chunk_px=64)
    field = _position_field(6, 6, 40.0)
    scaled = ConditionField(field.embeddings[..., :1].repeat(4, -1) / 400.0, field.valid, 40.0)
    wc = scaled.window_cond(8)
    cache = MemoryPhaseCache()
    order1 = {k: render_chunk(model, spec, *k, cache, cond=wc) for k in [(0, 0), (1, 2)]}
    cache2 = MemoryPhaseCache()
    order2 = {k: render_chunk(model, spec, *k, cache2, cond=wc) for k in [(1, 2), (0, 0)]}
    for k in order1:
        np.testing.assert_array_equal(order1[k], order2[k])
    plain = render_chunk(model, spec, 1, 2, MemoryPhaseCache())
    assert not np.array_equal(plain, order1[(1, 2)])


def _two_tissue_image(h: int = 160, w: int = 256) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    img[:, : w // 2] = (230, 150, 190)
    img[:, w // 2 :] = (120, 60, 160)
    return img


def test_inpainting_depends_on_the_reference_and_keeps_the_outside():
    model = ConditionalGRFModel(tile_px=64)
    st = SamplerSettings(steps=6, seed=1, inpaint=InpaintConfig(release_band_latent=1))
    img = _two_tissue_image()
    mask = np.zeros(img.shape[:2], bool)
    mask[48:112, 96:160] = True
    pink = ConditionField.constant(_colour(model, (230, 150, 190))).window_cond(8)
    purple = ConditionField.constant(_colour(model, (120, 60, 160))).window_cond(8)
    a = inpaint(model, img, mask, st, cond=pink)
    a2 = inpaint(model, img, mask, st, cond=pink)
    b = inpaint(model, img, mask, st, cond=purple)
    np.testing.assert_array_equal(a, a2)
    np.testing.assert_array_equal(a[~mask], img[~mask])
    np.testing.assert_array_equal(b[~mask], img[~mask])
    assert np.abs(a[mask].astype(int) - b[mask].astype(int)).mean() > 10


def test_surround_field_embeds_real_tissue_around_the_mask_only():
    model = ConditionalGRFModel(tile_px=32)
    img = _two_tissue_image()
    mask = np.zeros(img.shape[:2], bool)
    mask[48:112, 64:192] = True  # across both tissues
    tissue = np.ones_like(mask)
    field = surround_field(model, img, mask, tissue, ring_px=48)
    assert not field.valid.all()
    pink, purple = _colour(model, (230, 150, 190)), _colour(model, (120, 60, 160))
    # inside the mask, the left part is conditioned on the pink side, the right on purple
    left, right = field.at(80.0, 80.0), field.at(80.0, 176.0)
    assert np.abs(left - pink.numpy()).sum() < np.abs(left - purple.numpy()).sum()
    assert np.abs(right - purple.numpy()).sum() < np.abs(right - pink.numpy()).sum()
    # cells whose centre is in the mask, or whose crop is mostly glass, are not references
    glass = tissue.copy()
    glass[:, :] = False
    with pytest.raises(ValueError, match="no real tissue within"):
        surround_field(model, img, mask, glass, ring_px=48)


def test_unconditional_models_are_told_clearly():
    assert is_conditional(ConditionalGRFModel())
    assert not is_conditional(GRFModel())
    with pytest.raises(ValueError, match="'grf' is unconditional"):
        require_conditional(GRFModel())
    with pytest.raises(ValueError, match="unconditional"):
        embed_crops(GRFModel(), [np.zeros((16, 16, 3), np.uint8)])


def test_crops_are_embedded_side_by_side_with_the_serial_result_and_read_in_order(monkeypatch):
    model = ConditionalGRFModel()
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (11, 16, 16, 3), dtype=np.uint8)
    read, done = [], []

    def crop(k: int) -> np.ndarray:
        read.append(k)
        return crops[k]

    out = {}
    for workers in ("1", "2"):
        monkeypatch.setenv("NAPARI_CYTOSYN_MODEL_WORKERS", workers)
        read.clear()
        done.clear()
        out[workers] = embed_crops(
            model, crop, n=11, batch_size=2, progress=lambda d, n: done.append((d, n))
        )
        assert read == list(range(11))  # the reader (a band cache) is used in order, once each
        assert done[-1] == (11, 11) and [d for d, _ in done] == sorted({d for d, _ in done})
    assert out["1"].shape == (11, model.embed(torch.zeros(1, 3, 16, 16)).shape[1])
    assert np.array_equal(out["1"], out["2"])
    assert np.array_equal(out["2"][3], embed_crops(model, [crops[3]])[0])


def test_conditional_grf_guidance_pushes_away_from_the_unconditional_branch():
    model = ConditionalGRFModel()
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.full((2,), 0.6)
    mu = torch.tensor([0.5, -0.3, 0.2, 0.1])
    u = model.denoise(z, t)
    c1 = model.denoise(z, t, cond=mu)
    c2 = model.denoise(z, t, cond=mu, guidance=2.0)
    torch.testing.assert_close(c2 - u, 2 * (c1 - u), atol=1e-5, rtol=1e-5)


def test_box_counts_are_the_chessboard_dilation_and_the_box_sums_at_the_grid_points():
    import torch.nn.functional as F

    from napari_cytosyn.sampling.conditioning import _box_counts

    rng = np.random.default_rng(0)
    mask = rng.random((37, 53)) > 0.97
    every_y, every_x = np.arange(37), np.arange(53)
    for r in (0, 1, 4, 30):  # the ring test: within chessboard distance r of the mask
        m = torch.from_numpy(mask.astype(np.float32))[None, None]
        if r:
            m = F.max_pool2d(m, 2 * r + 1, stride=1, padding=r)
        near = _box_counts(mask, every_y, every_x, -r, r + 1) > 0
        np.testing.assert_array_equal(near, m[0, 0].numpy() > 0)
    # an off-centre box (the crop of a cell), read at a few points only, clipped at the borders
    ys, xs = np.array([0, 5, 36]), np.array([2, 52])
    counts = _box_counts(mask, ys, xs, -4, 6)
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            assert counts[i, j] == mask[max(0, y - 4) : y + 6, max(0, x - 4) : x + 6].sum()
    big = np.zeros((1200, 1200), bool)
    big[500:700, 500:700] = True
    near = _box_counts(big, np.array([276, 275]), np.array([276, 600]), -224, 225) > 0
    np.testing.assert_array_equal(near, [[True, True], [False, False]])
