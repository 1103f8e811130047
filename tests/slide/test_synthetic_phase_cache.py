"""The zarr-backed phase cache: lossless, persistent, shared, and what lazy mode reuses."""

from __future__ import annotations

import pytest
import torch

from napari_cytosyn.models.grf import GRFModel
from napari_cytosyn.sampling import LazySpec, MemoryPhaseCache, SamplerSettings, render_chunk
from napari_cytosyn.slide.phase_cache import CELL_OFFSET, ZarrPhaseCache


def test_states_round_trip_losslessly_through_disk(tmp_path):
    cache = ZarrPhaseCache(tmp_path / "pc")
    states = {(0, -1, 2): torch.randn(4, 28, 28), (2, 5, -7): torch.randn(4, 28, 28)}
    for key, value in states.items():
        cache.put(key, value)
    cache.flush()
    fresh = ZarrPhaseCache(tmp_path / "pc")  # another process would see the same
    for key, value in states.items():
        got = fresh.get(key)
        assert got.dtype == torch.float32 and torch.equal(got, value)
    assert fresh.get((1, 0, 0)) is None
    assert len(fresh) == 2 and fresh.disk_reads == 2


def test_bfloat16_states_come_back_as_bfloat16(tmp_path):
    cache = ZarrPhaseCache(tmp_path / "pc")
    value = torch.randn(2, 3).to(torch.bfloat16)
    cache.put((0, 1, 1), value)
    cache.clear_memory()
    got = cache.get((0, 1, 1))
    assert got.dtype == torch.bfloat16 and torch.equal(got, value)


def test_returned_states_are_copies(tmp_path):
    cache = ZarrPhaseCache(tmp_path / "pc")
    cache.put((0, 0, 0), torch.zeros(3))
    cache.get((0, 0, 0)).add_(1.0)
    assert torch.equal(cache.get((0, 0, 0)), torch.zeros(3))


def test_keys_other_than_phase_and_cell_are_refused(tmp_path):
    cache = ZarrPhaseCache(tmp_path / "pc")
    with pytest.raises(TypeError, match=r"\(phase, cell_y, cell_x\)"):
        cache.put("k", torch.zeros(3))
    with pytest.raises(ValueError, match="outside the cache's cell range"):
        cache.get((0, CELL_OFFSET, 0))


def test_lazy_chunks_from_the_zarr_cache_equal_those_from_memory(tmp_path):
    model = GRFModel(boundary="periodic")
    spec = LazySpec(settings=SamplerSettings(steps=4, seed=3), chunk_px=64)
    disk = ZarrPhaseCache(tmp_path / "pc")
    a = render_chunk(model, spec, 1, 2, disk)
    disk.flush()
    b = render_chunk(model, spec, 1, 2, MemoryPhaseCache())
    assert (a == b).all()
    reopened = ZarrPhaseCache(tmp_path / "pc")
    calls = model.calls
    c = render_chunk(model, spec, 1, 2, reopened)
    assert (c == a).all()
    assert model.calls == calls  # every phase state came from disk
    assert reopened.disk_reads > 0


def test_each_phase_is_one_plain_zarr_array_with_a_chunk_per_cell(tmp_path):
    import zarr

    cache = ZarrPhaseCache(tmp_path / "pc")
    value = torch.randn(4, 5, 6)
    cache.put((1, -2, 3), value)
    cache.put((1, 7, 7), value + 1)
    cache.flush()
    arr = zarr.open_array(str(tmp_path / "pc" / "phase1"), mode="r")
    assert arr.shape[2:] == (4, 5, 6) and arr.chunks[:2] == (1, 1)
    assert arr.attrs["torch_dtype"] == "torch.float32"
    assert (arr[CELL_OFFSET - 2, CELL_OFFSET + 3] == value.numpy()).all()
    assert sorted(cache.stored_keys()) == [(1, -2, 3), (1, 7, 7)]
    cache.clear_memory()
    assert cache.get((1, 0, 0)) is None and (1, 0, 0) not in cache  # never written: a miss
    assert (1, 7, 7) in cache and torch.equal(cache.get((1, 7, 7)), value + 1)


def test_verify_reports_a_damaged_state_and_repair_removes_it(tmp_path):
    cache = ZarrPhaseCache(tmp_path / "pc")
    for k in range(3):
        cache.put((0, k, 0), torch.full((2, 4, 4), float(k)))
    cache.flush()
    assert cache.verify() == []
    chunk = next(f for f in (tmp_path / "pc" / "phase0").iterdir() if f.name != "zarr.json")
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    chunk.write_bytes(bytes(raw))
    fresh = ZarrPhaseCache(tmp_path / "pc")
    problems = fresh.verify()
    assert len(problems) == 1 and "is damaged" in problems[0]
    assert len(fresh) == 3  # reported, not removed
    assert len(fresh.verify(repair=True)) == 1
    assert fresh.verify() == [] and len(fresh) == 2
