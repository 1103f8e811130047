"""OME-Zarr writer: NGFF 0.4/0.5 validity, pixel-exact round trips, atomicity, bounded reads."""

import threading

import dask.array as da
import numpy as np
import pytest
import zarr

from napari_cytosyn.chunk_grid import downsample_area
from napari_cytosyn.export import build_provenance, write_ome_zarr


def _ome(group: zarr.Group) -> dict:
    attrs = group.attrs.asdict()
    return attrs.get("ome", attrs)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_validates_with_ome_zarr_models(tmp_path, image, mask, version):
    import ome_zarr_models
    from ome_zarr_models import v04, v05

    out = write_ome_zarr(
        tmp_path / "s.ome.zarr",
        [da.from_array(image, chunks=(256, 256, 3))],
        mpp=0.5,
        mask_levels=[mask],
        version=version,
        chunk_px=128,
    )
    root = zarr.open_group(str(out), mode="r")
    assert root.metadata.zarr_format == (2 if version == "0.4" else 3)
    mod = v04 if version == "0.4" else v05
    assert isinstance(ome_zarr_models.open_ome_zarr(root), mod.image.Image)
    assert isinstance(ome_zarr_models.open_ome_zarr(root["labels"]), mod.labels.Labels)
    label = ome_zarr_models.open_ome_zarr(root["labels/synthetic"])
    assert isinstance(label, mod.image_label.ImageLabel)


@pytest.mark.parametrize("version", ["0.4", "0.5"])
def test_ome_zarr_round_trip_is_pixel_exact_with_box_mean_pyramid(tmp_path, image, mask, version):
    prov = build_provenance(model={"name": "grf", "revision": "abc"}, seed=7, sampler={"steps": 4})
    out = write_ome_zarr(
        tmp_path / "s.ome.zarr",
        [image],
        mpp=(0.5, 0.25),
        mask_levels=[mask],
        provenance=prov,
        version=version,
        chunk_px=128,
    )
    root = zarr.open_group(str(out), mode="r")
    ome = _ome(root)
    datasets = ome["multiscales"][0]["datasets"]
    # 700x900 halves to <= 128 px: 350x450, 175x225, 88x113
    assert [root[d["path"]].shape for d in datasets] == [
        (3, 700, 900),
        (3, 350, 450),
        (3, 175, 225),
        (3, 88, 113),
    ]
    np.testing.assert_array_equal(np.moveaxis(root["0"][:], 0, -1), image)
    np.testing.assert_array_equal(np.moveaxis(root["1"][:], 0, -1), downsample_area(image, 2))
    # y scale 0.25, x scale 0.5 at level 0; level 2 is 4x with a half-pixel-centre translation
    assert datasets[0]["coordinateTransformations"] == [
        {"type": "scale", "scale": [1.0, 0.25, 0.5]}
    ]
    assert datasets[2]["coordinateTransformations"][0]["scale"] == [1.0, 1.0, 2.0]
    assert datasets[2]["coordinateTransformations"][1]["translation"] == [0.0, 0.375, 0.75]
    assert [a.get("unit") for a in ome["multiscales"][0]["axes"]] == [
        None,
        "micrometer",
        "micrometer",
    ]
    assert [c["color"] for c in ome["omero"]["channels"]] == ["FF0000", "00FF00", "0000FF"]
    assert root.attrs["napari_cytosyn"]["seed"] == 7
    assert root.attrs["napari_cytosyn"]["model"] == {"name": "grf", "revision": "abc"}
    labels = root["labels/synthetic"]
    np.testing.assert_array_equal(labels["0"][0], mask.astype(np.uint8))
    # a coarse pixel is synthetic when any child is (2x2 max)
    np.testing.assert_array_equal(labels["1"][0], downsample_area(mask.astype(np.uint8), 2, "max"))
    assert _ome(labels)["image-label"]["properties"] == [{"label-value": 1, "class": "synthetic"}]


def test_ome_zarr_is_read_by_ome_zarr_py_and_our_reader(tmp_path, image):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    from napari_cytosyn.slide import open_slide

    out = write_ome_zarr(tmp_path / "s.ome.zarr", [image], mpp=0.5, chunk_px=256)
    nodes = list(Reader(parse_url(str(out)))())
    level0 = np.asarray(nodes[0].data[0])
    np.testing.assert_array_equal(np.moveaxis(level0, 0, -1), image)

    slide = open_slide(out)
    assert (slide.mpp.x, slide.mpp.y) == pytest.approx((0.5, 0.5))
    assert slide.level_shapes[0] == (700, 900)
    np.testing.assert_array_equal(slide.read_region(0, 0, 0, 700, 900), image)
    np.testing.assert_array_equal(
        slide.read_region(1, 10, 20, 30, 40), downsample_area(image, 2)[10:40, 20:60]
    )


def test_given_pyramid_levels_are_written_as_given(tmp_path, image):
    level1 = np.full((350, 450, 3), 17, np.uint8)  # deliberately not a downsample of level 0
    out = write_ome_zarr(tmp_path / "s.ome.zarr", [image, level1], mpp=0.5, chunk_px=128)
    root = zarr.open_group(str(out), mode="r")
    assert sorted(root.array_keys()) == ["0", "1"]
    assert (root["1"][:] == 17).all()


def test_existing_output_is_refused_without_overwrite_and_replaced_with_it(tmp_path, image):
    path = tmp_path / "s.ome.zarr"
    write_ome_zarr(path, [image], chunk_px=256)
    with pytest.raises(FileExistsError, match="overwrite"):
        write_ome_zarr(path, [image[::2, ::2]], chunk_px=256)
    assert zarr.open_group(str(path), mode="r")["0"].shape == (3, 700, 900)
    write_ome_zarr(path, [image[::2, ::2]], chunk_px=256, overwrite=True)
    assert zarr.open_group(str(path), mode="r")["0"].shape == (3, 350, 450)
    assert [p.name for p in tmp_path.iterdir()] == ["s.ome.zarr"]  # no temporary leftovers


def test_cancelled_export_leaves_previous_output_untouched(tmp_path, image):
    path = tmp_path / "s.ome.zarr"
    write_ome_zarr(path, [image], chunk_px=256)
    cancel = threading.Event()

    def progress(done, total):
        if done >= 3:
            cancel.set()

    with pytest.raises(Exception, match="cancelled"):
        write_ome_zarr(
            path, [np.zeros_like(image)], chunk_px=128, overwrite=True, progress=progress,
            cancel=cancel, workers=1,
        )  # fmt: skip
    np.testing.assert_array_equal(np.moveaxis(zarr.open_group(str(path))["0"][:], 0, -1), image)
    assert [p.name for p in tmp_path.iterdir()] == ["s.ome.zarr"]


class _CountingSource:
    """A (y, x, 3) array that records the largest read and the most concurrent reads."""

    def __init__(self, image):
        self.image, self.shape, self.dtype = image, image.shape, image.dtype
        self.lock = threading.Lock()
        self.active = self.max_active = self.max_px = 0

    def __getitem__(self, key):
        with self.lock:
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        block = self.image[key]
        with self.lock:
            self.max_px = max(self.max_px, block.shape[0] * block.shape[1])
            self.active -= 1
        return block


def test_writer_reads_the_source_block_by_block(tmp_path, he_like):
    image = he_like(1100, 1300)
    source = _CountingSource(image)
    done = []
    out = write_ome_zarr(
        tmp_path / "s.ome.zarr", [source], chunk_px=128, workers=2,
        progress=lambda d, t: done.append((d, t)),
    )  # fmt: skip
    assert source.max_px <= 128 * 128
    assert source.max_active <= 2
    np.testing.assert_array_equal(np.moveaxis(zarr.open_group(str(out))["0"][:], 0, -1), image)
    assert done[-1][0] == done[-1][1]
    assert [d for d, _ in done] == sorted(d for d, _ in done)


def test_bad_input_is_rejected_before_anything_is_written(tmp_path, image):
    with pytest.raises(ValueError, match=r"\(y, x, 3\) uint8"):
        write_ome_zarr(tmp_path / "a.ome.zarr", [image.astype(np.float32)])
    with pytest.raises(ValueError, match="mask level 0"):
        write_ome_zarr(tmp_path / "a.ome.zarr", [image], mask_levels=[np.zeros((5, 5), bool)])
    with pytest.raises(ValueError, match="NGFF version"):
        write_ome_zarr(tmp_path / "a.ome.zarr", [image], version="0.3")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_ome_zarr(tmp_path / "missing" / "a.ome.zarr", [image])
    assert list(tmp_path.iterdir()) == []


def test_sharded_ngff_05_is_written_through_zarr_and_read_back_exactly(tmp_path, he_like):
    import ome_zarr_models
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    image = he_like(600, 1100)
    out = write_ome_zarr(
        tmp_path / "s.ome.zarr", [image], mpp=0.5, version="0.5", chunk_px=64, shards=256
    )
    root = zarr.open_group(str(out), mode="r")
    assert root["0"].chunks == (3, 64, 64) and root["0"].shards == (3, 256, 256)
    assert ome_zarr_models.open_ome_zarr(root) is not None
    np.testing.assert_array_equal(np.moveaxis(root["0"][:], 0, -1), image)
    np.testing.assert_array_equal(np.moveaxis(root["1"][:], 0, -1), downsample_area(image, 2))
    assert (out / "0" / "c" / "0" / "0" / "0").is_file()  # one shard file
    assert not (out / "0" / "c" / "0" / "3").exists()  # not one file per 64 px chunk
    nodes = list(Reader(parse_url(str(out)))())
    np.testing.assert_array_equal(np.moveaxis(np.asarray(nodes[0].data[0]), 0, -1), image)
    # "auto" shards only arrays of more than 256 chunks; 0.4 (zarr v2) has no sharding
    small = write_ome_zarr(tmp_path / "a.ome.zarr", [image], version="0.5", chunk_px=64)
    assert zarr.open_group(str(small), mode="r")["0"].shards is None
    with pytest.raises(ValueError, match=r"sharding needs NGFF 0\.5"):
        write_ome_zarr(tmp_path / "b.ome.zarr", [image], version="0.4", shards=256)


def test_inpainted_slide_exports_with_truthful_method_named_label_and_slide_name(
    tmp_path, inpainted
):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    from napari_cytosyn.export import export_slide

    out = export_slide(inpainted, tmp_path / "out.ome.zarr", checksum_source=False)
    root = zarr.open_group(str(out), mode="r")
    ms = _ome(root)["multiscales"][0]
    assert ms["name"] == _ome(root)["omero"]["name"] == "generic (edited)"
    assert "source slide's own levels" in ms["metadata"]["method"]
    assert "box mean" not in ms["metadata"]["method"]
    assert [root[str(k)].shape[1:] for k in range(3)] == inpainted.level_shapes
    assert _ome(root)["omero"]["rdefs"]["model"] == "color"
    for k in range(3):
        mask = inpainted.mask_levels[k].compute()
        np.testing.assert_array_equal(root[f"labels/synthetic/{k}"][0], mask.astype(np.uint8))
        got = np.moveaxis(root[str(k)][:], 0, -1)
        np.testing.assert_array_equal(got[~mask], inpainted.real.levels[k].compute()[~mask])
    names = {n.metadata.get("name") for n in Reader(parse_url(str(out)))()}
    assert "synthetic" in names and not any("labels/" in str(n) for n in names)


def test_synthetic_store_exports_under_the_slide_name_not_the_folder(tmp_path):
    from napari_cytosyn.export import export_slide
    from napari_cytosyn.models.grf import GRFModel
    from napari_cytosyn.sampling import SamplerSettings
    from napari_cytosyn.slide.synthetic import SyntheticSlide

    store = tmp_path / "syn.cytosyn"
    slide = SyntheticSlide.create(
        store, GRFModel(), 300, 200, SamplerSettings(steps=2, seed=1), chunk_px=256
    )
    rgb = np.full((256, 256, 3), 200, np.uint8)
    ny, nx = slide.store.grid(0)
    for cy in range(ny):
        for cx in range(nx):
            y0, y1, x0, x1 = slide.store.bounds(0, cy, cx)
            slide.store.write_chunk(0, cy, cx, rgb[: y1 - y0, : x1 - x0])
    SyntheticSlide.open(store, mode="r+").finish_pyramid()
    out = export_slide(SyntheticSlide.open(store, mode="r"), tmp_path / "x.ome.zarr")
    root = zarr.open_group(str(out), mode="r")
    assert _ome(root)["multiscales"][0]["name"] == "syn"
    assert "synthetic store levels" in _ome(root)["multiscales"][0]["metadata"]["method"]
    assert "labels" not in root  # every pixel is synthetic: the provenance says so instead
    assert root.attrs["napari_cytosyn"]["synthetic"]["fully_synthetic"] is True
