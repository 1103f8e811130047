"""Stores under faults: deleted, truncated and garbled chunks, garbled maps and cache entries,
racing processes, leases, edit stores on the wrong slide (issue 18, items 3, 4, 6-10)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from napari_cytosyn.models.grf import GRFModel
from napari_cytosyn.sampling import SamplerSettings
from napari_cytosyn.slide.composite import CompositeSlide
from napari_cytosyn.slide.sample import write_pyramidal_tiff
from napari_cytosyn.slide.store import (
    ChunkDamagedError,
    StoreBusyError,
    StoreDamagedError,
    StoreExistsError,
    StoreMismatchError,
)
from napari_cytosyn.slide.synthetic import SyntheticSlide

SETTINGS = SamplerSettings(steps=4)
CHUNK = 64
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def make(path: Path, seed: int = 7, **kw) -> SyntheticSlide:
    return SyntheticSlide.create(
        path,
        GRFModel(boundary="periodic"),
        192,
        128,
        SETTINGS.replace(seed=seed),
        chunk_px=CHUNK,
        **kw,
    )


@pytest.fixture
def rendered(tmp_path) -> tuple[Path, list[np.ndarray]]:
    slide = make(tmp_path / "s.cytosyn")
    slide.render_all()
    levels = [np.asarray(slide.store.level_array(k)[...]) for k in range(slide.store.n_levels)]
    slide.close()
    return tmp_path / "s.cytosyn", levels


def test_item3_deleted_chunk_is_never_read_as_white_and_is_recomputed(rendered):
    path, levels = rendered
    ro = SyntheticSlide.open(path, mode="r")
    ro.store.chunk_file(0, 1, 2).unlink()
    # a reader that cannot recompute fails naming the chunk, also through the export's path
    with pytest.raises(ChunkDamagedError, match=r"chunk \(1, 2\) of level 0 .*missing"):
        np.asarray(ro.store.level_array(0)[...])
    with pytest.raises(ChunkDamagedError, match=r"chunk \(1, 2\) of level 0"):
        ro.levels[0].compute()
    ro.close()
    rw = SyntheticSlide.open(path, GRFModel(boundary="periodic"))
    with pytest.warns(RuntimeWarning, match="computing it again"):
        np.testing.assert_array_equal(rw.levels[0].compute(), levels[0])
    assert rw.compute_count == 1


def test_item10_truncated_empty_and_garbled_chunks_are_detected(rendered):
    path, _ = rendered
    slide = SyntheticSlide.open(path, mode="r")
    store = slide.store
    f_trunc, f_empty, f_garbled = (store.chunk_file(0, 0, k) for k in range(3))
    f_trunc.write_bytes(f_trunc.read_bytes()[:-7])
    f_empty.write_bytes(b"")
    raw = bytearray(f_garbled.read_bytes())
    raw[len(raw) // 2] ^= 0x10  # same size, one bit flipped
    f_garbled.write_bytes(bytes(raw))
    # a quick scan (sizes) finds the truncated and empty ones, a full scan all three
    assert sorted((cy, cx) for cy, cx, _ in store.damaged_chunks(0)) == [(0, 0), (0, 1)]
    assert sorted((cy, cx) for cy, cx, _ in store.damaged_chunks(0, full=True)) == [
        (0, 0),
        (0, 1),
        (0, 2),
    ]
    for cx, why in ((0, "bytes"), (1, "bytes"), (2, "checksum")):
        with pytest.raises(ChunkDamagedError, match=rf"chunk \(0, {cx}\) of level 0.*{why}"):
            store.read_chunk(0, 0, cx)
    slide.close()


def test_item10_garbled_completion_map_and_edited_geometry_fail_clearly(rendered):
    path, _ = rendered
    block = path / "done" / "0" / "c" / "0" / "0"
    block.write_bytes(b"garbage" * 3)
    with pytest.raises(StoreDamagedError, match=r"completion map block 0,0 of level 0.*--repair"):
        SyntheticSlide.open(path, mode="r")
    block.unlink()  # an absent block is an unrendered one (check --repair does this)
    meta_path = path / "levels" / "0" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["shape"] = [128, 200, 3]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(StoreDamagedError, match=r"array levels/0 has shape \[128, 200, 3\]"):
        SyntheticSlide.open(path, mode="r")


def test_item6_damaged_phase_cache_entries_are_misses_not_wrong_pixels(rendered):
    path, levels = rendered
    cache = path / "phase_cache"
    chunks = sorted(f for p in cache.glob("phase*") for f in p.iterdir() if f.name != "zarr.json")
    assert len(chunks) > 4
    for i, chunk in enumerate(chunks):
        raw = bytearray(chunk.read_bytes())
        if i % 2:
            raw[len(raw) // 2] ^= 0x01  # one flipped bit
            chunk.write_bytes(bytes(raw))
        else:
            chunk.write_bytes(bytes(raw[: len(raw) // 2]))  # truncated
    slide = SyntheticSlide.open(path, GRFModel(boundary="periodic"))
    for cy, cx in zip(*np.nonzero(slide.store.completion(0).grid), strict=True):
        slide.store.clear_chunk(0, int(cy), int(cx))
    with pytest.warns(RuntimeWarning, match="phase cache .* is damaged"):
        slide.render_all()
    renderer = slide.renderer()
    assert renderer.cache.damaged > 0
    np.testing.assert_array_equal(np.asarray(slide.store.level_array(0)[...]), levels[0])


HOLD = textwrap.dedent(
    """
    import sys, time
    from napari_cytosyn.slide.synthetic import SyntheticSlide
    slide = SyntheticSlide.open(sys.argv[1], mode="r")
    print("open", flush=True)
    time.sleep(60)
    """
)


def test_item7_overwrite_respects_a_reader_in_another_process(rendered, tmp_path):
    path, levels = rendered
    script = tmp_path / "hold.py"
    script.write_text(HOLD)
    reader = subprocess.Popen(
        [sys.executable, str(script), str(path)], stdout=subprocess.PIPE, text=True, env=ENV
    )
    try:
        assert reader.stdout.readline().strip() == "open"
        with pytest.raises(StoreBusyError, match="open in another process"):
            make(path, seed=8, overwrite=True)
        reread = SyntheticSlide.open(path, mode="r")
        np.testing.assert_array_equal(np.asarray(reread.store.level_array(0)[...]), levels[0])
        reread.close()
    finally:
        reader.kill()
        reader.wait()
    make(path, seed=8, overwrite=True).close()  # the reader is gone: replacing works


CREATE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import torch
    torch.set_num_threads(1)
    from napari_cytosyn.models.grf import GRFModel
    from napari_cytosyn.sampling import SamplerSettings
    from napari_cytosyn.slide.synthetic import SyntheticSlide
    from napari_cytosyn.slide.store import StoreExistsError
    path, seed, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    while not go.exists():
        time.sleep(0.001)
    try:
        slide = SyntheticSlide.create(path, GRFModel(boundary="periodic"), 128, 64,
                                      SamplerSettings(steps=4, seed=seed), chunk_px=64)
    except StoreExistsError:
        print("lost", flush=True)
        sys.exit(0)
    slide.ensure_chunk(0, 0, 0)
    print("created", flush=True)
    """
)


def test_item8_two_processes_creating_one_store_never_mix_seeds(tmp_path):
    script = tmp_path / "create.py"
    script.write_text(CREATE)
    references = {}
    for seed in (1, 2):
        ref = SyntheticSlide.create(
            tmp_path / f"ref{seed}",
            GRFModel(boundary="periodic"),
            128,
            64,
            SETTINGS.replace(seed=seed),
            chunk_px=64,
        )
        references[seed] = ref.ensure_chunk(0, 0, 0)
    for trial in range(2):
        path, go = tmp_path / f"race{trial}.cytosyn", tmp_path / f"go{trial}"
        procs = [
            subprocess.Popen(
                [sys.executable, str(script), str(path), str(seed), str(go)],
                stdout=subprocess.PIPE,
                text=True,
                env=ENV,
            )
            for seed in (1, 2)
        ]
        time.sleep(3.0)  # both interpreters started and waiting
        go.touch()
        results = [p.communicate(timeout=120)[0].strip() for p in procs]
        assert sorted(results) == ["created", "lost"], results
        slide = SyntheticSlide.open(path, mode="r")
        np.testing.assert_array_equal(slide.store.read_chunk(0, 0, 0), references[slide.seed])
        assert results[slide.seed - 1] == "created"
        slide.close()


INPAINT = textwrap.dedent(
    """
    import sys
    import numpy as np, torch
    torch.set_num_threads(1)
    from napari_cytosyn.models.grf import GRFModel
    from napari_cytosyn.sampling import SamplerSettings
    from napari_cytosyn.slide.composite import CompositeSlide
    slide, store, x0 = sys.argv[1], sys.argv[2], int(sys.argv[3])
    comp = CompositeSlide(slide, store)
    for i in range(3):
        comp.inpaint((64 + 96 * i, x0, 32, 32), np.ones((32, 32), bool),
                     GRFModel(boundary="periodic"), SamplerSettings(steps=2), halo_px=16)
    print("done", flush=True)
    """
)


def test_item4_concurrent_inpaints_keep_every_edit_record(generic_tiff_slide, tmp_path):
    store = tmp_path / "edits.zarr"
    CompositeSlide(generic_tiff_slide, store, chunk_px=256).close()
    script = tmp_path / "inpaint.py"
    script.write_text(INPAINT)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(generic_tiff_slide), str(store), str(x0)],
            stdout=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        for x0 in (100, 700)
    ]
    assert [p.communicate(timeout=180)[0].strip() for p in procs] == ["done", "done"]
    comp = CompositeSlide(generic_tiff_slide, store)
    assert len(comp.edits) == 6
    assert sorted(e["region"][1] for e in comp.edits) == [100] * 3 + [700] * 3
    h, w = comp.level_shapes[0]
    mask = comp.mask_region(0, 0, 0, h, w)
    assert mask.sum() == 6 * 32 * 32
    for e in comp.edits:
        y, x, eh, ew = e["region"]
        assert mask[y : y + eh, x : x + ew].all()


def test_item9_edit_store_refuses_another_slide_of_the_same_shape(
    generic_tiff_slide, slide_levels, tmp_path
):
    store = tmp_path / "edits.zarr"
    CompositeSlide(generic_tiff_slide, store, chunk_px=256).close()
    other_levels = [np.ascontiguousarray(255 - lv) for lv in slide_levels]
    other = write_pyramidal_tiff(
        tmp_path / "other.tif", other_levels, mpp=(0.5, 0.5), tile_px=256, compression="zlib"
    )
    with pytest.raises(StoreMismatchError, match="the slides differ"):
        CompositeSlide(other, store)
    # the same slide copied elsewhere is still the same slide
    copy = tmp_path / "copy.tif"
    copy.write_bytes(Path(generic_tiff_slide).read_bytes())
    CompositeSlide(copy, store).close()


def test_creating_over_a_store_of_another_kind_is_refused(generic_tiff_slide, tmp_path):
    store = tmp_path / "case.cytosyn"
    CompositeSlide(generic_tiff_slide, store, chunk_px=256).close()
    with pytest.raises(StoreExistsError, match="'edit-store' store, not a 'synthetic-slide'"):
        make(store, overwrite=True)
    assert (store / "zarr.json").is_file()


def test_item10_check_reports_and_repair_recovers_a_damaged_store(rendered, capsys):
    from napari_cytosyn.cli import main

    path, levels = rendered
    (path / "done" / "0" / "c" / "0" / "0").write_bytes(b"garbage")  # the whole level-0 map
    chunk = path / "levels" / "1" / "c" / "0" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:-3])
    entry = next((path / "phase_cache").glob("phase*"))
    (entry / "zarr.json").write_text("{")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    (path / ".tmp" / f"{dead}-0123abcd").write_bytes(b"half a chunk")
    with pytest.raises(StoreDamagedError, match="--repair"):
        SyntheticSlide.open(path, mode="r")

    assert main(["check", str(path), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    text = "\n".join(report["problems"])
    assert "completion map block 0,0 of level 0 is damaged" in text
    assert "chunk (0, 0) of level 1 is damaged" in text
    assert f"phase cache array {entry.name} is damaged" in text
    assert f"{dead}-0123abcd" in text and not report["sound"]

    assert main(["check", str(path), "--repair"]) == 0
    assert "render" in capsys.readouterr().out
    assert main(["check", str(path)]) == 0
    slide = SyntheticSlide.open(path, GRFModel(boundary="periodic"))
    slide.render_all()
    slide.finish_pyramid()
    for k, level in enumerate(levels):
        np.testing.assert_array_equal(np.asarray(slide.store.level_array(k)[...]), level)
