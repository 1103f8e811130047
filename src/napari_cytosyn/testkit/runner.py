"""Run a segmentation method on test images and score it against their ground truth.

Method specs: ``builtin:<name>`` (:mod:`.methods`); ``package.module:function`` (or
``python:...``), called ``f(rgb) -> labels`` and with ``mpp=`` when it takes it;
``shell:<template>``, one command per image with ``{input}`` (PNG), ``{output}`` (TIFF/PNG labels)
and optionally ``{mpp}`` substituted (split like a shell line, no shell runs it);
``npe2:<command id>``, an installed napari plugin's command returning labels, layer-data tuples
or a layer.
"""

from __future__ import annotations

import importlib
import inspect
import shlex
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .methods import REFERENCE_METHODS
from .metrics import score


class MethodError(RuntimeError):
    """A segmentation method could not be resolved or failed on an image."""


@dataclass
class Method:
    """A resolved method: ``name`` (for tables and folders), ``spec``, and ``segment(rgb, mpp)``."""

    name: str
    spec: str
    fn: Callable[[np.ndarray, float], np.ndarray]

    def segment(self, rgb: np.ndarray, mpp: float = 0.5) -> np.ndarray:
        """Labels ``(H, W)`` int32 for ``rgb``; raises :class:`MethodError` naming the method."""
        try:
            out = self.fn(np.ascontiguousarray(rgb), mpp)
        except MethodError:
            raise
        except Exception as err:
            raise MethodError(f"method {self.name!r} failed: {err}") from err
        return _as_labels(out, rgb.shape[:2], self.name)


def _as_labels(out: Any, shape: tuple[int, int], name: str) -> np.ndarray:
    if isinstance(out, list) and out and isinstance(out[0], tuple):
        out = next((t for t in out if len(t) > 2 and t[2] == "labels"), out[0])
    if isinstance(out, tuple) and len(out) in (2, 3):
        out = out[0]
    out = getattr(out, "data", out) if not isinstance(out, np.ndarray) else out
    lab = np.asarray(out)
    if lab.ndim == 3 and lab.shape[0] == 1:
        lab = lab[0]
    if lab.shape != tuple(shape):
        raise MethodError(f"method {name!r} returned shape {lab.shape}, expected {tuple(shape)}")
    if not np.issubdtype(lab.dtype, np.integer) and lab.dtype != bool:
        if np.issubdtype(lab.dtype, np.floating) and np.all(lab == np.round(lab)):
            lab = lab.astype(np.int64)
        else:
            raise MethodError(f"method {name!r} returned {lab.dtype} values, not integer labels")
    if lab.size and lab.min() < 0:
        raise MethodError(f"method {name!r} returned negative labels")
    return lab.astype(np.int32)


def _callable_method(spec: str, target: str) -> Method:
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise MethodError(f"a Python method is 'package.module:function', got {target!r}")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as err:
        raise MethodError(f"cannot import {module_name!r} for method {spec!r}: {err}") from err
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise MethodError(f"{module_name!r} has no attribute {attr!r} (method {spec!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise MethodError(f"{target!r} is not callable")
    return Method(attr.split(".")[-1], spec, _with_mpp(obj))


def _with_mpp(fn: Callable) -> Callable[[np.ndarray, float], np.ndarray]:
    try:
        takes_mpp = "mpp" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        takes_mpp = False
    if takes_mpp:
        return lambda rgb, mpp: fn(rgb, mpp=mpp)
    return lambda rgb, mpp: fn(rgb)


def _shell_method(spec: str, template: str, timeout_s: float) -> Method:
    args = shlex.split(template)
    if not args:
        raise MethodError("empty shell command template")
    if not any("{input}" in a for a in args) or not any("{output}" in a for a in args):
        raise MethodError(f"a shell template needs {{input}} and {{output}}, got {template!r}")

    def run(rgb: np.ndarray, mpp: float) -> np.ndarray:
        import tifffile
        from skimage.io import imread, imsave

        with tempfile.TemporaryDirectory(prefix="cytosyn-testkit-") as tmp:
            inp, outp = Path(tmp) / "input.png", Path(tmp) / "output.tif"
            imsave(inp, rgb, check_contrast=False)
            subs = {"input": str(inp), "output": str(outp), "mpp": f"{mpp:g}"}
            cmd = [a.format(**subs) for a in args]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
            except FileNotFoundError as err:
                raise MethodError(f"command not found: {cmd[0]!r}") from err
            except subprocess.TimeoutExpired as err:
                raise MethodError(f"command timed out after {timeout_s:g} s: {cmd}") from err
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip()[-500:]
                raise MethodError(f"command exited with {proc.returncode}: {tail}")
            written = outp if outp.is_file() else next(Path(tmp).glob("output.*"), None)
            if written is None:
                raise MethodError(f"command did not write {outp.name} ({cmd})")
            if written.suffix in (".tif", ".tiff"):
                return tifffile.imread(written)
            return imread(written)

    name = Path(args[0]).name
    return Method(f"shell-{name}", spec, run)


def _npe2_method(spec: str, command_id: str) -> Method:
    from npe2 import PluginManager

    pm = PluginManager.instance()
    try:
        command = pm.get_command(command_id)
    except KeyError:
        pm.discover()
        try:
            command = pm.get_command(command_id)
        except KeyError:
            ids = sorted(c.id for c in pm.commands._commands.values())[:20]
            raise MethodError(
                f"no npe2 command {command_id!r} among installed plugins (some: {ids})"
            ) from None

    def run(rgb: np.ndarray, mpp: float) -> np.ndarray:
        return command.exec(args=(rgb,))

    return Method(command_id.split(".")[-1], spec, run)


def npe2_commands() -> list[tuple[str, str]]:
    """``(command id, title)`` of every command of the installed napari plugins (npe2)."""
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    out = []
    for manifest in pm.iter_manifests():
        for c in (manifest.contributions.commands or []) if manifest.contributions else []:
            out.append((c.id, c.title))
    return sorted(out)


def resolve_method(spec: str, timeout_s: float = 600.0) -> Method:
    """A :class:`Method` from a spec string (see the module doc)."""
    if not isinstance(spec, str) or not spec.strip():
        raise MethodError("a method spec must be a non-empty string")
    spec = spec.strip()
    kind, sep, rest = spec.partition(":")
    if (sep and kind == "builtin") or spec in REFERENCE_METHODS:
        name = rest if sep else spec
        if name not in REFERENCE_METHODS:
            raise MethodError(
                f"unknown builtin method {name!r}; choose {', '.join(REFERENCE_METHODS)}"
            )
        return Method(name, f"builtin:{name}", _with_mpp(REFERENCE_METHODS[name]))
    if sep and kind == "shell":
        return _shell_method(spec, rest, timeout_s)
    if sep and kind == "npe2":
        return _npe2_method(spec, rest)
    if sep and kind == "python":
        return _callable_method(spec, rest)
    return _callable_method(spec, spec)


@dataclass
class Case:
    """One scored image: ``id``, its ``layout`` and ``variant``, the image, truth and mpp."""

    id: str
    layout: str
    variant: str
    rgb: np.ndarray
    truth: np.ndarray
    mpp: float


def evaluate(
    method: Method, cases: list[Case], progress: Callable[[int, int], None] | None = None
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Run ``method`` on every case and score it; returns (rows, predictions by case id).
    A row holds the method, case, layout, variant, mpp, seconds and every
    :class:`~.metrics.Scores` field (``dataset.write_run`` writes them to a test set)."""
    rows, preds = [], {}
    for k, case in enumerate(cases):
        t0 = time.perf_counter()
        pred = method.segment(case.rgb, case.mpp)
        seconds = time.perf_counter() - t0
        preds[case.id] = pred
        rows.append(
            {
                "method": method.name,
                "case": case.id,
                "layout": case.layout,
                "variant": case.variant,
                "mpp": case.mpp,
                "seconds": round(seconds, 4),
                **score(case.truth, pred).to_dict(),
            }
        )
        if progress is not None:
            progress(k + 1, len(cases))
    return rows, preds


SUMMARY_FIELDS = ("f1", "mean_iou", "pq", "aji", "count_bias", "size_bias", "precision", "recall")


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean of every score per (method, variant), in first-seen order (NaN-aware)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["variant"]), []).append(r)
    out = []
    for (m, v), rs in groups.items():
        entry: dict[str, Any] = {"method": m, "variant": v, "images": len(rs)}
        for f in SUMMARY_FIELDS:
            vals = np.array([r[f] for r in rs], float)
            entry[f] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
        entry["n_true"] = int(sum(r["n_true"] for r in rs))
        entry["n_pred"] = int(sum(r["n_pred"] for r in rs))
        out.append(entry)
    return out
