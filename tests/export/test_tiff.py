"""SVS-layout pyramidal TIFF: all levels and the mpp in tifffile, OpenSlide, tiffslide, libvips."""

import json

import numpy as np
import openslide
import pytest
import tifffile

from napari_cytosyn.chunk_grid import downsample_area
from napari_cytosyn.export import export_slide, sidecar_paths, write_tiff
from napari_cytosyn.export.tiff import read_svs_provenance
from napari_cytosyn.slide import open_slide


def _openslide_level(path, level):
    with openslide.OpenSlide(str(path)) as osl:
        w, h = osl.level_dimensions[level]
        return np.asarray(osl.read_region((0, 0), level, (w, h)))[..., :3]


def test_given_pyramid_round_trips_through_every_reader_with_all_levels_and_mpp(
    tmp_path, slide_levels
):
    tiffslide = pytest.importorskip("tiffslide")
    out = write_tiff(
        tmp_path / "copy.svs", slide_levels, mpp=0.25, objective_power=40,
        provenance={"seed": 3, "note": "a|b"}, compression="deflate", tile_px=256,
    )  # fmt: skip
    shapes = [lv.shape for lv in slide_levels]  # downsample 1, 2, 6: kept, not re-made
    with tifffile.TiffFile(out) as tf:
        assert tf.is_svs and tf.is_bigtiff
        assert [lv.shape for lv in tf.series[0].levels] == shapes
        assert [s.name for s in tf.series] == ["Baseline", "Thumbnail", "Label", "Macro"]
        # what Bio-Formats' SVS reader needs to see one 3-level pyramid: an Aperio description
        # on every page, a stripped thumbnail smaller than the coarsest level, label + macro last
        assert all(p.description.startswith("Aperio Image Library") for p in tf.pages)
        assert not tf.pages[1].is_tiled
        assert max(tf.series[1].shape[:2]) < max(shapes[-1][:2])
        assert "label" in tf.pages[-2].description and "macro" in tf.pages[-1].description
        for k, level in enumerate(tf.series[0].levels):
            np.testing.assert_array_equal(level.asarray(), slide_levels[k])
            page = level.keyframe
            assert page.is_tiled and (page.tilelength, page.tilewidth) == (256, 256)
            assert not page.is_reduced  # Aperio levels are NewSubfileType 0
            ppcm = 1e4 / (0.25 * slide_levels[0].shape[1] / shapes[k][1])
            assert page.get_resolution(tifffile.RESUNIT.CENTIMETER)[0] == pytest.approx(ppcm)
        assert read_svs_provenance(tf.pages[0].description) == {"seed": 3, "note": "a|b"}
    with openslide.OpenSlide(str(out)) as osl:
        assert osl.properties["openslide.vendor"] == "aperio"
        assert osl.level_count == 3
        assert osl.level_dimensions == tuple((s[1], s[0]) for s in shapes)
        assert float(osl.properties["openslide.mpp-x"]) == pytest.approx(0.25)
        assert float(osl.properties["openslide.mpp-y"]) == pytest.approx(0.25)
        assert osl.properties["openslide.objective-power"] == "40"
        assert json.loads(osl.properties["aperio.napari_cytosyn"])["note"] == "a|b"
        assert set(osl.associated_images) == {"thumbnail", "label", "macro"}
    for k in range(3):
        np.testing.assert_array_equal(_openslide_level(out, k), slide_levels[k])
    with tiffslide.TiffSlide(out) as ts:
        assert ts.level_count == 3
        assert float(ts.properties["tiffslide.mpp-x"]) == pytest.approx(0.25)
        h, w = shapes[2][:2]
        region = np.asarray(ts.read_region((0, 0), 2, (w, h), as_array=True))[..., :3]
        np.testing.assert_array_equal(region, slide_levels[2])
    slide = open_slide(out)
    assert slide.format == "openslide:aperio"
    assert slide.level_shapes == [s[:2] for s in shapes]
    assert (slide.mpp.x, slide.mpp.y) == pytest.approx((0.25, 0.25))
    for k in (0, 1, 2):
        np.testing.assert_array_equal(slide.levels[k].compute(), slide_levels[k])


def test_single_level_gets_a_built_pyramid_and_jpeg_stays_close(tmp_path, image):
    out = write_tiff(tmp_path / "s.tif", [image], mpp=0.5, tile_px=256, quality=95)
    with tifffile.TiffFile(out) as tf:
        assert tf.pages[0].compression == tifffile.COMPRESSION.JPEG
        levels = tf.series[0].levels
        assert [lv.shape for lv in levels] == [(700, 900, 3), (350, 450, 3), (175, 225, 3)]
        back = levels[1].asarray().astype(np.float64)
    mse = np.mean((back - downsample_area(image, 2)) ** 2)
    assert 10 * np.log10(255**2 / mse) > 35
    with openslide.OpenSlide(str(out)) as osl:
        assert osl.level_count == 3
        assert float(osl.properties["openslide.mpp-x"]) == pytest.approx(0.5)


def test_inpainted_slide_keeps_the_source_levels_and_is_bit_identical_outside_the_mask(
    tmp_path, inpainted
):
    out = export_slide(inpainted, tmp_path / "case.svs", checksum_source=False)  # lossless
    real = open_slide(inpainted.real.path)
    exported = open_slide(out)
    assert exported.level_shapes == real.level_shapes  # downsample 1, 2, 6 as in the source
    for k in range(real.n_levels):
        mask = inpainted.mask_levels[k].compute()
        assert mask.any()
        got = exported.levels[k].compute()
        np.testing.assert_array_equal(got[~mask], real.levels[k].compute()[~mask])
        np.testing.assert_array_equal(got, inpainted.levels[k].compute())
    with tifffile.TiffFile(out) as tf:
        assert tf.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        assert tf.series[0].shape[-1] == 3  # the mask is not in the file
        assert [s.name for s in tf.series] == ["Baseline", "Thumbnail", "Label", "Macro"]
    mask_tif, geojson = sidecar_paths(out)
    assert mask_tif.name == "case.synthetic-mask.tif" and geojson.name == "case.synthetic.geojson"
    with tifffile.TiffFile(mask_tif) as tf:
        for k, level in enumerate(tf.series[0].levels):
            expected = inpainted.mask_levels[k].compute().astype(np.uint8) * 255
            np.testing.assert_array_equal(level.asarray(), expected)
    with openslide.OpenSlide(str(mask_tif)) as osl:
        assert osl.level_count == real.n_levels
        assert float(osl.properties["openslide.mpp-x"]) == pytest.approx(real.mpp.x)


def test_geojson_holds_the_synthetic_regions_as_qupath_annotations(tmp_path, inpainted):
    from skimage.draw import polygon as fill_polygon

    out = export_slide(inpainted, tmp_path / "case.tif", checksum_source=False)
    collection = json.loads(sidecar_paths(out)[1].read_text())
    assert collection["type"] == "FeatureCollection"
    features = collection["features"]
    assert len(features) == 2  # the disc and the ring
    h, w = inpainted.level_shapes[0]
    drawn = np.zeros((h, w), bool)
    holes = 0
    for feature in features:
        props = feature["properties"]
        assert props["objectType"] == "annotation"
        assert props["classification"] == {"name": "Synthetic", "color": [255, 0, 255]}
        assert feature["geometry"]["type"] == "Polygon"
        outer, *inner = feature["geometry"]["coordinates"]
        assert outer[0] == outer[-1]
        holes += len(inner)
        for ring, value in [(outer, True)] + [(r, False) for r in inner]:
            xy = np.asarray(ring)
            rr, cc = fill_polygon(xy[:, 1] - 0.5, xy[:, 0] - 0.5, (h, w))
            drawn[rr, cc] = value
    assert holes == 1  # the ring's hole
    mask = inpainted.mask_levels[0].compute()
    iou = (drawn & mask).sum() / (drawn | mask).sum()
    assert iou > 0.97


def test_format_is_chosen_by_suffix_or_flag_and_contradictions_are_refused(tmp_path, image):
    from napari_cytosyn.export import output_format

    assert output_format("a.svs") == output_format("a.tif") == "tiff"
    assert output_format("a.ome.tif") == "ome-tiff"
    assert output_format("a.out", "tiff") == "tiff"
    with pytest.raises(ValueError, match="names a ome-tiff file"):
        output_format("a.ome.tif", "tiff")
    with pytest.raises(ValueError, match="cannot tell"):
        output_format("a.png")


def test_cli_exports_a_slide_as_svs_layout_tiff_with_format_flag(
    tmp_path, generic_tiff_slide, capsys
):
    from napari_cytosyn.cli import main

    out = tmp_path / "case.pyr"
    status = main(
        ["export", str(generic_tiff_slide), "--out", str(out), "--format", "tiff", "-q",
         "--compression", "deflate"]
    )  # fmt: skip
    assert status == 0
    with openslide.OpenSlide(str(out)) as osl:
        assert osl.level_count == 3
        assert float(osl.properties["openslide.mpp-x"]) == pytest.approx(0.5)
    np.testing.assert_array_equal(
        _openslide_level(out, 2), open_slide(generic_tiff_slide).levels[2].compute()
    )
    capsys.readouterr()
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["provenance"]["source"]["name"] == "generic.tif"
    assert len(info["level_shapes"]) == 3 and info["mpp"] == [0.5, 0.5]


def test_libvips_reads_every_level_as_its_own_page(tmp_path, slide_levels):
    pyvips = pytest.importorskip("pyvips")
    out = write_tiff(tmp_path / "v.tif", slide_levels, mpp=0.5, compression="deflate", tile_px=256)
    base = pyvips.Image.new_from_file(str(out))
    assert base.get("n-pages") == 6  # level 0, thumbnail, level 1, level 2, label, macro
    assert (base.width, base.height) == (1536, 1104)
    assert base.xres == pytest.approx(1e3 / 0.5)  # libvips: pixels per millimetre
    for page, k in ((2, 1), (3, 2)):
        level = pyvips.Image.new_from_file(str(out), page=page)
        got = np.ndarray(
            buffer=level.write_to_memory(), dtype=np.uint8,
            shape=(level.height, level.width, level.bands),
        )  # fmt: skip
        np.testing.assert_array_equal(got, slide_levels[k])
