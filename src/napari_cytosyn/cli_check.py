"""``napari-cytosyn check STORE [--repair]``: verify a store, and fix what can be fixed.

Checks the attributes and format version, the level arrays' geometry, every completion-map
block, every finished chunk's files (size, CRC-32), the phase cache and temporary files of dead
writers. ``--repair`` (no other process may have the store open) rewrites a damaged map block
(empty for a synthetic slide, whose chunks ``render`` redoes; rebuilt from the decodable chunk
files of an edit store, whose edits cannot be recomputed), clears damaged chunk records (an edit
store's lost chunks are named) and deletes damaged cache entries and leftovers. Attributes and
geometry cannot be repaired. Exit status 0 when the store is sound (after repair), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_check_arguments(p: argparse.ArgumentParser) -> None:
    """The ``check`` subcommand's arguments."""
    p.add_argument("store")
    p.add_argument("--repair", action="store_true", help="fix what can be fixed")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def cmd_check(args: argparse.Namespace) -> int:
    report = check_store(Path(args.store), repair=args.repair)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for line in report["problems"]:
            print(line)
        state = "sound" if report["sound"] else "damaged"
        repaired = f", {report['repaired']} repaired" if args.repair else ""
        print(f"{args.store}: {state} ({len(report['problems'])} problems{repaired})")
        for hint in report["hints"]:
            print(hint)
    return 0 if report["sound"] else 1


def check_store(path: Path, repair: bool = False) -> dict[str, Any]:
    """Verify (and with ``repair`` fix) the store at ``path``; returns a JSON-able report:
    ``problems`` (one line each), ``repaired`` (count), ``sound`` (nothing left to fix),
    ``hints`` (what to run next), ``damaged_chunks`` ``[[level, cy, cx], ...]``."""
    from napari_cytosyn.slide.store import (
        FORMAT_VERSION,
        SlideStore,
        StoreBusyError,
        StoreDamagedError,
        read_store_attrs,
    )
    from napari_cytosyn.slide.store_io import exclusive_lease

    report: dict[str, Any] = {
        "store": str(path),
        "problems": [],
        "repaired": 0,
        "hints": [],
        "damaged_chunks": [],
    }

    def fatal(message: str) -> dict[str, Any]:
        report["problems"].append(message)
        report["sound"] = False
        return report

    if not path.is_dir():
        return fatal(f"{path} is not a folder")
    attrs = read_store_attrs(path)
    if attrs is None:
        return fatal(f"{path}: no readable napari-cytosyn attributes (zarr.json); not a store")
    if attrs.get("format_version") != FORMAT_VERSION:
        return fatal(f"{path}: format version {attrs.get('format_version')}, not {FORMAT_VERSION}")
    if repair:
        try:
            with exclusive_lease(path):
                pass
        except BlockingIOError:
            raise StoreBusyError(
                f"{path} is open in another process; repair it once that has finished"
            ) from None
    try:
        store = SlideStore.open(path, attrs["kind"], mode="r+" if repair else "r", tolerant=True)
    except StoreDamagedError as exc:
        return fatal(str(exc))
    synthetic = store.kind == "synthetic-slide"
    try:
        _check_maps(store, synthetic, repair, report)
        _check_chunks(store, synthetic, repair, report)
        if synthetic:
            _check_phase_cache(path / "phase_cache", repair, report)
        _check_leftovers(path, repair, report)
    finally:
        store.close()
    fixable = len(report["problems"]) - report["repaired"]
    report["sound"] = fixable == 0
    if report["damaged_chunks"] and synthetic and repair:
        report["hints"].append(f"run `napari-cytosyn render {path}` to render them again")
    elif report["problems"] and not repair:
        report["hints"].append(f"run `napari-cytosyn check {path} --repair` to fix them")
    return report


def _check_maps(store: Any, synthetic: bool, repair: bool, report: dict[str, Any]) -> None:
    import numpy as np

    from napari_cytosyn.slide.store_io import record_of

    for k in range(store.n_levels):
        done = store.completion(k)
        for by, bx in sorted(done.damaged_blocks):
            report["problems"].append(f"completion map block {by},{bx} of level {k} is damaged")
            if not repair:
                continue
            block = np.zeros(done.block, dtype=np.uint64)
            if not synthetic:  # edits cannot be recomputed: keep every chunk that decodes
                bh, bw = done.block
                ny, nx = done.shape
                for cy in range(by * bh, min((by + 1) * bh, ny)):
                    for cx in range(bx * bw, min((bx + 1) * bw, nx)):
                        raws = _decodable(store, k, cy, cx)
                        if raws:
                            block[cy - by * bh, cx - bx * bw] = record_of(*raws)
            done.write_block(by, bx, block)
            report["repaired"] += 1


def _decodable(store: Any, level: int, cy: int, cx: int) -> list[bytes] | None:
    from numcodecs import Zstd

    c = store.chunk_px
    raws = []
    for name, size in zip(store._files(level, cy, cx), (c * c * 3, c * c), strict=False):
        try:
            raw = Path(name).read_bytes()
            if len(Zstd().decode(raw)) != size:
                return None
        except Exception:
            return None
        raws.append(raw)
    return raws


def _check_chunks(store: Any, synthetic: bool, repair: bool, report: dict[str, Any]) -> None:
    for k in range(store.n_levels):
        for cy, cx, problem in store.damaged_chunks(k, full=True):
            report["problems"].append(f"chunk ({cy}, {cx}) of level {k} is damaged ({problem})")
            report["damaged_chunks"].append([k, cy, cx])
            if repair:
                store.clear_chunk(k, cy, cx)
                report["repaired"] += 1
                if not synthetic:
                    report["hints"].append(
                        f"the edit pixels of chunk ({cy}, {cx}) of level {k} are lost: remove "
                        "and redo the edits over it"
                    )


def _check_phase_cache(cache: Path, repair: bool, report: dict[str, Any]) -> None:
    from napari_cytosyn.slide.phase_cache import ZarrPhaseCache

    if not cache.is_dir():
        return
    problems = ZarrPhaseCache(cache).verify(repair)
    report["problems"] += problems
    if repair:
        report["repaired"] += len(problems)


def _check_leftovers(path: Path, repair: bool, report: dict[str, Any]) -> None:
    from napari_cytosyn.slide.store_io import TMP_DIR, pid_alive, remove_path, writer_pid

    def dead(p: Path, prefix: str) -> bool:
        pid = writer_pid(p.name[len(prefix) :])
        return pid is None or not pid_alive(pid)

    leftovers = [p for p in (path / TMP_DIR).glob("*") if dead(p, "")]
    leftovers += [p for p in (path / "phase_cache").glob(".tmp-*") if dead(p, ".tmp-")]
    leftovers += [p for p in path.rglob("*.partial")] if repair else []
    for p in leftovers:
        report["problems"].append(f"temporary file {p.relative_to(path)} left by a writer")
        if repair:
            remove_path(p)
            report["repaired"] += 1
