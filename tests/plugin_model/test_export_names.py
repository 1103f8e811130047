"""Export names and folders: named after the slide, the format's suffix once, next to the source
or in the last folder exported to."""

from __future__ import annotations

import pytest

from napari_cytosyn._napari._actions import default_export_path, new_edit_store
from napari_cytosyn.models.grf import GRFModel
from napari_cytosyn.sampling import SamplerSettings
from napari_cytosyn.slide import open_slide
from napari_cytosyn.slide.composite import CompositeSlide
from napari_cytosyn.slide.synthetic import SyntheticSlide


def test_synthetic_slide_exports_next_to_its_store_without_doubled_suffixes(tmp_path):
    slide = SyntheticSlide.create(
        tmp_path / "seed1.cytosyn", GRFModel(), 256, 256, SamplerSettings(seed=1), chunk_px=64
    )
    assert default_export_path(slide, "OME-Zarr") == tmp_path / "seed1.ome.zarr"
    assert default_export_path(slide, "OME-TIFF") == tmp_path / "seed1.ome.tif"
    last = tmp_path / "exports"
    last.mkdir()
    assert default_export_path(slide, "OME-Zarr", last) == last / "seed1.ome.zarr"
    with pytest.raises(ValueError, match="unknown export format"):
        default_export_path(slide, "PNG")


def test_edited_slide_exports_next_to_the_real_slide(generic_tiff_slide, tmp_path):
    store = new_edit_store(generic_tiff_slide, tmp_path / "cache")
    assert store.suffix == ".cytosyn" and store.parent == tmp_path / "cache" / "edits"
    composite = CompositeSlide(open_slide(generic_tiff_slide), store)
    path = default_export_path(composite, "OME-TIFF")
    assert path == generic_tiff_slide.parent / "generic-edited.ome.tif"
