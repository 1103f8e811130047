"""Pyramidal OME-TIFF writer: tiling, SubIFD levels, physical size, readers agree on pixels."""

import json

import dask.array as da
import numpy as np
import pytest
import tifffile

from napari_cytosyn.chunk_grid import downsample_area
from napari_cytosyn.export import build_provenance, write_ome_tiff


def test_lossless_ome_tiff_round_trips_pixel_exact_with_subifd_pyramid(tmp_path, image, mask):
    prov = build_provenance(model="grf", seed=11)
    out = write_ome_tiff(
        tmp_path / "s.ome.tif",
        [da.from_array(image, chunks=(256, 256, 3))],
        mpp=0.5,
        mask_levels=[mask],
        mask="ome-image",
        provenance=prov,
        compression="deflate",
    )
    with tifffile.TiffFile(out) as tf:
        assert tf.is_ome and tf.is_bigtiff
        image_series, mask_series = tf.series
        # source chunks of 256 px are used as the TIFF tile; pyramid halves down to <= 256 px
        assert [lv.shape for lv in image_series.levels] == [
            (700, 900, 3),
            (350, 450, 3),
            (175, 225, 3),
        ]
        page0 = tf.pages[0]
        assert page0.is_tiled and (page0.tilelength, page0.tilewidth) == (256, 256)
        assert page0.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        assert len(page0.subifds) == 2
        np.testing.assert_array_equal(image_series.levels[0].asarray(), image)
        np.testing.assert_array_equal(image_series.levels[1].asarray(), downsample_area(image, 2))
        assert mask_series.name == "synthetic mask"
        np.testing.assert_array_equal(mask_series.levels[0].asarray(), mask.astype(np.uint8))
        # 0.5 um/px -> 20000 px/cm at level 0, 10000 px/cm at level 1
        assert page0.get_resolution(tifffile.RESUNIT.CENTIMETER) == pytest.approx((20000, 20000))
        level1 = image_series.levels[1].pages[0]
        assert level1.get_resolution(tifffile.RESUNIT.CENTIMETER) == pytest.approx((10000, 10000))
        xml = tf.ome_metadata
    assert 'PhysicalSizeX="0.5"' in xml and 'PhysicalSizeXUnit="µm"' in xml
    meta = tifffile.xml2dict(xml)["OME"]["Image"][0]
    assert json.loads(meta["Description"])["seed"] == 11


def test_jpeg_ome_tiff_is_close_to_the_source(tmp_path, image):
    out = write_ome_tiff(tmp_path / "s.ome.tif", [image], mpp=0.5, compression="jpeg", quality=95)
    with tifffile.TiffFile(out) as tf:
        assert tf.pages[0].compression == tifffile.COMPRESSION.JPEG
        back = tf.series[0].levels[0].asarray().astype(np.float64)
    mse = np.mean((back - image) ** 2)
    assert 10 * np.log10(255**2 / mse) > 35  # PSNR in dB


def test_ome_tiff_is_read_by_our_reader_and_openslide(tmp_path, image):
    import openslide

    from napari_cytosyn.slide import open_slide

    out = write_ome_tiff(tmp_path / "s.ome.tif", [image], mpp=0.5, compression="zlib", tile_px=256)
    slide = open_slide(out)
    assert (slide.mpp.x, slide.mpp.y) == pytest.approx((0.5, 0.5))
    assert slide.level_shapes[:2] == [(700, 900), (350, 450)]
    np.testing.assert_array_equal(slide.read_region(0, 0, 0, 700, 900), image)
    np.testing.assert_array_equal(
        slide.read_region(1, 5, 7, 100, 120), downsample_area(image, 2)[5:105, 7:127]
    )
    with openslide.OpenSlide(str(out)) as osl:
        assert float(osl.properties["openslide.mpp-x"]) == pytest.approx(0.5)
        region = np.asarray(osl.read_region((0, 0), 0, (900, 700)))[..., :3]
    np.testing.assert_array_equal(region, image)


def test_ome_tiff_refuses_existing_output_and_bad_settings(tmp_path, image):
    path = tmp_path / "s.ome.tif"
    path.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="overwrite"):
        write_ome_tiff(path, [image])
    with pytest.raises(ValueError, match="compression"):
        write_ome_tiff(tmp_path / "b.ome.tif", [image], compression="webp2")
    with pytest.raises(ValueError, match="multiple of 16"):
        write_ome_tiff(tmp_path / "b.ome.tif", [image], tile_px=100)
    assert path.read_bytes() == b"keep me"
    write_ome_tiff(path, [image], overwrite=True, compression="zlib")
    with tifffile.TiffFile(path) as tf:
        np.testing.assert_array_equal(tf.series[0].asarray(), image)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.ome.tif"]


def _large_image_pick(xml: str, tile_px: int) -> dict[int, str]:
    """The OME image that large_image's OME-TIFF source shows at each level.

    It files the OME Images with as many TiffData as the first by level
    ``ceil(log2(max(SizeX, SizeY) / tile))`` in a dict, so the last image of a size wins.
    """
    images = tifffile.xml2dict(xml)["OME"]["Image"]
    images = images if isinstance(images, list) else [images]

    def n_tiffdata(image):
        td = image["Pixels"].get("TiffData", [])
        return len(td) if isinstance(td, list) else 1

    first = n_tiffdata(images[0])
    picked = {}
    for image in images:
        if n_tiffdata(image) != first:
            continue
        px = image["Pixels"]
        ratio = max(px["SizeX"] / tile_px, px["SizeY"] / tile_px)
        picked[max(0, int(np.ceil(np.log2(ratio))))] = image["Name"]
    return picked


def test_inpainted_ome_tiff_holds_only_the_tissue_so_large_image_shows_it(tmp_path, inpainted):
    from napari_cytosyn.export import export_slide, sidecar_paths

    out = export_slide(inpainted, tmp_path / "case.ome.tif", checksum_source=False)
    with tifffile.TiffFile(out) as tf:
        assert len(tf.series) == 1 and tf.series[0].shape[-1] == 3
        assert tf.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE  # lossless default
        assert set(_large_image_pick(tf.ome_metadata, 256).values()) == {"generic (edited)"}
        real = inpainted.real
        for k in range(real.n_levels):
            mask = inpainted.mask_levels[k].compute()
            got = tf.series[0].levels[k].asarray()
            np.testing.assert_array_equal(got[~mask], real.levels[k].compute()[~mask])
    mask_tif, geojson = sidecar_paths(out)
    assert mask_tif.name == "case.synthetic-mask.tif" and geojson.is_file()
    with tifffile.TiffFile(mask_tif) as tf:
        np.testing.assert_array_equal(
            tf.series[0].levels[1].asarray() != 0, inpainted.mask_levels[1].compute()
        )


def test_mask_kept_as_second_ome_image_is_what_large_image_would_show(tmp_path, inpainted):
    """The documented limit of ``mask="ome-image"``: one file, but large_image shows the mask."""
    from napari_cytosyn.export import export_slide, sidecar_paths

    out = export_slide(inpainted, tmp_path / "one.ome.tif", mask="ome-image", checksum_source=False)
    assert not any(p.exists() for p in sidecar_paths(out))
    with tifffile.TiffFile(out) as tf:
        image, mask = tf.series
        assert image.shape[-1] == 3
        assert mask.name == "synthetic mask"
        np.testing.assert_array_equal(
            mask.levels[0].asarray(), inpainted.mask_levels[0].compute().astype(np.uint8)
        )
        assert set(_large_image_pick(tf.ome_metadata, 256).values()) == {"synthetic mask"}


def test_a_pyramid_with_a_mask_is_lossless_unless_asked_otherwise(tmp_path, image, mask):
    """Writers called without a compression (napari's Export button) keep real tissue exact."""
    out = write_ome_tiff(tmp_path / "m.ome.tif", [image], mpp=0.5, mask_levels=[mask])
    with tifffile.TiffFile(out) as tf:
        assert tf.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        np.testing.assert_array_equal(tf.series[0].levels[0].asarray(), image)
    out = write_ome_tiff(tmp_path / "n.ome.tif", [image], mpp=0.5)
    with tifffile.TiffFile(out) as tf:
        assert tf.pages[0].compression == tifffile.COMPRESSION.JPEG
