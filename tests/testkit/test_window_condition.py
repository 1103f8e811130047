"""The tiled engine hands every window its own condition (the per-window ``cond`` hook)."""

from __future__ import annotations

import pytest
import torch

from napari_cytosyn.models.grf import GRFModel
from napari_cytosyn.sampling import RegionConfig, SamplerSettings
from napari_cytosyn.sampling.region import generate_region
from napari_cytosyn.sampling.samplers import model_denoiser


class RectCondition:
    """``for_windows`` returns the rectangles themselves, so the test sees what each window got."""

    def for_windows(self, rects):
        return list(rects)


class RecordingGRF(GRFModel):
    """A GRF model that records the condition of every window it denoises."""

    def __post_init__(self):
        super().__post_init__()
        self.seen: list[tuple[tuple[int, int, int, int], tuple[int, ...]]] = []

    def denoise(self, z_t, t, cond=None, guidance=1.0):
        assert isinstance(cond, list) and len(cond) == z_t.shape[0]
        self.seen.extend((rect, tuple(z.shape)) for rect, z in zip(cond, z_t, strict=True))
        return super().denoise(z_t, t, cond=None, guidance=guidance)


def test_each_window_gets_its_absolute_rectangle():
    model = RecordingGRF()
    st = SamplerSettings(
        steps=2,
        window_latent=8,
        region=RegionConfig(overlap=0.5, shift_lattice=False),
        autocast="off",
    )
    generate_region(model, st, 64, 128, 100, 90, cond=RectCondition())
    assert model.seen
    for (y, x, h, w), shape in model.seen:
        assert (h, w) == (8, 8) == shape[1:]
        # windows lie on the lattice anchored at the slide origin (stride 4 latents)
        assert y % 4 == 0 and x % 4 == 0
    ys = sorted({r[0] for r, _ in model.seen})
    xs = sorted({r[1] for r, _ in model.seen})
    # the canvas covers the region's latents (rows 8..20, cols 16..27) plus the decode halo
    assert ys[0] <= 8 - st.decode.halo_latent and ys[-1] + 8 >= 21 + st.decode.halo_latent
    assert xs[0] <= 16 - st.decode.halo_latent and xs[-1] + 8 >= 28 + st.decode.halo_latent


def test_window_condition_outside_the_tiled_engine_is_refused():
    denoise = model_denoiser(GRFModel(), cond=RectCondition())
    assert denoise.per_window
    with pytest.raises(ValueError, match="one window rectangle per batch row"):
        denoise(torch.zeros(1, 4, 8, 8), 0.5)
