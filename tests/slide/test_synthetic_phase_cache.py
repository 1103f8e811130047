"""The zarr-backed phase cache: lossless, persistent, shared, and what lazy mode reuses."""

from __future__ import annotations

import torch

from napari_cytosyn.models.grf import GRFModel
from napari_cytosyn.sampling import LazySpec, MemoryPhaseCache, SamplerSettings, render_chunk
from napari_cytosyn.slide.phase_cache import ZarrPhaseCache, key_name


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
    cache.put("k", value)
    cache.clear_memory()
    got = cache.get("k")
    assert got.dtype == torch.bfloat16 and torch.equal(got, value)


def test_returned_states_are_copies(tmp_path):
    cache = ZarrPhaseCache(tmp_path / "pc")
    cache.put((0, 0, 0), torch.zeros(3))
    cache.get((0, 0, 0)).add_(1.0)
    assert torch.equal(cache.get((0, 0, 0)), torch.zeros(3))


def test_key_names_are_distinct_and_file_safe():
    names = {key_name(k) for k in [(0, 1, 2), (0, 12, 0), (0, -1, 2), (1, 1, 2), "a/b", ".x"]}
    assert len(names) == 6
    assert all("/" not in n and not n.startswith(".") for n in names)


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


def test_entries_are_plain_zarr_arrays(tmp_path):
    import zarr

    cache = ZarrPhaseCache(tmp_path / "pc")
    value = torch.randn(4, 5, 6)
    cache.put((1, -2, 3), value)
    cache.put("scalar", torch.tensor(2.5))
    cache.flush()
    arr = zarr.open_array(str(tmp_path / "pc" / key_name((1, -2, 3))), mode="r")
    assert arr.shape == (4, 5, 6) and arr.attrs["torch_dtype"] == "torch.float32"
    assert (arr[...] == value.numpy()).all()
    cache.clear_memory()
    assert cache.get("scalar").shape == () and float(cache.get("scalar")) == 2.5
