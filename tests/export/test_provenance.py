"""Provenance records: checksums of slides and trees, JSON-safe values, model descriptions."""

import hashlib
import json
from dataclasses import dataclass

import numpy as np

from napari_cytosyn import __version__
from napari_cytosyn.export import build_provenance, file_sha256


def test_file_sha256_matches_hashlib_and_hashes_folders_by_content(tmp_path):
    data = np.random.default_rng(0).bytes(3_000_000)
    (tmp_path / "a.bin").write_bytes(data)
    assert file_sha256(tmp_path / "a.bin") == hashlib.sha256(data).hexdigest()
    for name in ("t1", "t2"):
        (tmp_path / name / "sub").mkdir(parents=True)
        (tmp_path / name / "sub" / "x").write_bytes(b"xyz")
        (tmp_path / name / "y").write_bytes(b"1")
    assert file_sha256(tmp_path / "t1") == file_sha256(tmp_path / "t2")
    (tmp_path / "t2" / "y").write_bytes(b"2")
    assert file_sha256(tmp_path / "t1") != file_sha256(tmp_path / "t2")


@dataclass(frozen=True)
class _Settings:
    sampler: str = "euler"
    steps: int = 8
    guidance: float = 1.0
    guidance_interval: tuple[float, float] = (0.0, 0.75)


def test_build_provenance_records_model_seed_sampler_source_and_version(tmp_path):
    slide = tmp_path / "real.svs"
    slide.write_bytes(b"fake slide bytes")
    prov = build_provenance(
        model={"name": "tiny", "revision": "r1", "mpp": np.float32(0.5)}, seed=np.int64(42),
        sampler=_Settings(), source_path=slide,
        extra={"synthetic": {"mask_px": np.int64(100)}},
    )  # fmt: skip
    assert json.loads(json.dumps(prov)) == prov
    assert prov["model"] == {"name": "tiny", "revision": "r1", "mpp": 0.5}
    assert prov["seed"] == 42
    assert prov["sampler"]["steps"] == 8
    assert prov["sampler"]["guidance_interval"] == [0.0, 0.75]
    assert prov["source"] == {
        "name": "real.svs",
        "path": str(slide),
        "sha256": hashlib.sha256(b"fake slide bytes").hexdigest(),
    }
    assert prov["software"] == {"name": "napari-cytosyn", "version": __version__}
    assert prov["synthetic"] == {"mask_px": 100}


def test_region_provenance_holds_the_recipe_its_seed_and_the_box():
    from napari_cytosyn.models.grf import GRFModel
    from napari_cytosyn.sampling import SamplerSettings, make_recipe, resolve_settings
    from napari_cytosyn.slide.provenance import region_provenance

    model = GRFModel()
    recipe = make_recipe(model, resolve_settings(SamplerSettings(steps=3, seed=9), model), "region")
    prov = region_provenance(recipe, (64, 128, 32, 48))
    assert prov["seed"] == 9 and prov["sampler"] == recipe
    assert prov["model"] == recipe["model"] and prov["model"]["name"] == "grf"
    assert prov["synthetic"] == {
        "kind": "region",
        "fully_synthetic": True,
        "box_px": [64, 128, 32, 48],
    }
    assert prov["software"]["name"] == "napari-cytosyn" and prov["source"] is None
