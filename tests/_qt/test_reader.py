"""napari reader: a slide dropped on napari is one multiscale RGB layer at its physical scale."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cytosyn._napari._reader import napari_get_reader, read_slides
from napari_cytosyn.slide import SlideReadError
from napari_cytosyn.slide.sample import write_pyramidal_tiff

PLUGIN = "napari-cytosyn"


def test_reader_declines_paths_it_does_not_claim(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "image.png").write_bytes(b"png")
    assert napari_get_reader(str(tmp_path / "image.png")) is None
    assert napari_get_reader(str(tmp_path / "folder")) is None
    assert napari_get_reader(str(tmp_path / "missing.zarr")) is None  # not a directory
    assert napari_get_reader([str(tmp_path / "a.svs"), str(tmp_path / "image.png")]) is None


def test_reader_claims_slide_endings(tmp_path, ome_zarr_v04_slide):
    for name in (
        "a.svs",
        "b.NDPI",
        "c.mrxs",
        "d.scn",
        "e.bif",
        "f.vms",
        "g.vmu",
        "h.tif",
        "i.tiff",
        "j.ome.tif",
        "k.ome.tiff",
    ):
        assert napari_get_reader(str(tmp_path / name)) is read_slides, name
    assert napari_get_reader(str(ome_zarr_v04_slide)) is read_slides


def test_layer_data_has_physical_scale_and_slide_metadata(generic_tiff_slide, slide_levels):
    [(data, kwargs, layer_type)] = read_slides(str(generic_tiff_slide))
    assert layer_type == "image"
    assert [d.shape for d in data] == [lv.shape for lv in slide_levels]
    assert kwargs["rgb"] is True and kwargs["multiscale"] is True
    assert kwargs["scale"] == pytest.approx((0.5, 0.5))
    assert kwargs["units"] == ("um", "um")
    assert kwargs["contrast_limits"] == (0, 255)
    assert kwargs["name"] == "generic"
    assert kwargs["metadata"]["format"] == "openslide:generic-tiff"
    assert kwargs["metadata"]["mpp_known"] is True


def test_claimed_but_unreadable_file_raises_naming_it(tmp_path):
    path = tmp_path / "broken.svs"
    path.write_bytes(b"II*\x00" + bytes(64))
    reader = napari_get_reader(str(path))
    with pytest.raises(SlideReadError, match=r"broken\.svs"):
        reader(str(path))


def test_viewer_shows_slide_at_physical_scale(
    make_napari_viewer, qtbot, generic_tiff_slide, tmp_path
):
    # Shown, so the canvas has a size and the multiscale layer loads the level the view needs.
    viewer = make_napari_viewer(show=True)
    [layer] = viewer.open(str(generic_tiff_slide), plugin=PLUGIN)
    assert layer.multiscale is True
    assert layer.rgb is True
    assert len(layer.data) == 3
    np.testing.assert_allclose(layer.scale, (0.5, 0.5))
    assert [str(u) for u in layer.units] == ["micrometer", "micrometer"]
    assert layer.metadata["mpp"] == [0.5, 0.5]
    # Pixel centres of the last row/column of level 0 sit at (n - 1) * 0.5 um in world coordinates.
    np.testing.assert_allclose(layer.extent.world[1], ((1104 - 1) * 0.5, (1536 - 1) * 0.5))

    qtbot.waitUntil(lambda: layer.visible, timeout=10_000)  # shown by a step, turns later
    viewer.reset_view()
    qtbot.wait(200)
    assert layer.data_level >= 1  # an overview of the whole slide does not load level 0
    shot = viewer.screenshot(canvas_only=True, flash=False)
    from PIL import Image

    Image.fromarray(shot).save(tmp_path / "viewer.png")
    rgb = shot[..., :3].astype(float)
    assert rgb.std() > 10, "canvas is blank"
    # Tissue (pink stroma, purple nuclei): red and blue well above green.
    tissue = rgb[(rgb[..., 0] - rgb[..., 1]) > 40]
    assert len(tissue) > 0.2 * rgb.shape[0] * rgb.shape[1]
    r, g, b = tissue.mean(axis=0)
    assert r > g + 40 and b > g + 20
    # Glass around the tissue ellipse is near white; napari's canvas background is black.
    glass = rgb[(rgb.min(axis=-1) > 230)]
    assert len(glass) > 0.01 * rgb.shape[0] * rgb.shape[1]


def test_viewer_opens_ome_zarr_directory(make_napari_viewer, ome_zarr_v05_slide):
    viewer = make_napari_viewer()
    [layer] = viewer.open(str(ome_zarr_v05_slide), plugin=PLUGIN)
    assert layer.multiscale is True
    assert layer.name == "v05"
    np.testing.assert_allclose(layer.scale, (0.5, 0.5))
    assert layer.metadata["format"] == "ome-zarr:0.5"


def test_slide_without_mpp_gets_unit_scale_and_a_visible_warning(
    make_napari_viewer, tmp_path, slide_levels
):
    from napari.utils.notifications import notification_manager

    path = write_pyramidal_tiff(tmp_path / "nompp.tif", slide_levels[1:], mpp=None)
    viewer = make_napari_viewer()
    before = len(notification_manager.records)
    [layer] = viewer.open(str(path), plugin=PLUGIN)
    np.testing.assert_allclose(layer.scale, (1.0, 1.0))
    assert layer.metadata["mpp_known"] is False
    new = [str(n.message) for n in notification_manager.records[before:]]
    assert any("nompp.tif" in m and "pixel size" in m for m in new), new
