"""What the command line checks before it writes: outputs never hit inputs or foreign data.

``--out`` is never a path the job reads, a folder holding one or a path inside one;
``--overwrite`` replaces only an output this tool wrote (recognised by its embedded provenance);
a job holds a lock file beside its output while it runs, and temporary siblings
(``.<name>.tmp-*``, ``scratch``, ``edits``, ``old``) of jobs that hold none any more (``kill -9``)
are removed when the next job on that output starts; SIGTERM unwinds like Ctrl+C.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from napari_cytosyn.slide.store_io import pid_alive, remove_path

_TEMP_KINDS = ("tmp", "scratch", "edits", "old")


class OutputError(ValueError):
    """An output path that would destroy an input or data this tool did not write."""


class Terminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM."""


def install_sigterm() -> None:
    """Turn SIGTERM into :class:`Terminated`, so ``finally`` blocks and ``with`` exits run."""

    def handler(signum: int, frame: Any) -> None:
        raise Terminated(f"terminated by signal {signum}")

    with contextlib.suppress(ValueError):  # not the main thread: keep the default
        signal.signal(signal.SIGTERM, handler)


def _related(a: Path, b: Path) -> str | None:
    if a == b:
        return "is"
    if b in a.parents:
        return "is inside"
    if a in b.parents:
        return "contains"
    return None


def check_output(out: Path, overwrite: bool, reads: Iterable[str | os.PathLike | None]) -> None:
    """Fail before any work when ``out`` cannot be written safely.

    ``reads``: every path the job reads (``None`` entries are skipped). Raises
    :class:`OutputError` when ``out`` is, contains or lies inside one of them, or when it exists
    and is not an export written by napari-cytosyn (with ``overwrite``), and
    ``FileExistsError`` when it exists without ``overwrite``.
    """
    from napari_cytosyn.export._stream import output_path

    target = out.resolve()
    for read in reads:
        if read is None:
            continue
        source = Path(read).resolve()
        how = _related(target, source)
        if how:
            raise OutputError(
                f"--out {out} {how} {Path(read)}, which this job reads; choose another output path"
            )
    output_path(out, overwrite)
    if out.exists() or out.is_symlink():
        if out.is_symlink():
            raise OutputError(f"--out {out} is a symbolic link; it will not be replaced")
        if export_provenance(out) is None:
            raise OutputError(
                f"{out} exists and is not an export written by napari-cytosyn; it will not be "
                "overwritten: remove it yourself or choose another path"
            )


def export_provenance(path: Path) -> dict[str, Any] | None:
    """The provenance our writers stored in an OME-Zarr or OME-TIFF, if any."""
    from napari_cytosyn.slide.provenance import PROVENANCE_KEY

    prov = None
    try:
        if path.is_dir():
            import zarr

            prov = zarr.open_group(str(path), mode="r").attrs.get(PROVENANCE_KEY)
        else:
            import tifffile

            with tifffile.TiffFile(path) as tf:
                if tf.is_svs:
                    from napari_cytosyn.export.tiff import read_svs_provenance

                    prov = read_svs_provenance(tf.pages[0].description)
                elif tf.is_ome:
                    image = tifffile.xml2dict(tf.ome_metadata)["OME"]["Image"]
                    image = image[0] if isinstance(image, list) else image
                    prov = json.loads(image["Description"]) if image.get("Description") else None
    except Exception:  # not ours, not parseable
        return None
    return prov if isinstance(prov, dict) and prov else None


def _job_lock_name(out: Path) -> str:
    return f".{out.name}.job-"


def _locked_by_live_job(lock: Path) -> bool:
    """True when ``lock`` (a job's lock file) is held by a running process."""
    import fcntl

    try:
        with open(lock, "a+b") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    except OSError:
        return True
    return False


def clean_orphans(out: Path) -> list[Path]:
    """Remove temporary siblings of ``out`` left by jobs that died; returns what was removed.

    A temporary sibling belongs to a job on the same output; it is an orphan when no job lock
    of ``out`` is held by a live process (jobs hold theirs for their whole run).
    """
    parent = out.parent
    if not parent.is_dir():
        return []
    prefix = _job_lock_name(out)
    locks = [p for p in parent.iterdir() if p.name.startswith(prefix)]
    live = []
    for lock in locks:
        m = re.fullmatch(re.escape(prefix) + r"(\d+)\.lock", lock.name)
        pid = int(m.group(1)) if m else -1
        if pid > 0 and pid_alive(pid) and _locked_by_live_job(lock):
            live.append(lock)
        else:
            with contextlib.suppress(OSError):
                lock.unlink()
    if live:
        return []
    pattern = re.compile(re.escape(f".{out.name}.") + "(" + "|".join(_TEMP_KINDS) + ")-")
    removed = []
    for p in parent.iterdir():
        if pattern.match(p.name):
            remove_path(p)
            removed.append(p)
    return removed


@contextlib.contextmanager
def output_job(out: Path) -> Iterator[None]:
    """Hold ``out``'s job lock while the block runs, after removing orphans of dead jobs."""
    import fcntl

    clean_orphans(out)
    lock = out.parent / f"{_job_lock_name(out)}{os.getpid()}.lock"
    with open(lock, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                lock.unlink()
