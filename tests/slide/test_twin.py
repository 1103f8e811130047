"""Synthetic twins: a real slide's layout and, window by window, its kind of tissue."""

from __future__ import annotations

import functools
import json

import numpy as np
import pytest
import zarr

from napari_cytosyn.models.grf import ConditionalGRFModel, GRFModel
from napari_cytosyn.sampling import SamplerSettings
from napari_cytosyn.sampling.conditioning import ConditionField
from napari_cytosyn.slide import open_slide
from napari_cytosyn.slide.reference import load_fields, region_embedding, slide_checksum
from napari_cytosyn.slide.sample import write_pyramidal_tiff
from napari_cytosyn.slide.synthetic import SyntheticSlide

PINK, PURPLE, GLASS = (200, 110, 160), (120, 60, 160), (246, 244, 246)
SETTINGS = SamplerSettings(steps=3, seed=0)
#: A small conditional model: 64 px tiles, so a 192 x 256 slide has a 3 x 4 grid.
TwinModel = functools.partial(ConditionalGRFModel, tile_px=64)


class CountingModel(ConditionalGRFModel):
    """Counts the crops it embeds."""

    embedded = 0

    def embed(self, rgb):
        CountingModel.embedded += rgb.shape[0]
        return super().embed(rgb)


def two_tissue_levels(h: int = 192, w: int = 256) -> list[np.ndarray]:
    """Pink tissue on the left half, purple top right, glass bottom right."""
    rng = np.random.default_rng(0)
    img = np.empty((h, w, 3), np.uint8)
    img[:, : w // 2] = PINK
    img[:, w // 2 :] = PURPLE
    img = np.clip(img.astype(int) + rng.integers(-12, 13, img.shape), 0, 255).astype(np.uint8)
    img[h // 2 :, w // 2 :] = GLASS
    return [img, img[::2, ::2].copy()]


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    path = tmp_path_factory.mktemp("real") / "two_tissues.tif"
    write_pyramidal_tiff(path, two_tissue_levels(), mpp=(0.5, 0.5), tile_px=128)
    return path


def _twin(path, real, model=None, **kw):
    return SyntheticSlide.create(
        path,
        model or TwinModel(),
        None,
        None,
        SETTINGS.replace(seed=3),
        chunk_px=128,
        reference=open_slide(real),
        **kw,
    )


def _level0(slide):
    h, w = slide.level_shapes[0]
    return slide.read_region(0, 0, 0, h, w)


@pytest.fixture(scope="module")
def rendered(real, tmp_path_factory):
    """A twin rendered chunk by chunk in row-major order: ``(slide, level-0 pixels)``."""
    twin = _twin(tmp_path_factory.mktemp("twin") / "twin.cytosyn", real)
    for cy, cx in twin.missing_chunks(0):
        twin.ensure_chunk(0, cy, cx)
    return twin, _level0(twin)


def test_twin_takes_size_layout_and_kind_of_tissue_from_the_real_slide(rendered):
    twin, img = rendered
    assert twin.level_shapes[0] == (192, 256)
    # glass where the real slide has glass, tissue elsewhere
    assert (img[110:, 145:] == 255).all()
    assert (img[:, :120] != 255).any(axis=2).mean() > 0.95
    assert (img[:85, 135:] != 255).any(axis=2).mean() > 0.95
    # pink where the real tissue is pink, purple where it is purple (green channel)
    left = img[:, 10:115].reshape(-1, 3).mean(0)
    right = img[:60, 170:250].reshape(-1, 3).mean(0)
    assert left[1] > right[1] + 30
    assert abs(left[1] - PINK[1]) < 20 and abs(right[1] - PURPLE[1]) < 20


def test_recipe_stores_the_reference_never_its_pixels_and_reopens(real, tmp_path):
    from napari_cytosyn.slide.reference import twin_condition

    path = tmp_path / "twin.cytosyn"
    twin = _twin(path, real)
    ref = twin.metadata()["reference"]
    assert ref["file"] == "two_tissues.tif"
    assert ref["sha256"] == slide_checksum(real)
    lattices = ref["lattices_px"]  # one per lazy phase: cores of 64 px windows (context 2, 2, 1)
    assert len(lattices) == 3 and [v[2] for v in lattices] == [32.0, 32.0, 48.0]
    assert "grid_px" not in ref
    assert ref["encoder"] == "grf-conditional.embed"
    assert len(ref["cells"]) == 3 and 0 < ref["tissue_cells"] < sum(a * b for a, b in ref["cells"])
    json.dumps(ref)  # plain JSON
    group = zarr.open_group(str(path), mode="r")["reference"]
    names = ["embeddings", "embeddings_1", "embeddings_2", "valid", "valid_1", "valid_2"]
    assert sorted(group.array_keys()) == names  # features, not pixels
    assert group["embeddings"].shape == (*ref["cells"][0], 4)
    assert twin.store.attrs["recipe"]["core"]["guidance"] == 1.0
    a = twin.ensure_chunk(0, 1, 1)
    reopened = SyntheticSlide.open(path, model=TwinModel())
    assert reopened.is_done(0, 1, 1)
    b = reopened.ensure_chunk(0, 1, 0)
    fresh = _twin(tmp_path / "fresh.cytosyn", real)
    np.testing.assert_array_equal(fresh.ensure_chunk(0, 1, 0), b)
    np.testing.assert_array_equal(fresh.ensure_chunk(0, 1, 1), a)
    fields = load_fields(zarr.open_group(str(path), mode="r"))
    assert [[f.origin_px[0] % 48, f.origin_px[1] % 48, f.cell_px] for f in fields] == lattices
    assert twin_condition(fields, 8).fingerprint() == ref["field_fingerprint"]


def test_each_window_of_each_phase_is_conditioned_on_its_own_footprint(real, tmp_path):
    from napari_cytosyn.sampling.conditioning import embed_crops
    from napari_cytosyn.sampling.lazy import LazyPlan, MemoryPhaseCache
    from napari_cytosyn.slide.reference import (
        read_model_px,
        slide_tissue_mask,
        tissue_fraction_of_boxes,
        twin_condition,
        twin_size,
    )

    model, slide = TwinModel(), open_slide(real)
    twin = _twin(tmp_path / "twin.cytosyn", real)
    renderer = SyntheticSlide.open(twin.store.path, model=model).renderer()  # as reopened
    cond = renderer.cond
    assert cond.fingerprint() == twin_condition(load_fields(twin.store.root), 8).fingerprint()
    plan = LazyPlan(model, renderer.spec, MemoryPhaseCache())
    h, w = twin_size(slide, model)
    mask = slide_tissue_mask(slide)
    checked = glass = 0
    for ph in plan.phases:
        for i, j in sorted(plan.covering(ph.index, 0, 0, h // 8, w // 8)):
            oy, ox = plan.origin(ph, i, j)
            rect = (oy - ph.context, ox - ph.context, plan.window, plan.window)
            y = min(max(0, rect[0] * 8), h - 64)
            x = min(max(0, rect[1] * 8), w - 64)
            if tissue_fraction_of_boxes(mask, (h, w), [(y, x, y + 64, x + 64)])[0] < 0.5:
                glass += 1  # its condition comes from the tissue windows around it
                continue
            own = embed_crops(model, [read_model_px(slide, model, y, x, 64)])[0]
            np.testing.assert_allclose(cond.for_windows([rect])[0].numpy(), own, atol=1e-6)
            checked += 1
    assert checked >= 30 and glass > 0


def test_twin_chunks_are_bit_identical_in_any_order(real, rendered, tmp_path):
    b = _twin(tmp_path / "b.cytosyn", real)
    for cy, cx in reversed(b.missing_chunks(0)):
        b.ensure_chunk(0, cy, cx)
    np.testing.assert_array_equal(_level0(b), rendered[1])


def test_recreating_a_twin_of_the_same_file_reuses_its_embeddings(real, tmp_path):
    from napari_cytosyn.slide.reference import progress_scope

    path = tmp_path / "twin.cytosyn"
    CountingModel.embedded = 0
    ticks = []
    with progress_scope(lambda done, total: ticks.append((done, total))):
        _twin(path, real, model=CountingModel(tile_px=64))
    first = CountingModel.embedded
    assert first > 0
    assert ticks and ticks[-1] == (first, first)  # progress in embedded cells
    _twin(path, real, model=CountingModel(tile_px=64), overwrite=True)
    assert CountingModel.embedded == first  # cached in the store, keyed by the checksum
    _twin(path, real, model=CountingModel(tile_px=64), overwrite=True, reference_grid_um=64.0)
    assert CountingModel.embedded > first  # another grid: embedded again


def test_the_cli_reopens_a_twin_only_for_the_same_windows_or_grid(real, tmp_path):
    import argparse

    from napari_cytosyn.cli_twin import twin_store

    attrs = _twin(tmp_path / "t.cytosyn", real).store.attrs
    asked = argparse.Namespace(slide=str(real), seed=3, grid_um=None)
    assert twin_store(asked, TwinModel())[0](attrs)  # the default (windows): reopened
    other = argparse.Namespace(slide=str(real), seed=3, grid_um=32.0)
    assert not twin_store(other, TwinModel())[0](attrs)  # a grid: made again
    gridded = _twin(tmp_path / "g.cytosyn", real, reference_grid_um=32.0).store.attrs
    assert gridded["reference"]["grid_px"] == 64 and "lattices_px" not in gridded["reference"]
    assert twin_store(other, TwinModel())[0](gridded)
    assert not twin_store(asked, TwinModel())[0](gridded)


def test_guidance_is_stored_only_where_a_condition_uses_it(real, tmp_path):
    guided = SETTINGS.replace(guidance=2.0, guidance_interval=(0.0, 0.75))
    twin = SyntheticSlide.create(
        tmp_path / "t.cytosyn",
        TwinModel(),
        None,
        None,
        guided.replace(seed=3),
        chunk_px=128,
        reference=real,
    )
    assert twin.store.attrs["recipe"]["core"]["guidance"] == 2.0
    assert twin.store.attrs["recipe"]["core"]["guidance_interval"] == [0.0, 0.75]
    plain = SyntheticSlide.create(
        tmp_path / "p.cytosyn", TwinModel(), 256, 256, guided.replace(seed=3), chunk_px=128
    )
    assert plain.store.attrs["recipe"]["core"]["guidance"] == 1.0
    assert plain.store.attrs["recipe"]["core"]["guidance_interval"] == [0.0, 1.0]
    # reopening with the settings that were asked still matches the stored recipe
    SyntheticSlide.open(tmp_path / "p.cytosyn", settings=guided.replace(seed=3))
    # and guidance acts on the twin: other pixels than unguided
    unguided = _twin(tmp_path / "u.cytosyn", real)
    assert not np.array_equal(twin.ensure_chunk(0, 0, 0), unguided.ensure_chunk(0, 0, 0))


def test_an_unconditional_model_is_told_it_takes_no_reference(real, tmp_path):
    with pytest.raises(ValueError, match="'grf' is unconditional"):
        _twin(tmp_path / "u.cytosyn", real, model=GRFModel())


def test_region_embedding_is_the_mean_over_tissue_crops(real):
    slide = open_slide(real)
    model = TwinModel()
    pink = region_embedding(model, slide, (0, 0, 96, 112))
    purple = region_embedding(model, slide, (0, 136, 80, 112))
    assert np.abs(pink - purple).sum() > 0.5
    with pytest.raises(ValueError, match="holds no tissue"):
        region_embedding(model, slide, (100, 140, 90, 110))
    with pytest.raises(ValueError, match="not inside the slide"):
        region_embedding(model, slide, (150, 200, 100, 100))
    flat = ConditionField.constant(pink)
    np.testing.assert_array_equal(flat.at(1e6, -5.0), pink)


def test_twins_render_bit_identically_on_one_or_two_dask_workers(real, rendered, tmp_path):
    pytest.importorskip("distributed")
    from napari_cytosyn.distributed import close_client, make_client, render_distributed

    expected = rendered[1]
    for workers in (1, 2):
        path = tmp_path / f"dask{workers}.cytosyn"
        _twin(path, real)
        client = make_client(workers=workers)
        try:
            render_distributed(path, model=TwinModel, client=client, group=1)
        finally:
            close_client(client)
        np.testing.assert_array_equal(_level0(SyntheticSlide.open(path, mode="r")), expected)


CONDITIONAL = "py:napari_cytosyn.models.grf:ConditionalGRFModel"


def test_cli_twin_exports_and_resumes_its_store(real, tmp_path, capsys):
    from napari_cytosyn.cli import main

    out, store = tmp_path / "twin.ome.zarr", tmp_path / "twin.cytosyn"
    args = ["twin", str(real), "--model", CONDITIONAL, "--steps", "2", "--grid-um", "32",
            "--chunk-px", "128", "--seed", "4"]  # fmt: skip
    assert main([*args, "--out", str(out), "--store", str(store), "-q"]) == 0
    root = zarr.open_group(str(out), mode="r")
    assert root["0"].shape == (3, 192, 256)
    exported = root.attrs["napari_cytosyn"]["synthetic"]["reference"]
    assert exported["sha256"] == slide_checksum(real) and exported["file"] == "two_tissues.tif"
    twin = SyntheticSlide.open(store, mode="r")
    assert twin.metadata()["reference"]["grid_px"] == 64
    assert twin.metadata()["chunks_done"] == 4
    assert main([*args, "--out", str(store)]) == 0  # the store itself: resumed, nothing to do
    assert "resuming" in capsys.readouterr().err
    assert main([*args[:3], "py:napari_cytosyn.models.grf:GRFModel", *args[4:],
                 "--out", str(tmp_path / "u.cytosyn"), "-q"]) == 1  # fmt: skip
    assert "unconditional" in capsys.readouterr().err


def test_cli_inpaint_reference_options(real, tmp_path):
    import json as _json

    from napari_cytosyn.cli import main
    from napari_cytosyn.cli_twin import parse_xywh

    geo = tmp_path / "mask.geojson"
    square = [[90, 30], [170, 30], [170, 110], [90, 110], [90, 30]]
    feature = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [square]}}
    geo.write_text(_json.dumps({"type": "FeatureCollection", "features": [feature]}))
    base = ["inpaint", str(real), "--mask", str(geo), "--model", CONDITIONAL, "--steps", "2",
            "-q"]  # fmt: skip
    edits = {}
    for name, extra in (("region", ["--reference", "10,0,90,80"]), ("none", ["--no-reference"])):
        out = tmp_path / f"{name}.ome.zarr"
        assert main([*base, *extra, "--guidance", "2", "--out", str(out)]) == 0
        prov = zarr.open_group(str(out), mode="r").attrs["napari_cytosyn"]
        edits[name] = prov["synthetic"]["edits"][0]
    assert edits["region"]["reference"]["region"] == [0, 10, 80, 90]  # (y, x, h, w)
    assert edits["region"]["recipe"]["core"]["guidance"] == 2.0
    assert "reference" not in edits["none"] and edits["none"]["recipe"]["core"]["guidance"] == 1.0
    assert parse_xywh("1,2,3,4") == (2, 1, 4, 3)
    with pytest.raises(ValueError, match="expected x,y,w,h"):
        parse_xywh("1,2,3")


def test_twin_creation_stops_when_cancelled_and_leaves_no_store(real, tmp_path):
    import threading

    from napari_cytosyn.sampling import Cancelled
    from napari_cytosyn.slide.synthetic import cancel_scope

    cancel = threading.Event()
    cancel.set()
    with cancel_scope(cancel), pytest.raises(Cancelled):
        _twin(tmp_path / "c.cytosyn", real)
    assert not (tmp_path / "c.cytosyn").exists()


def test_grid_cells_cut_from_row_bands_equal_cells_read_one_by_one(real, monkeypatch):
    from napari_cytosyn.sampling.conditioning import embed_crops
    from napari_cytosyn.slide import reference

    slide, model = open_slide(real), TwinModel()
    mask = reference.slide_tissue_mask(slide)
    wide = reference.slide_field(model, slide, mask, 64)
    monkeypatch.setattr(reference, "BAND_PX", 64)  # one cell per band
    narrow = reference.slide_field(model, slide, mask, 64)
    np.testing.assert_array_equal(wide.valid, narrow.valid)
    np.testing.assert_allclose(wide.embeddings, narrow.embeddings, rtol=1e-6, atol=1e-7)
    h, w = reference.twin_size(slide, model)
    for i, j in np.argwhere(wide.valid):  # edge cells' crops lie inside the slide
        y, x = min(i * 64, h - 64), min(j * 64, w - 64)
        crop = reference.read_model_px(slide, model, y, x, 64)
        np.testing.assert_allclose(wide.embeddings[i, j], embed_crops(model, [crop])[0], atol=1e-6)


def test_the_embedded_model_is_conditioned_with_its_recommended_guidance():
    """cytosyn-tiny follows its reference's nuclear density and size only with guidance
    (docs/user-guide/twin.md): twins and inpainting from the CLI use the registry's scale and
    interval (3 while t >= 0.3; the 40x model 2 throughout), unless --guidance says otherwise."""
    import argparse

    from napari_cytosyn.cli_twin import guided_settings
    from napari_cytosyn.models import get_info

    for name, scale, interval in (
        ("cytosyn-tiny", 3.0, (0.3, 1.0)),
        ("cytosyn-tiny-40x", 2.0, (0, 1)),
    ):
        got = guided_settings(argparse.Namespace(model=name, guidance=None), SETTINGS, None)
        assert get_info(name).defaults["guidance_conditioned"] == scale == got.guidance
        assert got.guidance_interval == interval
    asked = argparse.Namespace(model="cytosyn-tiny", guidance=1.5)
    assert guided_settings(asked, SETTINGS, None).guidance == 1.5
