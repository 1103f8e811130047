"""Lazy mode's preview hook: every model call reports its x0 estimate over the windows' kept
parts; reporting changes no pixel, and the last estimates are the final latents."""

from __future__ import annotations

import threading

import numpy as np
import torch

from napari_cytosyn.sampling import LazySpec, MemoryPhaseCache, SamplerSettings, render_chunk
from napari_cytosyn.sampling.lazy import final_latents, preview_scope


def test_preview_reports_x0_over_the_kept_window_parts_and_changes_no_pixel(grf):
    spec = LazySpec(settings=SamplerSettings(steps=6, sampler="euler", seed=5), chunk_px=128)
    plain = render_chunk(grf, spec, 1, 2, MemoryPhaseCache())
    calls = []

    def report(model, rects, x0):
        calls.append((model, list(rects), x0.clone()))

    cache = MemoryPhaseCache()
    with preview_scope(report):
        seen = render_chunk(grf, spec, 1, 2, cache)
    np.testing.assert_array_equal(seen, plain)
    assert calls and all(model is grf for model, _, _ in calls)
    for _, rects, x0 in calls:
        assert x0.dtype == torch.float32 and x0.shape[0] == len(rects)
        assert all(x0.shape[1:] == (4, h, w) for (_, _, h, w) in rects)
    # The last estimate of every latent (Euler's last step lands on x0) is its final latent:
    # paint the reports in order over the chunk's latents and compare.
    n = spec.chunk_px // grf.latent_factor
    y0, x0_ = 1 * n, 2 * n
    painted = torch.full((4, n, n), float("nan"))
    for _, rects, x0 in calls:
        for (y, x, h, w), est in zip(rects, x0, strict=True):
            ya, yb, xa, xb = max(y, y0), min(y + h, y0 + n), max(x, x0_), min(x + w, x0_ + n)
            if ya < yb and xa < xb:
                painted[:, ya - y0 : yb - y0, xa - x0_ : xb - x0_] = est[
                    :, ya - y : yb - y, xa - x : xb - x
                ]
    final = final_latents(grf, spec, y0, x0_, n, n, cache)
    torch.testing.assert_close(painted, final, rtol=0, atol=1e-5)


def test_preview_scope_is_per_thread_and_restored(grf):
    spec = LazySpec(settings=SamplerSettings(steps=2, seed=1), chunk_px=64)
    calls = []
    other = []

    def elsewhere():
        render_chunk(grf, spec, 0, 0, MemoryPhaseCache())
        other.append(True)

    with preview_scope(lambda *a: calls.append(a)):
        t = threading.Thread(target=elsewhere)
        t.start()
        t.join()
        assert other and not calls  # another thread's renders report nothing
    render_chunk(grf, spec, 0, 1, MemoryPhaseCache())
    assert not calls  # outside the block nothing is reported
