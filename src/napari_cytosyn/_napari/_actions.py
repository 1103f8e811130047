"""What the dock widget's buttons do, as plain functions over slides and models.

Each ``*_work`` function returns a callable ``work(progress, cancel)`` for a
:class:`~._qt._jobs.Job`; it runs in a worker thread and touches no napari layer. The widget
only gathers inputs on the GUI thread and shows results when the work returns.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Progress = Callable[[int, int], None]


class ModelProvider:
    """Loads models by (name, device, options) once and keeps them (thread-safe).

    ``override`` replaces whatever the picker says (scripts, tests, a model built in Python).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[tuple, Any] = {}
        self.override: Any = None

    def get(self, name: str, device: str = "auto", **hub_options: Any) -> Any:
        if self.override is not None:
            return self.override
        key = (name, device, tuple(sorted(hub_options.items())))
        with self._lock:
            model = self._models.get(key)
            if model is None:
                from napari_cytosyn.models import load_model

                model = load_model(name, device=device, **hub_options)
                self._models[key] = model
            return model


def edit_store_for(real_path: str | Path, cache_dir: Path) -> Path:
    """Edit store of a real slide in the cache folder (one per slide file, stable name)."""
    real_path = Path(real_path).resolve()
    digest = hashlib.sha1(str(real_path).encode()).hexdigest()[:10]
    return cache_dir / "edits" / f"{real_path.name}-{digest}.zarr"


def open_composite(real_path: str | Path, cache_dir: Path) -> Any:
    """The ``CompositeSlide`` of a real slide file (created on first use, reopened after)."""
    from napari_cytosyn.slide import open_slide
    from napari_cytosyn.slide.composite import CompositeSlide

    store = edit_store_for(real_path, cache_dir)
    store.parent.mkdir(parents=True, exist_ok=True)
    return CompositeSlide(open_slide(real_path), store)


def inpaint_work(
    composite: Any,
    region: tuple[int, int, int, int],
    mask: np.ndarray,
    get_model: Callable[[], Any],
    settings: Any,
) -> Callable[[Progress, Any], dict[str, Any]]:
    """Inpaint ``mask`` (``(h, w)`` bool over ``region`` ``(y, x, h, w)``, level-0 px) into the
    composite's edit store; the real slide file is only read."""

    def work(progress: Progress, cancel: Any) -> dict[str, Any]:
        model = get_model()
        return composite.inpaint(region, mask, model, settings, progress=progress, cancel=cancel)

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
) -> Callable[[Progress, Any], tuple[list[np.ndarray], Any]]:
    """Generate new tissue for each ``(y, x, h, w)`` box (model px, slide-origin anchored).

    The work returns ``(images, settings)``: the settings as run (``autocast`` resolved)."""
    total_px = sum(h * w for _, _, h, w in boxes_px)
    if total_px > max_px:
        raise ValueError(
            f"the rectangles cover {total_px / 1e6:.1f} Mpx at the model's resolution, over the "
            f"{max_px / 1e6:.0f} Mpx limit for region mode; create a synthetic slide instead"
        )

    def work(progress: Progress, cancel: Any) -> tuple[list[np.ndarray], Any]:
        from napari_cytosyn.sampling import generate_region, resolve_settings

        model = get_model()
        run = resolve_settings(settings, model)
        out = []
        n = len(boxes_px)
        for i, (y, x, h, w) in enumerate(boxes_px):

            def sub(done: int, total: int, i: int = i) -> None:
                progress(i * total + done, n * total)

            out.append(generate_region(model, run, y, x, h, w, progress=sub, cancel=cancel))
        return out, run

    return work


def create_synthetic(
    store: Path, model: Any, width: int, height: int, seed: int, settings: Any, chunk_px: int = 256
) -> Any:
    """Create a ``SyntheticSlide`` (instant; nothing is generated yet)."""
    from napari_cytosyn.slide.synthetic import SyntheticSlide

    store.parent.mkdir(parents=True, exist_ok=True)
    return SyntheticSlide.create(
        store, model, width, height, seed=seed, settings=settings, chunk_px=chunk_px
    )


def render_all_work(slide: Any) -> Callable[[Progress, Any], int]:
    """Generate every missing chunk of a synthetic slide (and its pyramid)."""

    def work(progress: Progress, cancel: Any) -> int:
        return slide.render_all(progress=progress, cancel=cancel)

    return work


EXPORT_FORMATS = {"OME-Zarr": ".ome.zarr", "OME-TIFF": ".ome.tif"}


def export_work(
    slide: Any, path: Path, fmt: str, overwrite: bool = False
) -> Callable[[Progress, Any], Path]:
    """Export a synthetic slide or a composite with its synthetic mask and provenance.

    A synthetic slide's missing chunks are generated on the way (it is all synthetic); a
    composite is exported as shown, with ``labels/synthetic`` marking the edited pixels.
    """
    from napari_cytosyn.export import build_provenance, write_ome_tiff, write_ome_zarr

    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {list(EXPORT_FORMATS)}")
    writer = write_ome_zarr if fmt == "OME-Zarr" else write_ome_tiff

    def work(progress: Progress, cancel: Any) -> Path:
        kind = type(slide).__name__
        if kind == "SyntheticSlide":
            attrs = slide.store.attrs
            levels = slide.levels
            import dask.array as da

            # Every pixel of a synthetic slide is synthetic: a lazy all-ones mask, never held.
            masks = [da.ones(levels[0].shape[:2], dtype=np.uint8, chunks=slide.chunk_px)]
            prov = build_provenance(
                model=attrs["model"],
                seed=slide.seed,
                sampler=attrs["settings"],
                extra={"synthetic": {"kind": "synthetic-slide", "lazy_spec": attrs["lazy_spec"]}},
            )
        else:
            levels = slide.levels
            masks = slide.mask_levels
            prov = build_provenance(
                source_path=slide.real.path,
                extra={"edits": slide.edits},
            )
        return writer(
            path,
            levels,
            mpp=slide.mpp,
            mask_levels=masks,
            provenance=prov,
            name=slide.name,
            overwrite=overwrite,
            progress=progress,
            cancel=cancel,
        )

    return work
