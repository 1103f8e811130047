"""Tile-copy export: untouched source tiles byte for byte, touched tiles re-encoded, all readers."""

import numpy as np
import openslide
import pytest
import tifffile

from napari_cytosyn.export import export_slide
from napari_cytosyn.export.tile_copy import TileCopyError, write_tiff_copy
from napari_cytosyn.slide import open_slide

from .conftest import ring


@pytest.fixture(scope="module")
def jpeg_inpainted(tmp_path_factory):
    """A composite of a JPEG (YCbCr 4:2:0) pyramidal TIFF, 3 levels, tiles 256 px, one edit."""
    from napari_cytosyn.models.grf import GRFModel
    from napari_cytosyn.sampling import SamplerSettings
    from napari_cytosyn.slide.composite import CompositeSlide
    from napari_cytosyn.slide.sample import write_sample_slide

    folder = tmp_path_factory.mktemp("jpeg-source")
    source = write_sample_slide(
        folder / "case.tif", 1100, 1500, n_levels=3, tile_px=256, compression="jpeg"
    )
    comp = CompositeSlide(source, folder / "edits.zarr", chunk_px=256)
    comp.inpaint(
        (300, 400, 150, 150), ring(150, 150, 0), GRFModel(boundary="periodic"),
        SamplerSettings(steps=4), halo_px=64,
    )  # fmt: skip
    return comp


def _raw_tiles(path, level):
    """Compressed bytes of every tile of a level (tifffile's series 0 levels)."""
    with tifffile.TiffFile(path) as tf:
        page = tf.series[0].levels[level].keyframe
        fh = tf.filehandle
        out = []
        for offset, count in zip(page.dataoffsets, page.databytecounts, strict=True):
            fh.seek(offset)
            out.append(fh.read(count))
        return out, (page.tilelength, page.tilewidth), page.jpegtables


def _touched(mask, tile):
    th, tw = tile
    ny, nx = -(-mask.shape[0] // th), -(-mask.shape[1] // tw)
    return np.array(
        [[mask[y * th : (y + 1) * th, x * tw : (x + 1) * tw].any() for x in range(nx)]
         for y in range(ny)]
    ).ravel()  # fmt: skip


def test_jpeg_source_keeps_untouched_tiles_byte_for_byte_and_reencodes_the_rest(
    tmp_path, jpeg_inpainted
):
    source = jpeg_inpainted.real.path
    out = tmp_path / "case.svs"
    counts = write_tiff_copy(out, jpeg_inpainted, quality=90)
    assert counts["copied"] > 0 and counts["reencoded"] > 0
    for k in range(3):
        src_tiles, tile, _ = _raw_tiles(source, k)
        out_tiles, out_tile, _ = _raw_tiles(out, k)
        assert out_tile == tile
        touched = _touched(jpeg_inpainted.mask_levels[k].compute(), tile)
        assert touched.any() and not touched.all()
        for i, hit in enumerate(touched):
            assert (out_tiles[i] == src_tiles[i]) != hit, f"level {k} tile {i}"
    # decoded: outside touched tiles every pixel is the source's; inside, the composite + JPEG
    with tifffile.TiffFile(source) as a, tifffile.TiffFile(out) as b:
        for k in range(3):
            src = a.series[0].levels[k].asarray()
            got = b.series[0].levels[k].asarray()
            mask = jpeg_inpainted.mask_levels[k].compute()
            th, tw = 256, 256
            untouched = np.ones(mask.shape, bool)
            for y in range(0, mask.shape[0], th):
                for x in range(0, mask.shape[1], tw):
                    if mask[y : y + th, x : x + tw].any():
                        untouched[y : y + th, x : x + tw] = False
            np.testing.assert_array_equal(got[untouched], src[untouched])
            comp = jpeg_inpainted.levels[k].compute().astype(float)
            mse = np.mean((got[mask].astype(float) - comp[mask]) ** 2)
            assert 10 * np.log10(255**2 / mse) > 30
    assert out.stat().st_size < 1.2 * source.stat().st_size
    with openslide.OpenSlide(str(out)) as osl:
        assert osl.level_count == 3
        assert float(osl.properties["openslide.mpp-x"]) == pytest.approx(0.5)
        with openslide.OpenSlide(str(source)) as ref:
            region = np.asarray(osl.read_region((1024, 0), 0, (256, 256)))
            expected = np.asarray(ref.read_region((1024, 0), 0, (256, 256)))
            np.testing.assert_array_equal(region, expected)  # an untouched tile, any decoder


def test_lossless_source_is_bit_identical_everywhere_outside_the_mask(tmp_path, inpainted):
    out = export_slide(inpainted, tmp_path / "case.tif", compression="copy", checksum_source=False)
    exported = open_slide(out)
    assert exported.level_shapes == inpainted.level_shapes
    for k in range(len(inpainted.level_shapes)):
        np.testing.assert_array_equal(exported.levels[k].compute(), inpainted.levels[k].compute())
    with tifffile.TiffFile(out) as tf:
        assert tf.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
    assert (tmp_path / "case.synthetic-mask.tif").is_file()
    assert (tmp_path / "case.synthetic.geojson").is_file()


def test_tile_copy_is_refused_with_the_reason(tmp_path, inpainted, ome_zarr_v04_slide):
    with pytest.raises(ValueError, match=r"\*\.tif / \*\.svs"):
        export_slide(inpainted, tmp_path / "a.ome.tif", compression="copy")
    with pytest.raises(TileCopyError, match="not a TIFF file"):
        write_tiff_copy(tmp_path / "b.tif", open_slide(ome_zarr_v04_slide))
    assert list(tmp_path.iterdir()) == []
