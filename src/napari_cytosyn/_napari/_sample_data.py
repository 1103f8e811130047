"""Sample data: a small real H&E slide, and a synthetic slide rendered where you look.

The real sample is a public H&E image shipped in the package (``sample_data/``, credited in its
``sources.json``, with its licence): the TIA Centre's 1000 x 1000 px field of a carcinoma at
about 0.25 um/px (40x), which the embedded model was trained on (downsampled to 0.5 um/px). It
is written once as a three-level pyramidal TIFF (1000, 500, 250 px; lossless) in the cache
folder and opened through the plugin's reader, exactly like a user's slide. At 40x it is what
most real slides are, so inpainting it exercises the resampling between the slide's and the
model's (0.5 um/px) pixel sizes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ._config import load_config
from ._sample_image import SampleImage, _sample_entry, sample_image

SYNTHETIC_PX = 16384  # side of the synthetic sample (px at the model's mpp)
SYNTHETIC_STEPS: int | None = None  # sampler steps of the synthetic sample; None: the model's
MIN_LEVEL_PX = 200  # the pyramid stops before a level's shorter side drops under this


def sample_pyramid(level0: np.ndarray, min_px: int = MIN_LEVEL_PX) -> list[np.ndarray]:
    """Levels ``(h, w, 3)`` uint8, finest first, each the 2x area average of the one before,
    down to the last whose shorter side is at least ``min_px``."""
    from napari_cytosyn.chunk_grid import downsample_area

    levels = [level0]
    while min(levels[-1].shape[:2]) // 2 >= min_px:
        prev = levels[-1]
        h, w = prev.shape[0] // 2 * 2, prev.shape[1] // 2 * 2
        levels.append(downsample_area(prev[:h, :w], 2))
    return levels


def real_sample_path(cache_dir: Path | None = None) -> tuple[Path, SampleImage]:
    """Write (once) the sample's pyramidal TIFF in ``cache_dir/samples``; returns its path and
    the image it was built from."""
    from napari_cytosyn.slide.sample import write_pyramidal_tiff

    image = sample_image()
    folder = (cache_dir or load_config().cache_path()) / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    # The checksum in the name: a changed image never reuses a stale pyramid.
    path = folder / f"he_sample_{image.source['sha256'][:12]}.tif"
    if not path.exists():
        tmp = path.with_suffix(".tif.partial")
        write_pyramidal_tiff(
            tmp,
            sample_pyramid(image.rgb),
            mpp=(image.mpp, image.mpp),
            tile_px=256,
            compression="zlib",
            description=image.credit,
        )
        tmp.replace(path)  # complete or absent: an interrupted write is never opened
    return path, image


HE_NAME = "H&E sample 40x (TIA Centre, BSD-3)"


def _he_layer_data(path: Path, image: SampleImage) -> tuple[Any, dict[str, Any], str]:
    from ._reader import read_slides

    [(data, kwargs, kind)] = read_slides(str(path))
    # The whole pyramid (1.3 million px, 4 MB) read here, in the loading worker: napari slices
    # a layer on the GUI thread, and reading the slide's tiles there (decoding them in dask's
    # threads while it waits) froze the viewer 40-80 ms at the sample's first draw.
    data = [np.asarray(level) for level in data]
    kwargs["name"] = HE_NAME
    kwargs["metadata"] = {
        **kwargs["metadata"],
        "credit": image.credit,
        "sample_source": image.source,
    }
    return data, kwargs, kind


def loading(layer: Any) -> bool:
    """Whether ``layer`` is a sample whose pixels are still being loaded in a worker."""
    return bool(layer.metadata.get("cytosyn", {}).get("loading"))


def he_slide() -> list[tuple[Any, dict[str, Any], str]]:
    """npe2 sample: the small real H&E slide as a multiscale layer (see module doc); its name
    and ``metadata["credit"]`` / ``metadata["sample_source"]`` say where it comes from.

    napari calls sample functions on the GUI thread, and checking, decoding and writing the
    image and opening the TIFF take seconds the first time: in a viewer the layer appears at
    once (grey checks, ``metadata["cytosyn"]["loading"]``), the file is prepared and opened
    in a worker thread, then the layer reads it (:func:`loading` says when)."""
    import napari

    viewer = napari.current_viewer()
    if viewer is None:  # no GUI to keep responsive (scripts): load here
        return [_he_layer_data(*real_sample_path())]

    from ._layers import PendingImage

    entry = _sample_entry()
    h, w = (int(v) for v in entry["shape"][:2])
    shapes = [(h, w)]
    while min(shapes[-1]) // 2 >= MIN_LEVEL_PX:  # the levels sample_pyramid writes
        shapes.append((shapes[-1][0] // 2, shapes[-1][1] // 2))
    mpp = float(entry["mpp"])
    pending = PendingImage(
        viewer,
        shapes,
        {
            "name": HE_NAME,
            "rgb": True,
            "multiscale": True,
            "contrast_limits": (0, 255),
            "scale": (mpp, mpp),
            "units": ("um", "um"),
            "metadata": {"sample_source": entry},
        },
    )
    cache_dir = load_config().cache_path()
    return _load_in_worker(
        "H&E sample",
        lambda: _he_layer_data(*real_sample_path(cache_dir)),
        pending,
        "failed to load",
    )


def _load_in_worker(title: str, load: Callable[[], Any], pending: Any, failed: str) -> list:
    """Run ``load`` in a worker thread and hand its result to ``pending.attach``; the pending
    layer's data is returned to napari at once (GUI thread). Errors are shown as
    "<title> <failed>: <error>"."""
    from napari.utils.notifications import show_error

    from ._qt._jobs import Job

    job = Job(title, lambda progress, cancel: load(), show_progress=False)
    job.done.connect(pending.attach)
    job.failed.connect(lambda exc: show_error(f"{title} {failed}: {exc}"))
    job.finished.connect(lambda: _LOADING.discard(job))
    _LOADING.add(job)
    job.start()
    return [pending.layer_data()]


_LOADING: set = set()  # sample jobs in flight (kept alive until they finish)
SAMPLE_CHUNK_PX = 256


def synthetic_slide() -> list[tuple[Any, dict[str, Any], str]]:
    """npe2 sample: a synthetic slide (``SYNTHETIC_PX`` a side) of the embedded model.

    Loading the model and opening the store take seconds, so they run in a worker thread: the
    layer appears at once (grey checks: not generated yet), then renders lazily where the
    viewer looks once the model is loaded; the GUI never waits for it."""
    import napari

    from napari_cytosyn.models import get_info

    from ._layers import PendingSlide

    viewer = napari.current_viewer()
    if viewer is None:
        raise RuntimeError("the synthetic sample needs an open napari viewer")
    config = load_config()
    store = config.cache_path() / "samples" / "synthetic-sample.cytosyn"
    pending = PendingSlide(
        viewer, store, SYNTHETIC_PX, SYNTHETIC_PX, SAMPLE_CHUNK_PX, get_info("cytosyn-tiny").mpp
    )
    return _load_in_worker(
        "Synthetic slide sample",
        lambda: _open_synthetic_sample(store, config.device),
        pending,
        "failed",
    )


def _open_synthetic_sample(store: Path, device: str) -> Any:
    """The synthetic sample's slide (model loaded, store created or reopened): worker thread."""
    from napari_cytosyn.models import get_info, load_model
    from napari_cytosyn.sampling import SamplerSettings

    from . import _actions

    with _actions._LOAD_LOCK:
        model = load_model("cytosyn-tiny", device=device)
        _actions.freeze_long_lived()
    steps = SYNTHETIC_STEPS or int(get_info("cytosyn-tiny").defaults["steps"])
    settings = SamplerSettings(steps=steps, seed=1)
    if store.exists():
        from napari_cytosyn.slide.store import StoreMismatchError
        from napari_cytosyn.slide.synthetic import SyntheticSlide

        try:
            return SyntheticSlide.open(store, model=model, settings=settings)
        except StoreMismatchError:  # a cache of another version, model or recipe: made again
            pass
    return _actions.create_synthetic(
        store, model, SYNTHETIC_PX, SYNTHETIC_PX, settings, chunk_px=SAMPLE_CHUNK_PX, overwrite=True
    )
