"""Bad input gets a clear error that names the file and the reason."""

from __future__ import annotations

import re

import numpy as np
import pytest
import tifffile
import zarr

from napari_cytosyn.slide import SlideReadError, open_slide
from napari_cytosyn.slide.sample import write_pyramidal_tiff


def test_missing_file_raises_file_not_found_naming_it(tmp_path):
    path = tmp_path / "nothere.svs"
    with pytest.raises(FileNotFoundError, match=re.escape(str(path))):
        open_slide(path)


def test_directory_that_is_not_ome_zarr_is_refused(tmp_path):
    (tmp_path / "folder").mkdir()
    with pytest.raises(SlideReadError, match="not an OME-Zarr"):
        open_slide(tmp_path / "folder")


def test_zarr_group_without_multiscales_is_refused(tmp_path):
    zarr.open_group(str(tmp_path / "plain.zarr"), mode="w").create_array(
        "0", shape=(4, 4), dtype=np.uint8
    )
    with pytest.raises(SlideReadError, match="multiscales"):
        open_slide(tmp_path / "plain.zarr")


@pytest.mark.parametrize("name", ["image.png", "notes.txt"])
def test_unsupported_file_is_refused(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(SlideReadError, match=r"unsupported slide format") as info:
        open_slide(path)
    assert str(path) in str(info.value)


def test_vendor_suffix_with_garbage_content_is_refused(tmp_path):
    path = tmp_path / "fake.mrxs"
    path.write_bytes(b"not a slide at all" * 10)
    with pytest.raises(SlideReadError, match=r"fake\.mrxs.*OpenSlide"):
        open_slide(path)


def test_tiff_name_without_tiff_header_is_refused(tmp_path):
    path = tmp_path / "broken.tif"
    path.write_bytes(b"JUNK" * 50)
    with pytest.raises(SlideReadError, match="TIFF header"):
        open_slide(path)


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.svs"
    path.touch()
    with pytest.raises(SlideReadError, match="empty"):
        open_slide(path)


@pytest.mark.parametrize("fixture", ["generic_tiff_slide", "ome_tiff_slide"])
def test_truncated_tiff_is_refused_at_open(request, tmp_path, fixture):
    source = request.getfixturevalue(fixture)
    data = source.read_bytes()
    path = tmp_path / f"cut_{source.name}"
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(SlideReadError, match="truncated") as info:
        open_slide(path)
    assert path.name in str(info.value)


def test_corrupt_tile_data_raises_on_read_naming_file_and_region(tmp_path, slide_levels):
    path = write_pyramidal_tiff(tmp_path / "bad.ome.tif", slide_levels[1:], ome=True)
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        offset, count = int(page.dataoffsets[0]), int(page.databytecounts[0])
    data = bytearray(path.read_bytes())
    data[offset : offset + count] = bytes(count)  # zero the first tile's zlib stream
    path.write_bytes(bytes(data))
    with open_slide(path) as slide:
        np.testing.assert_array_equal(  # other tiles still read
            slide.read_region(0, 300, 300, 10, 10), slide_levels[1][300:310, 300:310]
        )
        with pytest.raises(SlideReadError, match=r"bad\.ome\.tif.*level 0.*corrupt"):
            slide.read_region(0, 0, 0, 10, 10)
        with pytest.raises(SlideReadError, match=r"bad\.ome\.tif"):
            slide.levels[0][:10, :10].compute()


def test_grayscale_tiff_is_refused_as_not_rgb(tmp_path):
    path = tmp_path / "gray.tif"
    tifffile.imwrite(path, np.zeros((64, 64), np.uint8))
    with pytest.raises(SlideReadError, match="not an RGB image"):
        open_slide(path)


def test_16_bit_tiff_is_refused_as_not_uint8(tmp_path):
    path = tmp_path / "deep.tif"
    tifffile.imwrite(path, np.zeros((64, 64, 3), np.uint16), photometric="rgb")
    with pytest.raises(SlideReadError, match=r"uint16.*8-bit"):
        open_slide(path)


def test_ome_zarr_with_four_channels_is_refused(tmp_path):
    root = zarr.open_group(str(tmp_path / "rgba.zarr"), mode="w", zarr_format=2)
    root.create_array("0", shape=(4, 32, 32), dtype=np.uint8)
    root.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [
                {"name": "c", "type": "channel"},
                {"name": "y", "type": "space"},
                {"name": "x", "type": "space"},
            ],
            "datasets": [
                {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 1, 1]}]}
            ],
        }
    ]
    with pytest.raises(SlideReadError, match="4 channels"):
        open_slide(tmp_path / "rgba.zarr")


def test_ome_zarr_float_data_is_refused(tmp_path, slide_levels, ome_zarr_writer):
    path = ome_zarr_writer(tmp_path / "f.zarr", slide_levels[2:])
    root = zarr.open_group(str(path), mode="a")
    root.create_array("0", shape=(3, 8, 8), dtype=np.float32, overwrite=True)
    with pytest.raises(SlideReadError, match="float32"):
        open_slide(path)


def test_read_region_rejects_bad_level_and_negative_size(generic_tiff_slide):
    with open_slide(generic_tiff_slide) as slide:
        with pytest.raises(IndexError, match=r"level 3 out of range 0\.\.2"):
            slide.read_region(3, 0, 0, 4, 4)
        with pytest.raises(ValueError, match="size must be >= 0"):
            slide.read_region(0, 0, 0, -1, 4)
