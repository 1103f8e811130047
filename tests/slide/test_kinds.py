"""The slide contract (``slide.kinds``): every kind, opened from its store or file on disk by
``open_any``, answers ``kind``, ``levels``, ``mpp``, ``provenance()``, ``synthetic_mask()`` and
``finished_levels()``; ``export_slide`` takes any of them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from napari_cytosyn.export import IncompleteSlideError, export_slide
from napari_cytosyn.models.grf import GRFModel
from napari_cytosyn.sampling import SamplerSettings
from napari_cytosyn.slide.array import ArraySlide
from napari_cytosyn.slide.composite import CompositeSlide
from napari_cytosyn.slide.kinds import SlideLike, open_any
from napari_cytosyn.slide.provenance import file_sha256
from napari_cytosyn.slide.synthetic import SyntheticSlide

SETTINGS = SamplerSettings(steps=2)
EDIT = (100, 200, 64, 96)  # (y, x, h, w) level-0 px of the composite's one edit


def _rendered_synthetic(path: Path) -> Path:
    slide = SyntheticSlide.create(
        path, GRFModel(boundary="periodic"), 200, 136, SETTINGS.replace(seed=3), chunk_px=64
    )
    slide.render_all()
    slide.finish_pyramid()
    slide.close()
    return path


def _edited(real: Path, store: Path) -> Path:
    comp = CompositeSlide(real, store, chunk_px=256)
    h, w = EDIT[2:]
    comp.inpaint(EDIT, np.ones((h, w), bool), GRFModel(boundary="periodic"), SETTINGS, halo_px=32)
    comp.close()
    return store


@pytest.fixture(params=["real", "synthetic", "composite"])
def on_disk(request, generic_tiff_slide, tmp_path) -> tuple[str, Path]:
    if request.param == "real":
        return "real", generic_tiff_slide
    if request.param == "synthetic":
        return "synthetic", _rendered_synthetic(tmp_path / "syn.cytosyn")
    return "composite", _edited(generic_tiff_slide, tmp_path / "edits.cytosyn")


def test_every_kind_opened_by_open_any_answers_the_contract(on_disk, generic_tiff_slide):
    kind, path = on_disk
    slide = open_any(path)
    assert isinstance(slide, SlideLike)
    assert slide.kind == kind
    assert [tuple(lv.shape[:2]) for lv in slide.levels] == [tuple(s) for s in slide.level_shapes]
    assert all(lv.shape[2] == 3 and lv.dtype == np.uint8 for lv in slide.levels)
    expected_mpp = {"real": 0.5, "composite": 0.5, "synthetic": float(GRFModel().mpp)}[kind]
    assert (slide.mpp.x, slide.mpp.y) == pytest.approx((expected_mpp, expected_mpp))

    prov = slide.provenance()
    assert prov["software"]["name"] == "napari-cytosyn"
    mask0 = np.asarray(slide.synthetic_mask(0))
    assert mask0.shape == tuple(slide.level_shapes[0]) and mask0.dtype == bool
    if kind == "real":
        assert prov["synthetic"] is None and prov["model"] is None
        assert prov["source"]["sha256"] == file_sha256(generic_tiff_slide)
        assert not mask0.any()
    elif kind == "synthetic":
        assert prov["synthetic"]["fully_synthetic"] is True and prov["seed"] == 3
        assert prov["synthetic"]["width"] == 200 and prov["synthetic"]["height"] == 136
        assert mask0.all()
    else:
        y, x, h, w = EDIT
        assert prov["synthetic"]["kind"] == "composite" and len(prov["synthetic"]["edits"]) == 1
        assert prov["source"]["sha256"] == file_sha256(generic_tiff_slide)
        assert mask0[y : y + h, x : x + w].all() and mask0.sum() == h * w
        coarse = np.asarray(slide.synthetic_mask(len(slide.levels) - 1))
        assert coarse.shape == tuple(slide.level_shapes[-1]) and coarse.any()

    finished = slide.finished_levels()
    np.testing.assert_array_equal(np.asarray(finished[-1][...]), np.asarray(slide.levels[-1]))


def test_export_of_any_kind_carries_its_provenance_and_only_a_composite_a_mask(on_disk, tmp_path):
    kind, path = on_disk
    slide = open_any(path)
    out = export_slide(slide, tmp_path / "out.ome.zarr", checksum_source=False)
    root = zarr.open_group(str(out), mode="r")
    prov = root.attrs["napari_cytosyn"]
    assert prov["synthetic"] == slide.provenance(checksum_source=False)["synthetic"]
    level0 = np.moveaxis(root["0"][...], 0, -1)
    np.testing.assert_array_equal(level0, np.asarray(slide.levels[0]))
    assert ("labels" in root) == (kind == "composite")
    if kind == "composite":
        mask = root["labels/synthetic/0"][0].astype(bool)
        np.testing.assert_array_equal(mask, np.asarray(slide.synthetic_mask(0)))


def test_an_unfinished_synthetic_slide_is_exported_only_with_render_missing(tmp_path):
    slide = SyntheticSlide.create(
        tmp_path / "s.cytosyn",
        GRFModel(boundary="periodic"),
        200,
        136,
        SETTINGS.replace(seed=3),
        chunk_px=64,
    )
    with pytest.raises(IncompleteSlideError, match=r"\d+ unrendered chunks.*render_missing"):
        export_slide(slide, tmp_path / "a.ome.zarr")
    assert not (tmp_path / "a.ome.zarr").exists()
    done: list[tuple[int, int]] = []
    out = export_slide(
        slide,
        tmp_path / "b.ome.zarr",
        render_missing=True,
        progress=lambda d, t: done.append((d, t)),
    )
    assert (12, 12) in done  # the 4 x 3 level-0 chunks, rendered under the same callback
    assert slide.missing_chunks(0) == [] and slide.missing_chunks(1) == []
    reference = _rendered_synthetic(tmp_path / "ref.cytosyn")
    root = zarr.open_group(str(out), mode="r")
    expected = SyntheticSlide.open(reference, mode="r").read_region(0, 0, 0, 136, 200)
    np.testing.assert_array_equal(np.moveaxis(root["0"][...], 0, -1), expected)


def test_open_any_names_what_is_missing(generic_tiff_slide, tmp_path):
    import shutil

    real = tmp_path / "copy.tif"
    shutil.copy(generic_tiff_slide, real)
    store = _edited(real, tmp_path / "e.cytosyn")
    real.unlink()
    with pytest.raises(FileNotFoundError, match=r"copy\.tif.*not there any more"):
        open_any(store)
    with pytest.raises(FileNotFoundError, match="no such slide"):
        open_any(tmp_path / "nothing.svs")


def test_array_slide_builds_coarse_masks_from_the_finest_and_checks_its_kind():
    image = np.zeros((8, 6, 3), np.uint8)
    mask = np.zeros((8, 6), np.uint8)
    mask[1, 1] = mask[7, 5] = 1
    slide = ArraySlide(
        [image, image[::2, ::2]], mpp=0.5, kind="composite", mask_levels=[mask], name="x"
    )
    assert (slide.mpp.x, slide.mpp.y) == (0.5, 0.5)
    coarse = np.asarray(slide.synthetic_mask(1))
    expected = np.zeros((4, 3), bool)
    expected[0, 0] = expected[3, 2] = True
    np.testing.assert_array_equal(coarse, expected)
    assert np.asarray(ArraySlide([image], mpp=None, kind="synthetic").synthetic_mask(0)).all()
    with pytest.raises(ValueError, match="needs mask_levels"):
        ArraySlide([image], mpp=None, kind="composite")
    with pytest.raises(ValueError, match="kind must be one of"):
        ArraySlide([image], mpp=None, kind="edited")


def test_export_builds_missing_coarse_chunks_of_a_writable_store_and_names_them_otherwise(
    tmp_path,
):
    path = tmp_path / "p.cytosyn"
    slide = SyntheticSlide.create(
        path, GRFModel(boundary="periodic"), 200, 136, SETTINGS.replace(seed=3), chunk_px=64
    )
    rgb = np.full((64, 64, 3), 90, np.uint8)
    for cy, cx in slide.missing_chunks(0):
        y0, y1, x0, x1 = slide.store.bounds(0, cy, cx)
        slide.store.write_chunk(0, cy, cx, rgb[: y1 - y0, : x1 - x0])
    slide.close()
    with pytest.raises(IncompleteSlideError, match=r"\d+ unbuilt coarse chunks"):
        export_slide(open_any(path), tmp_path / "ro.ome.zarr")
    writable = open_any(path, mode="r+")
    out = export_slide(writable, tmp_path / "rw.ome.zarr")
    assert writable.missing_chunks(1) == [] and writable.compute_count == 0  # no model ran
    coarsest = zarr.open_group(str(out), mode="r")[str(len(writable.level_shapes) - 1)]
    assert (np.asarray(coarsest) == 90).all()


@pytest.mark.parametrize("name", ["e.ome.zarr", "e.svs"])
def test_a_reopened_export_of_a_composite_states_its_synthetic_pixels(
    generic_tiff_slide, tmp_path, name
):
    comp = open_any(_edited(generic_tiff_slide, tmp_path / "edits.cytosyn"))
    out = export_slide(comp, tmp_path / name, checksum_source=False)
    back = open_any(out)
    assert back.kind == "real" and back.stored_mask_levels
    np.testing.assert_array_equal(
        np.asarray(back.synthetic_mask(0)), np.asarray(comp.synthetic_mask(0))
    )
    assert open_any(generic_tiff_slide).stored_mask_levels is None


@pytest.mark.parametrize(
    "first, again, compression",
    [
        ("e.ome.zarr", "again.svs", None),
        ("e.svs", "again.ome.zarr", None),
        ("e.ome.tif", "again.ome.tif", None),
        ("e.svs", "again.svs", "copy"),
    ],
)
def test_re_exporting_an_export_keeps_its_synthetic_mask(
    generic_tiff_slide, tmp_path, first, again, compression
):
    comp = open_any(_edited(generic_tiff_slide, tmp_path / "edits.cytosyn"))
    edited = np.asarray(comp.synthetic_mask(0))
    assert edited.sum() == EDIT[2] * EDIT[3]
    exported = open_any(export_slide(comp, tmp_path / first, checksum_source=False))
    out = export_slide(exported, tmp_path / again, compression=compression, checksum_source=False)
    back = open_any(out)
    assert back.kind == "real" and back.stored_mask_levels
    assert len(back.levels) == len(exported.levels)
    for k in range(len(back.levels)):
        np.testing.assert_array_equal(
            np.asarray(back.synthetic_mask(k)), np.asarray(exported.synthetic_mask(k))
        )
    np.testing.assert_array_equal(np.asarray(back.synthetic_mask(0)), edited)
    if again.endswith(".ome.zarr") or compression == "copy":  # lossless or copied tiles
        np.testing.assert_array_equal(np.asarray(back.levels[0]), np.asarray(exported.levels[0]))


def test_re_exporting_a_real_slide_without_a_mask_writes_none(generic_tiff_slide, tmp_path):
    out = export_slide(open_any(generic_tiff_slide), tmp_path / "r.ome.zarr")
    assert "labels" not in zarr.open_group(str(out), mode="r")
    back = open_any(out)
    assert back.stored_mask_levels is None
    assert not np.asarray(back.synthetic_mask(0)).any()
