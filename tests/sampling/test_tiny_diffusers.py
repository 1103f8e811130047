"""The sampling engine on a tiny random diffusers model (AutoencoderKL + UNet2DModel).

The weights are random, so these tests check the plumbing and the exactness properties (order
independence with real convolutions and GroupNorm, bit-identical outside pixels), not quality.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_cytosyn.models.latent import LatentDiffusion
from napari_cytosyn.sampling import (
    DecodeConfig,
    InpaintConfig,
    LazySpec,
    MemoryPhaseCache,
    SamplerSettings,
    generate_region,
    inpaint,
    render_chunk,
    render_region_lazy,
)


@pytest.fixture(scope="module")
def tiny(tiny_diffusion) -> LatentDiffusion:
    return tiny_diffusion(4, tile_px=64)


def test_region_mode_runs_a_real_network_at_odd_sizes(tiny):
    img = generate_region(tiny, SamplerSettings(steps=3, sampler="dpmpp_2m"), 5, -3, 90, 131)
    assert img.shape == (90, 131, 3) and img.dtype == np.uint8
    assert img.std() > 0


def test_lazy_chunks_are_order_independent_with_a_real_network(tiny):
    spec = LazySpec(
        settings=SamplerSettings(steps=4, sampler="ancestral"),
        chunk_px=64,
        phase_times=(0.5,),
        context_latent=1,
    )
    alone = render_chunk(tiny, spec, 1, 1, MemoryPhaseCache())
    cache = MemoryPhaseCache()
    big = render_region_lazy(tiny, spec, 0, 0, 192, 192, cache)
    assert np.array_equal(big[64:128, 64:128], alone)
    assert np.array_equal(render_chunk(tiny, spec, 1, 1, cache), alone)


def test_lazy_neighbours_reuse_border_decodes_without_changing_pixels(tiny):
    from napari_cytosyn.sampling.lazy import BORDER_DECODES

    spec = LazySpec(settings=SamplerSettings(steps=3, seed=5), chunk_px=64, phase_times=(0.5,))
    cache = MemoryPhaseCache()
    BORDER_DECODES.clear()
    render_chunk(tiny, spec, 0, 0, cache)
    hits = BORDER_DECODES.hits
    after_neighbour = render_chunk(tiny, spec, 0, 1, cache)
    # (0, 1) shares its left border and two corners with (0, 0): 3 of its 8 crops are reused.
    assert BORDER_DECODES.hits - hits == 3
    BORDER_DECODES.clear()
    fresh = render_chunk(tiny, spec, 0, 1, MemoryPhaseCache())
    assert np.array_equal(after_neighbour, fresh)


def test_inpainting_with_a_real_autoencoder_keeps_outside_pixels(tiny):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (75, 98, 3), dtype=np.uint8)
    mask = np.zeros((75, 98), bool)
    mask[20:60, 30:70] = True
    out = inpaint(
        tiny,
        image,
        mask,
        SamplerSettings(steps=3, inpaint=InpaintConfig(resample_jumps=1, resample_n=2)),
    )
    assert np.array_equal(out[~mask], image[~mask])
    assert not np.array_equal(out[mask], image[mask])


def test_blended_tiled_decode_hides_groupnorm_tile_steps(tiny):
    from napari_cytosyn.models.grf import GRFModel
    from napari_cytosyn.sampling import lattice_lines, seam_score
    from napari_cytosyn.sampling.tiling import decode_tiled, to_uint8

    z = GRFModel().sample_prior(48, 48, torch.Generator().manual_seed(1))
    lines = lattice_lines(384, 128)

    def tile_seam(blend: int) -> float:
        rgb = decode_tiled(tiny, z, None, DecodeConfig(16, 4, blend))
        return seam_score(to_uint8(rgb), lines, lines)

    hard, blended = tile_seam(0), tile_seam(3)
    assert blended < hard and blended < 1.1, (hard, blended)
