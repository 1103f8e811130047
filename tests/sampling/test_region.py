"""Region mode: sizes, slide edges, shared noise, seams, progress/cancel, tiled decode."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_cytosyn.models.latent import NonFiniteOutputError
from napari_cytosyn.sampling import (
    Cancelled,
    DecodeConfig,
    RegionConfig,
    generate_region,
    lattice_lines,
    seam_score,
)
from napari_cytosyn.sampling.threads import WORKERS_ENV
from napari_cytosyn.sampling.tiling import decode_tiled


@pytest.mark.parametrize(
    ("y", "x", "h", "w"),
    [(13, -5, 37, 53), (0, 0, 224, 224), (-300, 1000, 1, 1), (5, 3, 250, 17)],
)
def test_region_of_any_size_and_position_has_the_requested_shape(grf, fast, y, x, h, w):
    img = generate_region(grf, fast, y, x, h, w)
    assert img.shape == (h, w, 3) and img.dtype == np.uint8
    assert img.std() > 0 or h * w == 1


def test_region_is_reproducible_and_seed_dependent(grf, fast):
    a = generate_region(grf, fast, 40, 24, 200, 260)
    b = generate_region(grf, fast, 40, 24, 200, 260)
    c = generate_region(grf, fast.replace(seed=8), 40, 24, 200, 260)
    assert np.array_equal(a, b)
    assert np.abs(a.astype(int) - c).mean() > 5


def test_overlapping_regions_share_noise_and_agree_on_shared_windows(grf, fast):
    # Naive tiling (independent windows): a window inside both regions gets identical pixels.
    naive = fast.replace(region=RegionConfig(overlap=0.0, weights="uniform", shift_lattice=False))
    a = generate_region(grf, naive, 0, 0, 448, 448)
    b = generate_region(grf, naive, 224, 224, 448, 448)
    assert np.array_equal(a[224:448, 224:448], b[:224, :224])


def test_region_mode_removes_the_seams_of_naive_tiling(grf):
    from napari_cytosyn.sampling import RegionConfig, SamplerSettings

    st = SamplerSettings(steps=10, seed=1)
    n = 896
    lines = lattice_lines(n, 224)
    naive = generate_region(
        grf, st.replace(region=RegionConfig(overlap=0.0, shift_lattice=False)), 0, 0, n, n
    )
    ours = generate_region(grf, st, 0, 0, n, n)
    mod = generate_region(
        grf,
        st.replace(region=RegionConfig(overlap=0.5, weights="gaussian", shift_lattice=False)),
        0,
        0,
        n,
        n,
    )
    assert seam_score(naive, lines, lines) > 1.5
    s_ours = max(seam_score(ours, lattice_lines(n, p), lattice_lines(n, p)) for p in (224, 168))
    assert s_ours < 1.04
    assert seam_score(mod, lattice_lines(n, 112), lattice_lines(n, 112)) < 1.04


def test_progress_counts_batches_to_the_total(grf, fast):
    calls: list[tuple[int, int]] = []
    generate_region(
        grf,
        fast.replace(region=RegionConfig(batch_size=3)),
        0,
        0,
        300,
        300,
        progress=lambda d, t: calls.append((d, t)),
    )
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[-1] == calls[-1][1]
    assert len({t for _, t in calls}) == 1


@pytest.mark.parametrize("workers", [1, 2])
def test_cancel_stops_within_the_batches_in_flight(grf, fast, monkeypatch, workers):
    monkeypatch.setenv(WORKERS_ENV, str(workers))
    cancel = threading.Event()
    seen: list[int] = []

    def progress(done, total):
        seen.append(done)
        cancel.set()

    grf.windows = 0
    with pytest.raises(Cancelled):
        generate_region(
            grf, fast.replace(region=RegionConfig(batch_size=2)), 0, 0, 600, 600, progress, cancel
        )
    # the batches run side by side (one per worker) finish; no batch starts after the cancel
    assert seen == list(range(1, workers + 1))
    assert grf.windows == 2 * workers


def test_nan_in_region_mode_names_the_step(fast):
    from napari_cytosyn.models.grf import GRFModel

    class Broken(GRFModel):
        def denoise(self, z_t, t, cond=None, guidance=1.0):
            out = super().denoise(z_t, t, cond, guidance)
            return out * float("inf") if float(t[0]) <= 0.5 else out

    with pytest.raises(NonFiniteOutputError, match=r"step 4 \(t=0\.5000"):
        generate_region(Broken(), fast, 0, 0, 100, 100)


def test_tiled_decode_with_halo_equals_whole_decode(grf):
    z = torch.randn(4, 45, 61, generator=torch.Generator().manual_seed(0))
    whole = grf.decode(z[None])[0]
    tiled = decode_tiled(grf, z, None, DecodeConfig(16, 2, 0))
    assert torch.allclose(tiled, whole, atol=1e-6)
    part = decode_tiled(grf, z, (7, 9, 20, 30), DecodeConfig(8, 1, 0))
    assert torch.allclose(part, whole[:, 56:216, 72:312], atol=1e-6)


def test_blended_tiled_decode_equals_whole_decode_for_a_local_decoder(grf):
    z = torch.randn(4, 45, 61, generator=torch.Generator().manual_seed(1))
    blended = decode_tiled(grf, z, None, DecodeConfig(16, 4, 3))
    assert torch.allclose(blended, grf.decode(z[None])[0], atol=1e-5)
    with pytest.raises(ValueError, match="halo_latent"):
        DecodeConfig(16, 1, 2)
