"""napari writer contributions: image layers saved through napari's plugin machinery."""

import numpy as np
import pytest
import tifffile
import zarr

napari = pytest.importorskip("napari")


@pytest.fixture(autouse=True)
def _plugins_discovered():
    """What the napari app does at start-up: register installed plugin manifests."""
    from npe2 import PluginManager

    PluginManager.instance().discover()


def test_multiscale_rgb_layer_saves_as_ome_zarr_with_mpp_and_provenance(tmp_path, image):
    from napari.layers import Image

    level1 = image[::2, ::2].copy()
    layer = Image(
        [image, level1],
        multiscale=True,
        rgb=True,
        name="synthetic",
        metadata={"mpp": 0.25, "provenance": {"seed": 5}},
    )
    out = tmp_path / "saved.ome.zarr"
    written = napari.save_layers(str(out), [layer], plugin="napari-cytosyn")
    assert [str(p) for p in written] == [str(out)]
    root = zarr.open_group(str(out), mode="r")
    np.testing.assert_array_equal(np.moveaxis(root["0"][:], 0, -1), image)
    np.testing.assert_array_equal(np.moveaxis(root["1"][:], 0, -1), level1)
    scale0 = root.attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]
    assert scale0["scale"] == [1.0, 0.25, 0.25]
    assert root.attrs["napari_cytosyn"] == {"seed": 5}


def test_single_scale_layer_with_micrometre_units_saves_as_pyramidal_ome_tiff(tmp_path, image):
    from napari.layers import Image

    layer = Image(image, rgb=True, scale=(0.5, 0.5), units=("micrometer", "micrometer"))
    out = tmp_path / "saved.ome.tif"
    napari.save_layers(str(out), [layer], plugin="napari-cytosyn")
    with tifffile.TiffFile(out) as tf:
        levels = tf.series[0].levels
        assert len(levels) >= 2
        assert 'PhysicalSizeX="0.5"' in tf.ome_metadata
        back = levels[0].asarray().astype(float)
    assert np.abs(back - image).mean() < 3  # JPEG


def test_non_uint8_layer_is_refused_with_a_reason(tmp_path):
    from napari.layers import Image

    layer = Image(np.zeros((64, 64), np.float32))
    with pytest.raises(TypeError, match="8-bit"):
        napari.save_layers(str(tmp_path / "x.ome.zarr"), [layer], plugin="napari-cytosyn")


def test_slide_opened_in_the_viewer_saves_with_its_scale_and_source_checksum(
    make_napari_viewer, generic_tiff_slide, slide_levels, tmp_path
):
    from napari_cytosyn.export import file_sha256

    viewer = make_napari_viewer()
    [layer] = viewer.open(str(generic_tiff_slide), plugin="napari-cytosyn")
    assert layer.multiscale
    out = tmp_path / "copy.ome.zarr"
    viewer.layers.save(str(out), selected=False, plugin="napari-cytosyn")
    root = zarr.open_group(str(out), mode="r")
    assert sorted(root.array_keys()) == ["0", "1", "2"]  # the slide's own pyramid
    np.testing.assert_array_equal(np.moveaxis(root["0"][...], 0, -1), slide_levels[0])
    scale0 = root.attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]
    assert scale0["scale"] == [1.0, 0.5, 0.5]
    assert root.attrs["napari_cytosyn"]["source"]["sha256"] == file_sha256(generic_tiff_slide)


def test_layer_saved_as_svs_opens_in_openslide_with_every_level(tmp_path, image):
    import openslide
    from napari.layers import Image

    layer = Image([image, image[::2, ::2].copy()], multiscale=True, rgb=True, metadata={"mpp": 0.5})
    out = tmp_path / "saved.svs"
    written = napari.save_layers(str(out), [layer], plugin="napari-cytosyn")
    assert [str(p) for p in written] == [str(out)]
    with openslide.OpenSlide(str(out)) as osl:
        assert osl.level_dimensions == ((900, 700), (450, 350))
        assert float(osl.properties["openslide.mpp-x"]) == 0.5


def test_region_layer_saves_as_a_synthetic_image_with_its_provenance(tmp_path, image):
    from napari.layers import Image

    prov = {"seed": 4, "synthetic": {"kind": "region", "fully_synthetic": True}}
    layer = Image(
        image,
        rgb=True,
        name="synthesized region 1",
        metadata={"mpp": [0.5, 0.5], "provenance": prov, "cytosyn": {"kind": "region"}},
    )
    out = tmp_path / "region.svs"
    napari.save_layers(str(out), [layer], plugin="napari-cytosyn")
    with tifffile.TiffFile(out) as tf:
        assert tf.pages[0].compression == tifffile.COMPRESSION.JPEG
        assert '"seed": 4' in tf.pages[0].description
    assert not (tmp_path / "region.synthetic-mask.tif").exists()  # every pixel synthetic
