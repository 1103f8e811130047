"""Model-folder code runs only on opt-in, and only the files that were resolved and shown.

Each malicious folder below tries to write a marker file when its code is imported; the marker
must never appear, with or without ``trust_remote_code=True``.
"""

from __future__ import annotations

import json
import shutil
from fnmatch import fnmatch
from pathlib import Path

import pytest

from napari_cytosyn.models import RemoteCodeRefused, load_model
from napari_cytosyn.models.hub import HubOptions, fetch
from napari_cytosyn.models.remote_code import UnsafeModelCode, code_files, expected_code_paths


def _evil(marker: Path) -> str:
    return (
        "from pathlib import Path\n"
        f"Path({str(marker)!r}).write_text('pwned')\n"
        "from diffusers import DiffusionPipeline\n"
        "class EvilPipeline(DiffusionPipeline):\n"
        "    pass\n"
    )


@pytest.fixture
def folder(cytosyn_remote, tmp_path) -> Path:
    return Path(shutil.copytree(cytosyn_remote, tmp_path / "model"))


def _set_index(folder: Path, **changes) -> None:
    path = folder / "model_index.json"
    index = json.loads(path.read_text())
    index.update(changes)
    path.write_text(json.dumps(index))


@pytest.mark.parametrize("trust", [False, True])
def test_nested_module_path_in_class_name_never_runs(folder, tmp_path, trust):
    marker = tmp_path / "marker"
    (folder / "a" / "b").mkdir(parents=True)
    (folder / "a" / "b" / "evil.py").write_text(_evil(marker))
    _set_index(folder, _class_name=["a/b/evil", "EvilPipeline"])
    with pytest.raises(UnsafeModelCode, match=r"'a/b/evil'.*only a plain module name"):
        load_model(f"cytosyn:{folder}", device="cpu", trust_remote_code=trust)
    assert not marker.exists()


@pytest.mark.parametrize("where", ["_class_name", "transformer"])
def test_absolute_and_parent_paths_outside_the_folder_never_run(folder, tmp_path, where):
    marker = tmp_path / "marker"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "evil.py").write_text(_evil(marker))
    if where == "_class_name":
        _set_index(folder, _class_name=[str(outside / "evil"), "EvilPipeline"])
    else:
        _set_index(folder, transformer=["../../elsewhere/evil", "EvilPipeline"])
    with pytest.raises(UnsafeModelCode, match="only a plain module name"):
        load_model(f"cytosyn:{folder}", device="cpu", trust_remote_code=True)
    assert not marker.exists()


def test_a_component_module_missing_from_the_folder_is_not_imported_from_the_environment(
    folder, tmp_path, monkeypatch
):
    marker = tmp_path / "marker"
    (tmp_path / "evil_mod.py").write_text(_evil(marker))
    monkeypatch.syspath_prepend(str(tmp_path))  # e.g. a module in the working directory
    _set_index(folder, transformer=["evil_mod", "EvilPipeline"])
    with pytest.raises(UnsafeModelCode, match=r"transformer/evil_mod\.py.*environment"):
        load_model(f"cytosyn:{folder}", device="cpu", trust_remote_code=True)
    assert not marker.exists()


def test_a_symlink_out_of_the_folder_is_refused(folder, tmp_path):
    marker = tmp_path / "marker"
    (tmp_path / "evil.py").write_text(_evil(marker))
    (folder / "pipeline.py").unlink()
    (folder / "pipeline.py").symlink_to(tmp_path / "evil.py")
    with pytest.raises(UnsafeModelCode, match="resolves outside"):
        load_model(f"cytosyn:{folder}", device="cpu", trust_remote_code=True)
    assert not marker.exists()


def test_parent_relative_imports_are_refused(folder, tmp_path):
    (folder / "pipeline.py").write_text("from ..outside import thing\n")
    with pytest.raises(UnsafeModelCode, match="parent package"):
        load_model(f"cytosyn:{folder}", device="cpu", trust_remote_code=True)


def test_every_file_that_would_run_is_named_including_relative_imports(folder, tmp_path):
    marker = tmp_path / "marker"
    (folder / "transformer" / "helpers.py").write_text(_evil(marker))
    source = (folder / "transformer" / "repo_sit.py").read_text()
    (folder / "transformer" / "repo_sit.py").write_text("from . import helpers  # noqa\n" + source)
    (folder / "unrelated" / "deep").mkdir(parents=True)
    (folder / "unrelated" / "deep" / "other.py").write_text(_evil(marker))
    index = json.loads((folder / "model_index.json").read_text())
    present, missing = code_files(folder, index)
    assert [p.relative_to(folder).as_posix() for p in present] == [
        "pipeline.py",
        "transformer/repo_sit.py",
        "transformer/helpers.py",
    ]
    assert missing == []
    with pytest.raises(RemoteCodeRefused) as err:
        load_model(f"cytosyn:{folder}", device="cpu")
    assert "transformer/helpers.py" in str(err.value)
    assert not marker.exists()


def test_native_pixcell_never_imports_the_shipped_transformer_code(pixcell_256):
    # the fixture's transformer/pixcell_transformer_2d.py raises when imported
    model = load_model(f"pixcell-256:{pixcell_256}", device="cpu")
    assert type(model.net.transformer).__module__.startswith("diffusers.")


def test_expected_code_paths_of_the_published_layouts():
    pixcell = {
        "_class_name": "PixCellPipeline",
        "transformer": ["pixcell_transformer_2d", "PixCellTransformer2DModel"],
        "vae": ["diffusers", "AutoencoderKL"],
        "scheduler": ["diffusers", "DPMSolverMultistepScheduler"],
    }
    assert expected_code_paths(pixcell) == ["pipeline.py", "transformer/pixcell_transformer_2d.py"]
    with pytest.raises(UnsafeModelCode):
        expected_code_paths({**pixcell, "vae": ["os.path", "join"]})  # an installed module


class _FakeHub:
    """``snapshot_download`` over an in-memory repository: copies the files the allow-list
    names (fnmatch, like huggingface_hub) and records every allow-list."""

    def __init__(self, repo: Path, dest: Path):
        self.repo, self.dest, self.calls = repo, dest, []

    def __call__(self, repo_id, *, allow_patterns, **kwargs):
        self.calls.append(list(allow_patterns))
        for path in self.repo.rglob("*"):
            rel = path.relative_to(self.repo).as_posix()
            if path.is_file() and any(fnmatch(rel, pat) for pat in allow_patterns):
                (self.dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, self.dest / rel)
        return str(self.dest)


@pytest.mark.parametrize("trust", [False, True])
def test_hub_downloads_python_files_only_on_opt_in_and_only_the_named_ones(
    folder, tmp_path, monkeypatch, trust
):
    import huggingface_hub

    (folder / "a" / "b").mkdir(parents=True)
    (folder / "a" / "b" / "evil.py").write_text("raise SystemExit\n")
    (folder / "transformer" / "helpers.py").write_text("X = 1\n")
    source = (folder / "transformer" / "repo_sit.py").read_text()
    (folder / "transformer" / "repo_sit.py").write_text("from .helpers import X  # noqa\n" + source)
    hub = _FakeHub(folder, tmp_path / "snapshot")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", hub)
    got = fetch("owner/model", HubOptions(trust_remote_code=trust))
    downloaded = sorted(p.relative_to(got).as_posix() for p in got.rglob("*.py"))
    assert not any(pat.endswith(".py") or pat == "*" for pat in hub.calls[0])
    if trust:
        assert downloaded == ["pipeline.py", "transformer/helpers.py", "transformer/repo_sit.py"]
        assert hub.calls[1:] == [
            ["pipeline.py", "transformer/repo_sit.py"],
            ["transformer/helpers.py"],
        ]
    else:
        assert downloaded == [] and len(hub.calls) == 1
