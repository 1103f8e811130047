"""How an exported image was made, as the JSON-able dict every export carries (OME-Zarr:
group attribute ``napari_cytosyn``; OME-TIFF: the OME ``Image/Description``; SVS: an Aperio
property). Its keys are stable, for pipelines that read them back:

``software``          ``{"name": "napari-cytosyn", "version": "0.1.0"}``
``created``           ISO 8601 UTC timestamp
``model``             the model's ``provenance()`` (name, revision, ...), or ``None``
``seed``              integer seed, or ``None``
``sampler``           the recipe (``sampling.make_recipe``), or ``None``
``source``            ``{"name", "path", "sha256"}`` of the real slide a composite was made from
``synthetic``         free-form description of what is synthetic (size, mpp, mask area, ...)
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PROVENANCE_KEY = "napari_cytosyn"
_HASH_BLOCK = 8 * 1024 * 1024


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file read in 8 MiB blocks; a folder (OME-Zarr, MRXS data) hashes the
    sorted relative paths and contents of its files (equal trees, equal digests)."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(file.relative_to(path).as_posix().encode())
            digest.update(b"\0")
            _update_from_file(digest, file)
        return digest.hexdigest()
    if not path.is_file():
        raise FileNotFoundError(f"cannot checksum {path}: no such file or directory")
    _update_from_file(digest, path)
    return digest.hexdigest()


def _update_from_file(digest: Any, path: Path) -> None:
    with open(path, "rb") as fh:
        while block := fh.read(_HASH_BLOCK):
            digest.update(block)


def jsonable(value: Any) -> Any:
    """``value`` in plain JSON types (numpy scalars, tuples, Paths, dataclasses); non-finite
    floats become ``None`` (JSON and zarr attributes cannot hold them)."""
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    to_dict = getattr(value, "to_dict", None)
    if callable(to_dict):
        return jsonable(to_dict())
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item) and getattr(value, "ndim", 1) == 0:
        return jsonable(item())
    if hasattr(value, "__dataclass_fields__"):
        import dataclasses

        return jsonable(dataclasses.asdict(value))
    return str(value)


def region_provenance(recipe: Mapping[str, Any], box_px: Sequence[int]) -> dict[str, Any]:
    """Provenance of a region-mode image: its recipe (``make_recipe(..., "region")``) and the
    box ``(y, x, h, w)`` in model px it was generated over. Every pixel is synthetic."""
    return build_provenance(
        model=recipe["model"],
        seed=recipe["core"]["seed"],
        sampler=recipe,
        extra={
            "synthetic": {
                "kind": "region",
                "fully_synthetic": True,
                "box_px": [int(v) for v in box_px],
            }
        },
    )


def build_provenance(
    *,
    model: Mapping[str, Any] | str | None = None,
    seed: int | None = None,
    sampler: Any = None,
    source_path: str | Path | None = None,
    source_name: str | None = None,
    checksum_source: bool = True,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Provenance dict for an export (keys: the module docstring).

    ``model``: a model's ``provenance()`` dict, a model name or ``None``; ``sampler``: the
    recipe (or anything with ``to_dict()``); ``source_path``: the real slide a copy or
    composite comes from, hashed unless not ``checksum_source``; ``extra``: more keys merged in
    last (``{"synthetic": {...}}``).
    """
    from napari_cytosyn import __version__

    model_info = {"name": model} if isinstance(model, str) else model
    source = None
    if source_path is not None or source_name is not None:
        sha = file_sha256(source_path) if source_path is not None and checksum_source else None
        source = {
            "name": source_name or (Path(source_path).name if source_path else None),
            "path": str(source_path) if source_path is not None else None,
            "sha256": sha,
        }
    record: dict[str, Any] = {
        "software": {"name": "napari-cytosyn", "version": __version__},
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "model": model_info,
        "seed": None if seed is None else int(seed),
        "sampler": sampler,
        "source": source,
    }
    if extra:
        record.update(extra)
    out = jsonable(record)
    json.dumps(out)  # fail here, not halfway through writing a store
    return out
