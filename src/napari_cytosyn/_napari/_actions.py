"""What the dock widget's buttons do, as plain functions over slides and models.

Each ``*_work`` function returns a callable ``work(progress, cancel)`` for a
:class:`~._qt._jobs.Job`; it runs in a worker thread and touches no napari layer. The widget
only gathers inputs on the GUI thread and shows results when the work returns.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


# One lock for the whole process: model loading and the first import of heavy modules run one
# at a time, whatever the viewer, dock or thread (diffusers resolves its names lazily, and two
# threads resolving them at once fail with "cannot import name 'AutoencoderKL'").
_LOAD_LOCK = threading.RLock()
_IMPORTED = False


def ensure_imports() -> None:
    """Import torch and diffusers (when installed) once, under the process-wide load lock.

    Worker threads call it before they touch a model, so no two threads import them at once."""
    global _IMPORTED
    if _IMPORTED:
        return
    with _LOAD_LOCK:
        if _IMPORTED:
            return
        import torch  # noqa: F401

        # optional: only the diffusers-based backends need it
        with contextlib.suppress(ImportError):
            from diffusers import AutoencoderKL, UNet2DModel  # noqa: F401
        import napari_cytosyn.sampling  # noqa: F401

        _IMPORTED = True


def freeze_long_lived() -> None:
    """Move every object Python's cyclic garbage collector tracks now to its permanent
    generation (``gc.freeze``), which later collections do not scan.

    napari, torch and a loaded model make 550-650k tracked objects (modules, classes,
    functions, the model), and every full collection scans them all holding the GIL: 500-600 ms
    in which napari's GUI thread cannot run, every few jobs, whichever thread triggers it
    (``benchmarks/gui_latency.py``); after a freeze, a few ms. Called when they are loaded
    (they live as long as the process); frozen objects are still freed by reference counting,
    and :func:`thaw` gives them back to the collector when a viewer closes."""
    gc.freeze()


def thaw() -> None:
    """Undo :func:`freeze_long_lived`: a viewer closes, what was frozen with it may be garbage."""
    gc.unfreeze()


class ModelProvider:
    """Loads models by (name, device, options) once and keeps them (thread-safe).

    ``override`` replaces whatever the picker says (scripts, tests, a model built in Python).
    """

    def __init__(self) -> None:
        self._models: dict[tuple, Any] = {}
        self.override: Any = None

    def get(self, name: str, device: str = "auto", **hub_options: Any) -> Any:
        if self.override is not None:
            return self.override
        key = (name, device, tuple(sorted(hub_options.items())))
        with _LOAD_LOCK:
            model = self._models.get(key)
            if model is None:
                ensure_imports()
                from napari_cytosyn.models import load_model

                model = load_model(name, device=device, **hub_options)
                self._models[key] = model
                _fit_preview(model)
                freeze_long_lived()
            return model


def _fit_preview(model: Any) -> None:
    """Fit the progressive preview's latent -> RGB map of a model as it loads (0.1-0.4 s of
    its encoder): a new slide's first model call may otherwise have to wait for it."""
    from ._preview import latent_rgb_of

    try:
        latent_rgb_of(model)
    except Exception as exc:  # a preview is a nicety: the view fits it again or goes without
        log.info("no preview map for %r: %s", model, exc)


_BACKGROUND: set[threading.Thread] = set()  # steps cancelled jobs left running


def finish_in_background(step: Callable[[], Any], cancel: Any) -> Any:
    """``step()``, run in a thread of its own while the calling job waits for it or for
    ``cancel`` (a ``threading.Event``; ``None``: run here).

    For the part of a job that writes nothing: on Cancel the job raises ``Cancelled`` at once
    and the step runs on in the background to its next Cancel check, its result dropped. At a
    worker's lowered priority on a busy machine, single steps of a job that cannot stop midway
    (the first 40x decoder load, a slide's first tissue mask, a slide read) took 5-20 s, and a
    Cancel waited for them; what such a step loads is kept for the next job. The thread runs at
    the job thread's CPU priority (Linux: a new thread takes its maker's nice value).
    """
    from napari_cytosyn.sampling.settings import check_cancel

    if cancel is None:
        return step()
    check_cancel(cancel)
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = step()
        except BaseException as exc:  # handed to the job, or dropped once it has gone
            out["error"] = exc
        finally:
            _BACKGROUND.discard(threading.current_thread())

    thread = threading.Thread(target=run, name="cytosyn-background", daemon=True)
    _BACKGROUND.add(thread)
    thread.start()
    while thread.is_alive() and not cancel.is_set():
        thread.join(0.02)
    check_cancel(cancel)
    if "error" in out:
        raise out["error"]
    return out["value"]


def join_background(timeout: float = 5.0) -> None:
    """Wait up to ``timeout`` s in all for the steps cancelled jobs left running (at exit: a
    thread left inside torch while Python finalises aborts the process)."""
    import time

    end = time.monotonic() + timeout
    for thread in list(_BACKGROUND):
        thread.join(max(0.0, end - time.monotonic()))


EDIT_STORE_SUFFIX = ".cytosyn"


def new_edit_store(real_path: str | Path, cache_dir: Path) -> Path:
    """A new, unused edit store path for a real slide in the cache folder.

    Every napari session starts with no edits: edits of an earlier session stay in their store
    and come back only when that store is opened on purpose (drag it onto napari, or "Open edit
    store..." in the widget)."""
    import datetime as dt

    real_path = Path(real_path).resolve()
    digest = hashlib.sha1(str(real_path).encode()).hexdigest()[:8]
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = cache_dir / "edits" / f"{real_path.stem}-{digest}-{stamp}"
    path, n = base.with_suffix(EDIT_STORE_SUFFIX), 2
    while path.exists():
        path = base.with_name(f"{base.name}-{n}").with_suffix(EDIT_STORE_SUFFIX)
        n += 1
    return path


def open_composite(real_path: str | Path, cache_dir: Path) -> Any:
    """A ``CompositeSlide`` of a real slide file with a new, empty edit store."""
    from napari_cytosyn.slide import open_slide
    from napari_cytosyn.slide.composite import CompositeSlide

    store = new_edit_store(real_path, cache_dir)
    store.parent.mkdir(parents=True, exist_ok=True)
    return CompositeSlide(open_slide(real_path), store)


def open_edit_store(store: str | Path) -> Any:
    """Reopen an edit store (explicitly): its real slide is the file recorded in it."""
    from napari_cytosyn.slide.kinds import open_any, store_kind

    if store_kind(store) != "edit-store":
        raise ValueError(f"{store} is not a napari-cytosyn edit store")
    return open_any(store)


def inpaint_work(
    composite: Any,
    region: tuple[int, int, int, int],
    mask: np.ndarray,
    get_model: Callable[[], Any],
    settings: Any,
    reference: Any = "auto",
    ring_um: float | None = None,
) -> Callable[[Progress, Any], dict[str, Any]]:
    """Inpaint ``mask`` (``(h, w)`` bool over ``region`` ``(y, x, h, w)``, level-0 px) into the
    composite's edit store; the real slide file is only read. ``reference``, ``ring_um``: see
    ``CompositeSlide.inpaint``."""

    def work(progress: Progress, cancel: Any) -> dict[str, Any]:
        from napari_cytosyn.models import model_for_slide

        real_mpp = composite.real.mpp
        side = real_mpp.side_um("inpainting") if real_mpp else None

        def live(done: int, total: int) -> None:  # a step left running reports nothing
            if cancel is None or not cancel.is_set():
                progress(done, total)

        def make() -> Any:
            with _LOAD_LOCK:  # one load, also when a cancelled job's load is still running
                # cytosyn-tiny on a 40x slide: its 40x decoder, so nothing is upsampled; the
                # edit's record names the model used
                model, why = model_for_slide(get_model(), side)
            if why:
                log.info(why)
            return composite.make_edit(
                region,
                mask,
                model,
                settings,
                progress=live,
                cancel=cancel,
                reference=reference,
                ring_um=ring_um,
            )

        # Everything but the writing runs where a Cancel need not wait for it: the job ends
        # at once, nothing is written, what a model load or a tissue mask loaded is kept.
        return composite.write_edit(finish_in_background(make, cancel), cancel)

    return work


def px_box_of(rect_um: tuple[float, float, float, float], mpp: float) -> tuple[int, int, int, int]:
    """World rectangle ``(y0, x0, y1, x1)`` in um -> ``(y, x, h, w)`` in px at ``mpp``, on the
    pixel grid anchored at the world origin (so a region and its neighbours share one lattice)."""
    y0, x0 = math.floor(rect_um[0] / mpp), math.floor(rect_um[1] / mpp)
    y1, x1 = math.ceil(rect_um[2] / mpp), math.ceil(rect_um[3] / mpp)
    if y1 <= y0 or x1 <= x0:
        raise ValueError("the rectangle has no area; drag out a larger one")
    return y0, x0, y1 - y0, x1 - x0


def synthesize_work(
    boxes_px: list[tuple[int, int, int, int]],
    get_model: Callable[[], Any],
    settings: Any,
    max_px: int = 4096 * 4096,
) -> Callable[[Progress, Any], tuple[list[np.ndarray], dict]]:
    """Generate new tissue for each ``(y, x, h, w)`` box (model px, slide-origin anchored).

    The work returns ``(images, recipe)``: the region recipe as run (``autocast`` resolved,
    :func:`~napari_cytosyn.sampling.recipe.make_recipe`)."""
    total_px = sum(h * w for _, _, h, w in boxes_px)
    if total_px > max_px:
        raise ValueError(
            f"the rectangles cover {total_px / 1e6:.1f} Mpx at the model's resolution, over the "
            f"{max_px / 1e6:.0f} Mpx limit for region mode; create a synthetic slide instead"
        )

    def work(progress: Progress, cancel: Any) -> tuple[list[np.ndarray], dict]:
        from napari_cytosyn.sampling import generate_region, resolve_settings
        from napari_cytosyn.sampling.recipe import make_recipe

        model = finish_in_background(get_model, cancel)  # loaded once, kept when cancelled
        run = resolve_settings(settings, model)
        out = []
        n = len(boxes_px)
        for i, (y, x, h, w) in enumerate(boxes_px):

            def sub(done: int, total: int, i: int = i) -> None:
                progress(i * total + done, n * total)

            out.append(generate_region(model, run, y, x, h, w, progress=sub, cancel=cancel))
        return out, make_recipe(model, run, "region")

    return work


def create_synthetic(
    store: Path,
    model: Any,
    width: int,
    height: int,
    settings: Any,
    chunk_px: int = 256,
    overwrite: bool = False,
) -> Any:
    """Create a ``SyntheticSlide`` with ``settings`` (their seed is the slide's; instant, nothing
    is generated yet); ``overwrite`` replaces a store of ours at ``store``."""
    from napari_cytosyn.slide.synthetic import SyntheticSlide

    store.parent.mkdir(parents=True, exist_ok=True)
    return SyntheticSlide.create(
        store, model, width, height, settings, chunk_px=chunk_px, overwrite=overwrite
    )


def render_all_work(slide: Any) -> Callable[[Progress, Any], int]:
    """Generate every missing chunk of a synthetic slide (and its pyramid)."""

    def work(progress: Progress, cancel: Any) -> int:
        return slide.render_all(progress=progress, cancel=cancel)

    return work


EXPORT_FORMATS = {"OME-Zarr": ".ome.zarr", "OME-TIFF": ".ome.tif"}
_EXPORT_FORMAT_IDS = {"OME-Zarr": "ome-zarr", "OME-TIFF": "ome-tiff"}


def export_stem(slide: Any) -> str:
    """A file stem for a slide's export: store and slide suffixes dropped, ``-edited`` for an
    edited slide, characters awkward in file names replaced (``case.svs`` edited ->
    ``case-edited``; ``seed1.cytosyn`` -> ``seed1``)."""
    from napari_cytosyn.export.slide_export import export_name

    edited = slide.kind == "composite"
    stem = slide.real.name if edited else export_name(slide)  # slide names carry no suffix
    stem = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in stem).strip("-.")
    return (stem or "slide") + ("-edited" if edited else "")


def default_export_path(slide: Any, fmt: str, last_dir: str | Path | None = None) -> Path:
    """Where the Export dialog starts: the last folder exported to, else the folder of the real
    slide (edited slides) or of the store (synthetic slides); named after the slide, with the
    format's suffix once (``case-edited.ome.tif``, never ``.zarr.ome.zarr``)."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {list(EXPORT_FORMATS)}")
    if last_dir and Path(last_dir).is_dir():
        folder = Path(last_dir)
    elif slide.kind == "composite":
        folder = Path(slide.real.path).parent
    else:
        folder = Path(slide.path).parent
    return folder / f"{export_stem(slide)}{EXPORT_FORMATS[fmt]}"


def megapixels(slide: Any, chunks: int | None = None) -> float:
    """Level-0 megapixels of a slide, or of ``chunks`` of its level-0 chunks."""
    if chunks is None:
        h, w = slide.level_shapes[0]
        return h * w / 1e6
    return chunks * slide.chunk_px**2 / 1e6


def export_work(
    slide: Any, path: Path, fmt: str, overwrite: bool = False, render_missing: bool = False
) -> Callable[[Progress, Any], Path]:
    """Export a slide (synthetic, edited or real) with :func:`napari_cytosyn.export.export_slide`
    as ``fmt`` (a key of ``EXPORT_FORMATS``): its synthetic mask and provenance go with it.

    A synthetic slide must be complete unless ``render_missing`` (then its missing chunks are
    rendered first, in the same job: ``progress`` counts chunks, then the writer's tiles; the
    widget asks first when they are many). The writers write into a temporary path and rename it at
    the end, so a cancelled or failed export leaves nothing behind.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {list(EXPORT_FORMATS)}")

    def work(progress: Progress, cancel: Any) -> Path:
        from napari_cytosyn.export import export_slide

        return export_slide(
            slide,
            path,
            format=_EXPORT_FORMAT_IDS[fmt],
            overwrite=overwrite,
            render_missing=render_missing,
            progress=progress,
            cancel=cancel,
        )

    return work
