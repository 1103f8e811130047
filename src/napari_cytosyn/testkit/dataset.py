"""A test set on disk: synthetic images, their ground truth, and what made them.

Folder::

    manifest.json            # cases, layouts, variants, model provenance, settings, seeds
    images/<case>.png        # RGB uint8; a case id is <layout>__<variant>
    truth/<case>.tif         # instance labels, int32 (zlib TIFF)
    layouts/<layout>.tif     # the layout at model resolution, and <layout>_tissue.tif
    runs/<method>/rows.csv   # written by run_testset, with pred/<case>.tif
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
    reference: np.ndarray | None = None,
) -> Path:
    """Synthesize every layout (layout ``i`` with seed ``seed + i``) and write it under every stress
    variant into ``out``; returns the folder.

    ``model``: a mask-conditioned model (default ``cytosyn-tiny-cells``); ``synthesize_fn``
    replaces :func:`~.synthesis.synthesize` (tests skip the model with it); ``reference``: real
    tissue every layout is also conditioned on (:func:`~.synthesis.synthesize`).
    """
    from .synthesis import load_synthesis_model, synthesize

    out = Path(out)
    variants = list(DEFAULT_VARIANTS if variants is None else variants)
    if not layouts:
        raise ValueError("no layouts to synthesize")
    if synthesize_fn is None:
        model = load_synthesis_model() if model is None else model
        synthesize_fn = synthesize
    out.mkdir(parents=True, exist_ok=True)
    manifest = _new_manifest(model, seed, steps, guidance, variants)
    manifest["reference"] = None if reference is None else {"shape": list(reference.shape)}
    for i, layout in enumerate(layouts):
        lid = f"L{i:03d}"
        t0 = time.perf_counter()
        extra = {} if reference is None else {"reference": reference}
        rgb = synthesize_fn(layout, model, seed=seed + i, steps=steps, guidance=guidance, **extra)
        manifest["seconds"][lid] = round(time.perf_counter() - t0, 2)
        cases = cases_from_image(rgb, layout, variants, seed + i, lid, model, steps)
        _add_layout(out, manifest, lid, layout, seed + i, cases)
        if progress is not None:
            progress(f"{lid}: {layout.n_nuclei} nuclei, {len(variants)} variants")
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return out


def _new_manifest(model: Any, seed: int, steps: Any, guidance: Any, variants: list) -> dict:
    return {
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


def _add_layout(
    out: Path, manifest: dict, lid: str, layout: Layout, seed: int, cases: list[Case]
) -> None:
    """Write a layout and its cases (images, truth) and list them in ``manifest``."""
    from skimage.io import imsave

    _write_labels(out / "layouts" / f"{lid}.tif", layout.labels)
    _write_labels(out / "layouts" / f"{lid}_tissue.tif", layout.tissue.astype(np.int32))
    manifest["layouts"].append(
        {
            "id": lid,
            "shape": list(layout.shape),
            "mpp": layout.mpp,
            "n_nuclei": layout.n_nuclei,
            "source": layout.source,
            "seed": seed,
        }
    )
    (out / "images").mkdir(parents=True, exist_ok=True)
    for case in cases:
        imsave(out / "images" / f"{case.id}.png", case.rgb, check_contrast=False)
        _write_labels(out / "truth" / f"{case.id}.tif", case.truth)
        manifest["cases"].append(
            {
                "id": case.id,
                "layout": lid,
                "variant": case.variant,
                "mpp": case.mpp,
                "image": f"images/{case.id}.png",
                "truth": f"truth/{case.id}.tif",
            }
        )


def write_cases(
    out: str | Path,
    layout: Layout,
    cases: list[Case],
    variants: list[Variant],
    model: Any = None,
    seed: int = 0,
    steps: int | None = None,
    guidance: float | None = None,
) -> Path:
    """Write in-memory cases of one layout (:func:`cases_from_image`) as a test-set folder,
    the same files :func:`generate_testset` writes (the widget's *Save report*)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = _new_manifest(model, seed, steps, guidance, variants)
    lid = cases[0].layout if cases else "L000"
    _add_layout(out, manifest, lid, layout, seed, cases)
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
    model: Any = None,
    steps: int | None = None,
) -> list[Case]:
    """In-memory cases of one synthetic image under every variant (nothing written).
    ``model``: the synthesis model, needed by variants that generate tissue (``inpaint``)."""
    cases = []
    for v in DEFAULT_VARIANTS if variants is None else variants:
        img, lab, mpp = apply_variant(
            rgb, layout.labels, layout.mpp, v, seed=seed, model=model, steps=steps
        )
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
    rows, preds = evaluate(m, cases, progress)
    write_run(folder, m, rows, preds)
    return rows


def write_run(
    folder: str | Path, method: Method, rows: list[dict[str, Any]], preds: dict[str, np.ndarray]
) -> Path:
    """Write one method's scored run into a test set: ``runs/<method>/rows.csv``,
    ``method.json`` and the predictions ``pred/<case>.tif``. Returns the run folder."""
    import tifffile

    run_dir = Path(folder) / "runs" / _slug(method.name)
    (run_dir / "pred").mkdir(parents=True, exist_ok=True)
    for cid, pred in preds.items():
        tifffile.imwrite(run_dir / "pred" / f"{cid}.tif", pred, compression="zlib")
    write_rows(run_dir / "rows.csv", rows)
    meta = {"name": method.name, "spec": method.spec}
    (run_dir / "method.json").write_text(json.dumps(meta, indent=2))
    return run_dir


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
