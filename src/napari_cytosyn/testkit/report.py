"""The report of a test-set run: ``report.md`` (tables, figures, what the numbers mean),
``scores.csv`` (per method and image), ``summary.csv``/``summary.json`` (means per method and
variant) and the figures ``f1_by_variant.png``, ``pq_aji_by_variant.png``,
``bias_by_variant.png`` (data in summary.csv) and ``examples.png`` (image, truth, each method's
errors: FP blue, FN red).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .runner import SUMMARY_FIELDS, summarize

#: Colours of :func:`~.metrics.error_map` classes: matched, false positive, missed truth.
ERROR_COLOURS = {1: (60, 200, 60), 2: (40, 110, 255), 3: (255, 40, 40)}


def _bar_plot(ax, summary, field: str, methods: list[str], variants: list[str]) -> None:
    width = 0.8 / max(1, len(methods))
    x = np.arange(len(variants))
    for k, m in enumerate(methods):
        vals = [
            next((s[field] for s in summary if s["method"] == m and s["variant"] == v), np.nan)
            for v in variants
        ]
        ax.bar(x + (k - (len(methods) - 1) / 2) * width, vals, width, label=m)
    ax.set_xticks(x, variants, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel(field)
    ax.grid(axis="y", alpha=0.3)


def overlay_errors(rgb: np.ndarray, errors: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """``rgb`` with error classes (see :func:`~.metrics.error_map`) blended in their colours."""
    out = rgb.astype(np.float32).copy()
    for cls, colour in ERROR_COLOURS.items():
        m = errors == cls
        out[m] = (1 - alpha) * out[m] + alpha * np.asarray(colour, np.float32)
    return out.round().astype(np.uint8)


def outline(rgb: np.ndarray, labels: np.ndarray, colour=(0, 255, 0)) -> np.ndarray:
    """``rgb`` with the instance boundaries of ``labels`` drawn in ``colour``."""
    from skimage.segmentation import find_boundaries

    out = rgb.copy()
    out[find_boundaries(labels, mode="inner")] = colour
    return out


def write_report(
    folder: str | Path, out: str | Path | None = None, example: str | None = None
) -> Path:
    """Write the report of every method run on the test set ``folder`` into ``out``
    (default ``folder/report``); ``example`` is the case shown in ``examples.png`` (default: the
    first clean case). Returns the path of ``report.md``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import tifffile
    from skimage.io import imread

    from .dataset import read_manifest, read_runs, write_rows
    from .metrics import error_map

    folder = Path(folder)
    out = Path(out) if out is not None else folder / "report"
    out.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(folder)
    rows = read_runs(folder)
    summary = summarize(rows)
    write_rows(out / "scores.csv", rows)
    write_rows(out / "summary.csv", summary)
    (out / "summary.json").write_text(json.dumps(_finite(summary), indent=2))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    variants = list(dict.fromkeys(r["variant"] for r in rows))

    def bar_figure(name: str, panels: list[tuple[str, str]], ylim: Any = (0, 1)) -> None:
        one = len(panels) == 1
        width = max(6, 0.8 * len(variants) + 2) if one else max(9, 1.4 * len(variants) + 3)
        fig, axes = plt.subplots(1, len(panels), figsize=(width, 3.6))
        axes = np.atleast_1d(axes)
        for ax, (field, title) in zip(axes, panels, strict=True):
            _bar_plot(ax, summary, field, methods, variants)
            if ylim is None:
                ax.axhline(0, color="k", lw=0.8)
            else:
                ax.set_ylim(*ylim)
            ax.set_title(title)
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)

    bar_figure("f1_by_variant.png", [("f1", "F1 at IoU 0.5 per stress variant")])
    bar_figure("pq_aji_by_variant.png", [("pq", "Panoptic quality"), ("aji", "AJI")])
    bias = [("count_bias", "Count bias (pred / true - 1)"), ("size_bias", "Size bias (matched)")]
    bar_figure("bias_by_variant.png", bias, ylim=None)

    cases = {c["id"]: c for c in manifest["cases"]}
    example = example or next(
        (c["id"] for c in manifest["cases"] if c["variant"] == "clean"), manifest["cases"][0]["id"]
    )
    if example not in cases:
        raise ValueError(f"example case {example!r} is not in the test set")
    c = cases[example]
    rgb = imread(folder / c["image"])[..., :3]
    truth = tifffile.imread(folder / c["truth"])
    panels = [("image", rgb), ("ground truth", outline(rgb, truth))]
    for m in methods:
        pred_path = folder / "runs" / _run_dir(folder, m) / "pred" / f"{example}.tif"
        if pred_path.is_file():
            pred = tifffile.imread(pred_path)
            panels.append((f"{m}: errors", overlay_errors(rgb, error_map(truth, pred))))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.5))
    for ax, (title, img) in zip(np.atleast_1d(axes), panels, strict=True):
        ax.imshow(img)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{example}: green matched, blue false positive, red missed", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "examples.png", dpi=110)
    plt.close(fig)

    md = _markdown(manifest, summary, methods, variants, example)
    path = out / "report.md"
    path.write_text(md)
    return path


def _run_dir(folder: Path, method: str) -> str:
    for d in (folder / "runs").iterdir():
        meta = d / "method.json"
        if meta.is_file() and json.loads(meta.read_text())["name"] == method:
            return d.name
    return method


def _finite(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
        for r in rows
    ]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.3f}"
    return str(v)


def _markdown(manifest, summary, methods, variants, example) -> str:
    model = manifest.get("model") or {}
    n_nuclei = sum(lay["n_nuclei"] for lay in manifest["layouts"])
    lines = [
        "# Segmentation test report",
        "",
        f"Test set: {len(manifest['layouts'])} synthetic layouts ({n_nuclei} nuclei), "
        f"{len(variants)} stress variants, model `{model.get('name', 'n/a')}`, "
        f"seed {manifest.get('seed')}. Methods: {', '.join(f'`{m}`' for m in methods)}.",
        "",
        "## Mean scores per stress variant",
        "",
    ]
    fields = ("f1", "mean_iou", "pq", "aji", "count_bias", "size_bias")
    lines.append("| method | variant | " + " | ".join(fields) + " | true | predicted |")
    lines.append("|---" * (len(fields) + 4) + "|")
    for s in summary:
        cells = [s["method"], s["variant"], *(_fmt(s[f]) for f in fields), s["n_true"], s["n_pred"]]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    if len(methods) > 1:
        lines += ["", "## Ranking by F1 per variant", ""]
        for v in variants:
            ranked = sorted(
                (s for s in summary if s["variant"] == v), key=lambda s: -np.nan_to_num(s["f1"])
            )
            lines.append(f"- {v}: " + " > ".join(f"{s['method']} ({s['f1']:.3f})" for s in ranked))
    lines += [
        "",
        "## Figures",
        "",
        "| figure | data |",
        "|---|---|",
        "| ![F1](f1_by_variant.png) | summary.csv |",
        "| ![PQ and AJI](pq_aji_by_variant.png) | summary.csv |",
        "| ![bias](bias_by_variant.png) | summary.csv |",
        f"| ![examples](examples.png) | case `{example}`: green matched, blue false positive, "
        "red missed |",
        "",
        "## What the numbers mean",
        "",
        "- **F1**: a prediction and a true nucleus match when their IoU exceeds 0.5; "
        "F1 = 2 TP / (2 TP + FP + FN).",
        "- **mean IoU**: mean IoU of matched pairs (how well matched nuclei are outlined).",
        "- **PQ**: panoptic quality = mean IoU x F1 (Kirillov et al. 2019).",
        "- **AJI**: aggregated Jaccard index (Kumar et al. 2017); penalises splits and merges.",
        "- **count bias**: predicted / true count - 1; **size bias**: mean relative area error "
        "of matched nuclei (> 0: outlines too large).",
        "",
        "## Limits",
        "",
        "Synthetic is not real. The ground truth is the layout the image was conditioned on; "
        "the image shows those nuclei only as well as the model renders them (the kit's "
        "benchmark measures this: `layout_f1`). The embedded model is a small demonstration "
        "model trained on pseudo-labels of a classical segmenter on two images, so it carries "
        "that segmenter's idea of a nucleus and little tissue diversity; a tool that agrees "
        "with Otsu + watershed is favoured. Use the ranking across variants and the failure "
        "modes more than the absolute numbers, and confirm on annotated real tissue.",
        "",
    ]
    return "\n".join(lines)


__all__ = ["SUMMARY_FIELDS", "outline", "overlay_errors", "write_report"]
