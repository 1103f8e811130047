"""Which Python files a diffusers model folder would run, and running them only on opt-in.

``DiffusionPipeline.from_pretrained`` imports ``<folder>/<module>.py`` for ``_class_name``, and for
each component ``[library, Class]`` the file ``<folder>/<name>/<library>.py`` if it exists, else
``importlib.import_module(library)``; each file pulls in its relative imports. Module names are
joined to the folder as paths, so ``"a/b/evil"`` or an absolute path reach other files.

:func:`code_files` resolves all of them before anything runs and refuses (:class:`UnsafeModelCode`)
a module that is not a plain identifier, resolves outside the folder (``..``, absolute paths,
symlinks), or would be imported from the environment (only ``diffusers``, ``transformers`` and
this package may be). The list it returns is shown to the user;
:func:`require_remote_code_files` refuses it without ``trust_remote_code=True``. Hub downloads
fetch only the Python files :func:`expected_code_paths` names, and only with the opt-in.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .hub import HubOptions

log = logging.getLogger(__name__)

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Installed libraries diffusers may take a component class from (no model-folder code runs).
TRUSTED_LIBRARIES = ("diffusers", "transformers", "napari_cytosyn")
ROOT_PIPELINE = "pipeline.py"


class RemoteCodeRefused(PermissionError):
    """A model needs its own Python code and ``trust_remote_code=True`` was not given."""


class UnsafeModelCode(RemoteCodeRefused):
    """``model_index.json`` names code outside the model folder or in an unresolvable way."""


def _trusted_library(library: str) -> bool:
    return any(library == lib or library.startswith(lib + ".") for lib in TRUSTED_LIBRARIES)


def _check_ident(name: Any, where: str) -> str:
    if not isinstance(name, str) or not _IDENT.match(name):
        raise UnsafeModelCode(
            f"model_index.json {where} names the module {name!r}; only a plain module name "
            "(a file beside model_index.json or in the component's folder) is accepted, never a "
            "path, so no code outside the listed files can run"
        )
    return name


def expected_code_paths(index: dict[str, Any]) -> list[str]:
    """Relative paths of the Python files ``index`` makes diffusers load (before relative
    imports), e.g. ``["pipeline.py", "transformer/repo_sit.py"]``; refuses unsafe names."""
    paths = [ROOT_PIPELINE]
    cls = index.get("_class_name")
    if isinstance(cls, list | tuple):
        if len(cls) != 2:
            raise UnsafeModelCode(f"model_index.json _class_name {cls!r} is not [module, class]")
        paths.append(_check_ident(cls[0], "_class_name") + ".py")
    elif cls is not None and not (isinstance(cls, str) and _IDENT.match(cls)):
        raise UnsafeModelCode(f"model_index.json _class_name {cls!r} is not a class name")
    for name, spec in index.items():
        if name.startswith("_") or not isinstance(spec, list | tuple):
            continue
        if len(spec) != 2:
            raise UnsafeModelCode(f"model_index.json {name}: {spec!r} is not [library, class]")
        library, cls_name = spec
        if library is None and cls_name is None:
            continue
        _check_ident(name, "a component key")
        if isinstance(library, str) and _trusted_library(library):
            continue
        _check_ident(library, f"component {name!r}")
        paths.append(f"{name}/{library}.py")
    return list(dict.fromkeys(paths))


def _inside(folder: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def relative_imports(path: Path) -> list[str]:
    """Sibling modules ``path`` imports relatively (``from .x import y``, ``from . import x``);
    parent-relative imports (``from ..x``) are refused."""
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except (SyntaxError, UnicodeDecodeError) as err:
        raise UnsafeModelCode(f"{path} cannot be parsed ({err}); refusing to run it") from None
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            if node.level > 1:
                raise UnsafeModelCode(f"{path} imports from a parent package ({'.' * node.level})")
            if node.module:
                found.append(_check_ident(node.module.split(".")[0], f"(imported by {path.name})"))
            else:
                found += [_check_ident(a.name, f"(imported by {path.name})") for a in node.names]
    return found


def code_files(folder: Path, index: dict[str, Any]) -> tuple[list[Path], list[str]]:
    """``(present, missing)``: every Python file in ``folder`` that loading ``index`` with
    diffusers would run (with their relative imports), and the needed ones that are absent."""
    folder = Path(folder)
    present: list[Path] = []
    missing: list[str] = []
    todo = [
        p
        for p in expected_code_paths(index)
        if p != ROOT_PIPELINE or (folder / ROOT_PIPELINE).exists()
    ]
    seen: set[str] = set()
    while todo:
        rel = todo.pop(0)
        if rel in seen:
            continue
        seen.add(rel)
        path = folder / rel
        if not path.exists():
            # a component module absent from its folder is imported from the environment
            missing.append(rel)
            continue
        if path.is_symlink() or not _inside(folder, path):
            raise UnsafeModelCode(f"{rel} resolves outside {folder} ({path.resolve()})")
        present.append(path)
        parent = Path(rel).parent
        todo += [str(parent / f"{name}.py") for name in relative_imports(path)]
    return present, missing


def require_remote_code_files(
    folder: Path, index: dict[str, Any], label: str, options: HubOptions
) -> Path | None:
    """Refuse, unless ``options.trust_remote_code``, to run the folder's code (naming every
    file); on opt-in warn naming them. Returns the pipeline file to pass as ``custom_pipeline``
    (``None`` when the pipeline class is diffusers' own)."""
    present, missing = code_files(folder, index)
    names = ", ".join(str(p.relative_to(folder)) for p in present) or "none present"
    if missing:
        raise UnsafeModelCode(
            f"{label}: model_index.json needs Python module(s) {', '.join(missing)} that are not "
            f"in {folder}; diffusers would import them from the environment instead. Refused."
            + ("" if options.trust_remote_code else " (trust_remote_code=True was not given.)")
        )
    if not present:
        return None
    if not options.trust_remote_code:
        raise RemoteCodeRefused(
            f"{label} needs Python code shipped with the model ({names}) to load. Read it, and "
            f"pass trust_remote_code=True (CLI --trust-remote-code) only if you trust {label}."
        )
    message = f"running Python code from {label} ({names}) because trust_remote_code=True"
    warnings.warn(message, UserWarning, stacklevel=3)
    log.warning(message)
    cls = index.get("_class_name")
    if isinstance(cls, list | tuple):
        return folder / f"{cls[0]}.py"
    pipeline = folder / ROOT_PIPELINE
    return pipeline if pipeline.exists() else None


def fetch_code(folder: Path, download) -> None:
    """Download (``download(list_of_paths)``) the Python files ``folder/model_index.json``
    names and, iteratively, their relative imports: nothing else with a ``.py`` suffix."""
    index_path = folder / "model_index.json"
    if not index_path.is_file():
        return
    try:
        index = json.loads(index_path.read_text())
    except json.JSONDecodeError as err:
        raise UnsafeModelCode(f"{index_path} is not valid JSON: {err}") from None
    wanted = expected_code_paths(index)
    fetched: set[str] = set()
    while wanted:
        download(wanted)
        fetched.update(wanted)
        nxt = []
        for rel in wanted:
            path = folder / rel
            if path.is_file() and _inside(folder, path):
                parent = Path(rel).parent
                nxt += [str(parent / f"{m}.py") for m in relative_imports(path)]
        wanted = [p for p in dict.fromkeys(nxt) if p not in fetched]
