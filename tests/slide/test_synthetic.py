"""Synthetic slides on real zarr stores: creation, determinism, single flight, pyramid, errors."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from napari_cytosyn.chunk_grid import downsample_area
from napari_cytosyn.models.grf import GRFModel
from napari_cytosyn.sampling import SamplerSettings, settings_of
from napari_cytosyn.slide.store import StoreError, StoreExistsError, StoreMismatchError
from napari_cytosyn.slide.synthetic import SyntheticSlide

SETTINGS = SamplerSettings(steps=4)
CHUNK = 64


def make(path: Path, width: int = 200, height: int = 136, seed: int = 7, **kw) -> SyntheticSlide:
    return SyntheticSlide.create(
        path,
        GRFModel(boundary="periodic"),
        width,
        height,
        SETTINGS.replace(seed=seed),
        chunk_px=kw.pop("chunk_px", CHUNK),
        **kw,
    )


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_creating_a_200k_slide_is_instant_and_allocates_nothing_proportional(tmp_path):
    import napari_cytosyn.sampling.lazy  # noqa: F401 - import time is not creation time

    t0 = time.perf_counter()
    slide = SyntheticSlide.create(
        tmp_path / "big.zarr",
        GRFModel(boundary="periodic"),
        200_000,
        200_000,
        SETTINGS.replace(seed=1),
        chunk_px=512,
    )
    elapsed = time.perf_counter() - t0
    assert elapsed < 2.0
    assert slide.level_shapes[0] == (200_000, 200_000)
    assert slide.store.completion(0).shape == (391, 391)
    assert slide.store.completion(0).count() == 0
    assert dir_bytes(tmp_path / "big.zarr") < 200_000  # metadata only
    reopened = SyntheticSlide.open(tmp_path / "big.zarr")
    assert reopened.levels[0].shape == (200_000, 200_000, 3)
    assert reopened.levels[-1].shape[0] <= 512


def test_chunks_are_identical_whatever_the_order_and_thread_count(tmp_path):
    a = make(tmp_path / "a.zarr", width=136)
    b = make(tmp_path / "b.zarr", width=136)
    ny, nx = a.store.grid(0)
    for cy in range(ny):
        for cx in range(nx):
            a.ensure_chunk(0, cy, cx)
    keys = [(cy, cx) for cy in range(ny) for cx in range(nx)][::-1]
    threads = [
        threading.Thread(target=lambda ks: [b.ensure_chunk(0, *k) for k in ks], args=(keys[i::4],))
        for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    pa = a.read_region(0, 0, 0, 136, 136, generate=False)
    pb = b.read_region(0, 0, 0, 136, 136, generate=False)
    assert np.array_equal(pa, pb)
    assert pa.std() > 1.0  # real texture, not a constant fill
    assert a.compute_count == b.compute_count == ny * nx


def test_eight_threads_asking_for_one_chunk_compute_it_once(tmp_path):
    slide = make(tmp_path / "s.zarr")
    barrier = threading.Barrier(8)
    results = [None] * 8

    def ask(i: int) -> None:
        barrier.wait()
        results[i] = slide.ensure_chunk(0, 1, 2)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert slide.compute_count == 1
    assert all(np.array_equal(r, results[0]) for r in results)
    assert slide.is_done(0, 1, 2)


def test_pyramid_levels_are_area_averages_of_the_level_below(tmp_path):
    slide = make(tmp_path / "s.zarr", width=192, height=136)
    slide.render_all()
    assert all(
        slide.store.completion(k).count() == int(np.prod(slide.store.grid(k)))
        for k in range(slide.store.n_levels)
    )
    below = slide.levels[0].compute()
    for k in range(1, slide.store.n_levels):
        level = slide.levels[k].compute()
        assert level.shape[:2] == slide.level_shapes[k]
        assert np.array_equal(level, downsample_area(below, 2))
        below = level


def test_dask_levels_generate_missing_chunks_and_stored_levels_do_not(tmp_path):
    slide = make(tmp_path / "s.zarr")
    stored = slide.stored_levels[0][:64, :64].compute()
    assert (stored == 255).all() and slide.compute_count == 0
    block = slide.levels[0][:64, 64:128].compute()
    assert slide.compute_count == 1
    assert np.array_equal(block, slide.stored_levels[0][:64, 64:128].compute())
    again = SyntheticSlide.open(tmp_path / "s.zarr", GRFModel(boundary="periodic"))
    assert np.array_equal(again.levels[0][:64, 64:128].compute(), block)
    assert again.compute_count == 0


def test_finished_chunks_read_as_fresh_writable_arrays_equal_to_zarr(tmp_path):
    slide = make(tmp_path / "s.zarr")
    slide.render_all()
    plain = zarr.open_array(str(tmp_path / "s.zarr" / "levels" / "0"), mode="r")
    for cy, cx in [(0, 0), (2, 3)]:  # (2, 3) is cut by the border: 8 x 8 px
        y0, y1, x0, x1 = slide.store.bounds(0, cy, cx)
        a = slide.store.read_chunk(0, cy, cx)
        assert np.array_equal(a, plain[y0:y1, x0:x1])
        a[...] = 0  # writable, and owned by the caller
        assert np.array_equal(slide.store.read_chunk(0, cy, cx), plain[y0:y1, x0:x1])
    region = slide.levels[0][30:100, 50:190].compute()
    assert np.array_equal(region, plain[30:100, 50:190])
    # Chunk reads stay separate tasks (dask's fusion of a read with its slice cost ~0.1 ms per
    # chunk): one unfused read per chunk touched.
    import dask

    from napari_cytosyn.slide._chunk_array import _ReadTask

    (graph,) = dask.optimize(slide.levels[0][30:100, 50:190])
    reads = [t for t in dict(graph.__dask_graph__()).values() if isinstance(t, _ReadTask)]
    assert len(reads) == 6  # chunk rows 0-1 x columns 0-2


def test_tissue_mask_synthesizes_only_inside_and_leaves_white_glass(tmp_path):
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True  # top-left quarter of a 128 x 128 slide = chunk (0, 0)
    slide = make(tmp_path / "s.zarr", width=128, height=128, tissue_mask=mask)
    slide.render_all()
    assert slide.compute_count == 1  # chunks fully outside the mask are not rendered
    img = slide.read_region(0, 0, 0, 128, 128)
    assert (img[64:, :] == 255).all() and (img[:, 64:] == 255).all()
    assert img[:64, :64].std() > 1.0
    reopened = SyntheticSlide.open(tmp_path / "s.zarr")
    assert reopened.tissue_in_chunk(0, 0).all() and not reopened.tissue_in_chunk(1, 1).any()


def test_store_records_spec_settings_and_model_provenance(tmp_path):
    slide = make(tmp_path / "s.zarr", seed=11)
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    attrs = root.attrs["napari_cytosyn"]
    assert attrs["format"] == "napari-cytosyn" and attrs["format_version"] == 2
    assert attrs["kind"] == "synthetic-slide"
    assert (attrs["width"], attrs["height"]) == (200, 136)
    recipe = attrs["recipe"]
    assert recipe["version"] == 2 and recipe["mode"] == "lazy"
    assert recipe["model"]["name"] == "grf"
    assert recipe["core"]["seed"] == slide.seed == 11
    assert settings_of(recipe) == slide.renderer().spec.settings
    assert settings_of(recipe).steps == 4
    assert json.dumps(attrs).count('"seed"') == 1  # stored once
    assert (slide.mpp.x, slide.mpp.y) == (0.5, 0.5)


def test_existing_store_is_not_overwritten_without_consent(tmp_path):
    make(tmp_path / "s.zarr").ensure_chunk(0, 0, 0)
    with pytest.raises(StoreExistsError, match="overwrite=True"):
        make(tmp_path / "s.zarr")
    fresh = make(tmp_path / "s.zarr", overwrite=True)
    assert fresh.store.completion(0).count() == 0


def test_a_directory_that_is_not_ours_is_refused_and_kept(tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "data.txt").write_text("precious")
    with pytest.raises(StoreExistsError, match="not a napari-cytosyn store"):
        make(other, overwrite=True)
    assert (other / "data.txt").read_text() == "precious"
    with pytest.raises(StoreError, match="not a napari-cytosyn store"):
        SyntheticSlide.open(other)


def test_opening_with_another_model_or_settings_is_refused(tmp_path):
    make(tmp_path / "s.zarr")
    with pytest.raises(StoreMismatchError, match="model"):
        SyntheticSlide.open(
            tmp_path / "s.zarr", GRFModel(boundary="periodic", lengths_latent=(1.0, 1.0, 1.0, 1.0))
        )
    with pytest.raises(StoreMismatchError, match=r"core\.steps: 4 \(stored\) != 5 \(given\)"):
        SyntheticSlide.open(tmp_path / "s.zarr", settings=SETTINGS.replace(steps=5, seed=7))
    with pytest.raises(StoreMismatchError, match=r"core\.seed: 7 \(stored\) != 8 \(given\)"):
        SyntheticSlide.open(tmp_path / "s.zarr", settings=SETTINGS.replace(seed=8))
    seven = SETTINGS.replace(seed=7)
    assert SyntheticSlide.open(tmp_path / "s.zarr", GRFModel(boundary="periodic"), seven).seed == 7


@pytest.mark.parametrize(
    ("width", "height", "error"),
    [(0, 100, ValueError), (100, -5, ValueError), (10**9, 100, ValueError), (1.5, 100, TypeError)],
)
def test_absurd_sizes_are_refused(tmp_path, width, height, error):
    with pytest.raises(error, match=r"width|height"):
        make(tmp_path / "s.zarr", width=width, height=height)
    assert not (tmp_path / "s.zarr").exists()


def test_a_finished_chunk_whose_file_is_missing_is_computed_again(tmp_path):
    slide = make(tmp_path / "s.zarr")
    first = slide.ensure_chunk(0, 0, 1)
    slide.store.chunk_file(0, 0, 1).unlink()
    again = SyntheticSlide.open(tmp_path / "s.zarr", GRFModel(boundary="periodic"))
    with pytest.warns(RuntimeWarning, match=r"chunk \(0, 1\) of level 0 is damaged.*missing"):
        pixels = again.ensure_chunk(0, 0, 1)
    assert again.compute_count == 1
    np.testing.assert_array_equal(pixels, first)


def test_read_only_slide_reads_but_refuses_to_generate(tmp_path):
    make(tmp_path / "s.zarr").ensure_chunk(0, 0, 0)
    ro = SyntheticSlide.open(tmp_path / "s.zarr", mode="r")
    assert ro.read_region(0, 0, 0, 64, 64).std() > 1.0
    with pytest.raises(StoreError, match="read-only"):
        ro.ensure_chunk(0, 1, 1)


def test_dask_levels_pickle_as_the_store_path_for_cluster_workers(tmp_path):
    import pickle

    slide = make(tmp_path / "s.zarr")
    slide.ensure_chunk(0, 1, 1)
    slide.stored_levels[0].compute()  # fills the layer's key cache, which must not be shipped
    payload = pickle.dumps(slide.stored_levels[0][64:128, 64:128])
    assert len(payload) < 20_000  # no model, no pixels: the path and the graph
    restored = pickle.loads(payload)
    assert np.array_equal(restored.compute(), slide.read_region(0, 64, 64, 64, 64))
