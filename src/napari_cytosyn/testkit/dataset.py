"""A test set on disk: synthetic images, their ground truth, and what made them.

Layout of a test-set folder::

    manifest.json            # cases, layouts, variants, model provenance, settings, seeds
    images/<case>.png        # RGB uint8 (what the tool under test reads)
    truth/<case>.tif         # instance labels, int32 (zlib TIFF)
    layouts/<layout>.tif     # the layout at model resolution (labels) and its tissue mask
    runs/<method>/rows.csv   # written by :func:`run_testset`
    runs/<method>/pred/<case>.tif

A case id is ``<layout>__<variant>``.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from .layouts import Layout
from .runner import Case, Method, evaluate, resolve_method
from .stress import DEFAULT_VARIANTS, Variant, apply_variant

MANIFEST = "manifest.json"


def _write_labels(path: Path, labels: np.ndarray) -> None:
    import tifffile

    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.asarray(labels, np.int32), compression="zlib")


def generate_testset(
    out: str | Path,
    layouts: list[Layout],
    model: Any = None,
    variants: list[Variant] | None = None,
    seed: int = 0,
    steps: int | None = None,
    guidance: float | None = None,
    progress: Callable[[str], None] | None = None,
    synthesize_fn: Callable[..., np.ndarray] | None = None,
) -> Path:
    """Synthesize every layout and write it under every stress variant into ``out``.

    ``model``: a loaded mask-conditioned model (default ``cytosyn-tiny-cells``). Layout ``i``
    is synthesized with seed ``seed + i``. ``synthesize_fn`` replaces
    :func:`~.synthesis.synthesize` (same signature; tests use it to skip the model).
    Returns the folder.
    """
    from skimage.io import imsave

    from .synthesis import load_synthesis_model, synthesize

    out = Path(out)
    variants = list(DEFAULT_VARIANTS if variants is None else variants)
    if not layouts:
        raise ValueError("no layouts to synthesize")
    if synthesize_fn is None:
        model = load_synthesis_model() if model is None else model
        synthesize_fn = synthesize
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "kind": "napari-cytosyn test set",
        "model": model.provenance() if hasattr(model, "provenance") else None,
        "seed": seed,
        "steps": steps,
        "guidance": guidance,
        "variants": [asdict(v) for v in variants],
        "layouts": [],
        "cases": [],
        "seconds": {},
    }
    for i, layout in enumerate(layouts):
        lid = f"L{i:03d}"
        _write_labels(out / "layouts" / f"{lid}.tif", layout.labels)
        _write_labels(out / "layouts" / f"{lid}_tissue.tif", layout.tissue.astype(np.int32))
        manifest["layouts"].append(
            {
                "id": lid,
                "shape": list(layout.shape),
                "mpp": layout.mpp,
                "n_nuclei": layout.n_nuclei,
                "source": layout.source,
                "seed": seed + i,
            }
        )
        t0 = time.perf_counter()
        rgb = synthesize_fn(layout, model, seed=seed + i, steps=steps, guidance=guidance)
        manifest["seconds"][lid] = round(time.perf_counter() - t0, 2)
        for v in variants:
            cid = f"{lid}__{v.name}"
            img, lab, mpp = apply_variant(rgb, layout.labels, layout.mpp, v, seed=seed + i)
            (out / "images").mkdir(exist_ok=True)
            imsave(out / "images" / f"{cid}.png", img, check_contrast=False)
            _write_labels(out / "truth" / f"{cid}.tif", lab)
            manifest["cases"].append(
                {
                    "id": cid,
                    "layout": lid,
                    "variant": v.name,
                    "mpp": mpp,
                    "image": f"images/{cid}.png",
                    "truth": f"truth/{cid}.tif",
                }
            )
        if progress is not None:
            progress(f"{lid}: {layout.n_nuclei} nuclei, {len(variants)} variants")
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return out


def read_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of a test-set folder; a clear error when it is not one."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{folder} is not a test set (no {MANIFEST}); make one with `napari-cytosyn testkit "
            "generate --out FOLDER`"
        )
    return json.loads(path.read_text())


def load_cases(folder: str | Path, variants: list[str] | None = None) -> list[Case]:
    """Every case of a test set (images and truth read into memory), optionally some variants."""
    import tifffile
    from skimage.io import imread

    folder = Path(folder)
    cases = []
    for c in read_manifest(folder)["cases"]:
        if variants and c["variant"] not in variants:
            continue
        rgb = imread(folder / c["image"])[..., :3]
        truth = tifffile.imread(folder / c["truth"])
        cases.append(Case(c["id"], c["layout"], c["variant"], rgb, truth, float(c["mpp"])))
    return cases


def cases_from_image(
    rgb: np.ndarray,
    layout: Layout,
    variants: list[Variant] | None = None,
    seed: int = 0,
    layout_id: str = "L000",
) -> list[Case]:
    """In-memory cases of one synthetic image under every variant (nothing written)."""
    cases = []
    for v in DEFAULT_VARIANTS if variants is None else variants:
        img, lab, mpp = apply_variant(rgb, layout.labels, layout.mpp, v, seed=seed)
        cases.append(Case(f"{layout_id}__{v.name}", layout_id, v.name, img, lab, mpp))
    return cases


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def run_testset(
    folder: str | Path,
    method: str | Method,
    progress: Callable[[int, int], None] | None = None,
    cases: list[Case] | None = None,
) -> list[dict[str, Any]]:
    """Run ``method`` (a spec or a :class:`Method`) on a test set; writes
    ``runs/<method>/rows.csv`` and the predictions, returns the rows."""
    folder = Path(folder)
    m = resolve_method(method) if isinstance(method, str) else method
    cases = load_cases(folder) if cases is None else cases
    run_dir = folder / "runs" / _slug(m.name)
    rows, _ = evaluate(m, cases, run_dir / "pred", progress)
    write_rows(run_dir / "rows.csv", rows)
    (run_dir / "method.json").write_text(json.dumps({"name": m.name, "spec": m.spec}, indent=2))
    return rows


def write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows as CSV (header from the first row)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def read_runs(folder: str | Path) -> list[dict[str, Any]]:
    """All rows of every method run on a test set (numbers parsed back)."""
    rows = []
    for path in sorted((Path(folder) / "runs").glob("*/rows.csv")):
        with open(path, newline="") as fh:
            for r in csv.DictReader(fh):
                rows.append({k: _num(v) for k, v in r.items()})
    if not rows:
        raise FileNotFoundError(
            f"no method runs in {folder}/runs; run one with `napari-cytosyn testkit run {folder} "
            "--method ...`"
        )
    return rows


def _num(v: str) -> Any:
    try:
        f = float(v)
    except ValueError:
        return v
    return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f
