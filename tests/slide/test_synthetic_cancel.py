"""Cancel inside a chunk: rendering stops between model calls and writes nothing."""

from __future__ import annotations

import threading

import pytest

from napari_cytosyn.models.grf import GRFModel
from napari_cytosyn.sampling import Cancelled, SamplerSettings
from napari_cytosyn.sampling.threads import model_workers
from napari_cytosyn.slide.synthetic import SyntheticSlide, cancel_scope, current_cancel


class CountingGRF(GRFModel):
    """The GRF test model, setting a cancel flag once ``stop_at`` denoiser calls have started.

    ``>=``, not ``==``: lazy mode runs up to ``model_workers()`` calls side by side, so the count
    can pass ``stop_at`` between two of this thread's checks."""

    def __init__(self, stop_at: int, flag: threading.Event) -> None:
        super().__init__(boundary="periodic")
        self.stop_at, self.flag = stop_at, flag

    def denoise(self, *args, **kwargs):
        out = super().denoise(*args, **kwargs)  # counts ``calls``
        if 0 <= self.stop_at <= self.calls:
            self.flag.set()
        return out


def test_render_all_stops_within_one_model_call_and_writes_no_chunk(tmp_path):
    flag = threading.Event()
    model = CountingGRF(stop_at=2, flag=flag)
    slide = SyntheticSlide.create(
        tmp_path / "s.zarr", model, 128, 128, SamplerSettings(steps=12, seed=1), chunk_px=64
    )
    with pytest.raises(Cancelled):
        slide.render_all(cancel=flag)
    # No call starts after the flag is set: only the calls already in flight (one per worker) end.
    assert model.calls <= 2 + model_workers() - 1
    assert slide.missing_chunks(0) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert slide.compute_count == 0
    # The same slide renders completely afterwards (nothing half-written blocks it).
    flag.clear()
    model.stop_at = -1
    assert slide.render_all() == 4


def test_cancel_scope_nests_and_restores():
    a, b = threading.Event(), threading.Event()
    assert current_cancel() is None
    with cancel_scope(a):
        with cancel_scope(b):
            assert current_cancel() is b
        assert current_cancel() is a
    assert current_cancel() is None
