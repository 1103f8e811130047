"""Sample data: a small real H&E slide, and a synthetic slide rendered where you look.

The real sample is built from the public H&E image the embedded model was trained on when that
image ships in the package (``models/weights/cytosyn-tiny/`` with a ``sources.json`` credit);
otherwise it is the deterministic H&E-like test pattern of :mod:`napari_cytosyn.slide.sample`,
and the layer name says so. Either way it is written once as a pyramidal TIFF in the cache
folder and opened through the plugin's reader, exactly like a user's slide.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ._config import load_config

SAMPLE_PX = 2048  # side of the pattern sample (px at 0.5 um/px)
SYNTHETIC_PX = 16384  # side of the synthetic sample (px at the model's mpp)
SYNTHETIC_STEPS: int | None = None  # sampler steps of the synthetic sample; None: the model's


def training_image() -> tuple[np.ndarray, dict[str, Any]] | None:
    """The embedded model's public training image ``(h, w, 3)`` uint8 at 0.5 um/px and its
    credit, when the package ships one; ``None`` otherwise."""
    folder = resources.files("napari_cytosyn") / "models" / "weights" / "cytosyn-tiny"
    try:
        sources = json.loads((folder / "sources.json").read_text())
    except (OSError, ValueError):
        return None
    for entry in sources if isinstance(sources, list) else []:
        name = entry.get("file", "")
        if name.endswith(".png") and (folder / name).is_file():
            from skimage.io import imread

            with resources.as_file(folder / name) as path:
                rgb = np.asarray(imread(path))[..., :3].astype(np.uint8)
            return rgb, entry
    return None


def _pyramid(level0: np.ndarray, min_px: int = 128) -> list[np.ndarray]:
    from napari_cytosyn.slide.sample import downsample_area

    levels = [level0]
    while min(levels[-1].shape[:2]) // 2 >= min_px:
        prev = levels[-1]
        h, w = prev.shape[0] // 2 * 2, prev.shape[1] // 2 * 2
        levels.append(downsample_area(prev[:h, :w], 2))
    return levels


def real_sample_path(cache_dir: Path | None = None) -> tuple[Path, str]:
    """Write (once) and return the real sample slide file and its credit line."""
    from napari_cytosyn.slide.sample import write_pyramidal_tiff, write_sample_slide

    folder = (cache_dir or load_config().cache_path()) / "samples"
    folder.mkdir(parents=True, exist_ok=True)
    found = training_image()
    if found is not None:
        rgb, entry = found
        credit = (
            f"{entry.get('member', 'training image')} from {entry.get('package', 'a BSD package')}"
            " (BSD licence), resampled to 0.5 um/px"
        )
        path = folder / "he_training_image.tif"
        if not path.exists():
            write_pyramidal_tiff(
                path,
                _pyramid(rgb),
                mpp=(0.5, 0.5),
                tile_px=256,
                compression="zlib",
                description=credit,
            )
        return path, credit
    credit = "napari-cytosyn H&E-like test pattern (no real tissue)"
    path = folder / f"he_pattern_{SAMPLE_PX}.tif"
    if not path.exists():
        write_sample_slide(
            path, SAMPLE_PX, SAMPLE_PX, n_levels=4, mpp=(0.5, 0.5), compression="zlib"
        )
    return path, credit


def he_slide() -> list[tuple[Any, dict[str, Any], str]]:
    """npe2 sample: the small real H&E slide as a multiscale layer (see module doc)."""
    from ._reader import read_slides

    path, credit = real_sample_path()
    [(data, kwargs, kind)] = read_slides(str(path))
    kwargs["metadata"] = {**kwargs["metadata"], "credit": credit}
    return [(data, kwargs, kind)]


def synthetic_slide() -> list[tuple[Any, dict[str, Any], str]]:
    """npe2 sample: a synthetic slide (``SYNTHETIC_PX`` a side) of the embedded model.

    It renders lazily where the viewer looks (a renderer is attached to the current viewer)."""
    import napari

    from napari_cytosyn.models import get_info, load_model
    from napari_cytosyn.sampling import SamplerSettings

    from . import _actions, _layers

    viewer = napari.current_viewer()
    if viewer is None:
        raise RuntimeError("the synthetic sample needs an open napari viewer")
    config = load_config()
    model = load_model("cytosyn-tiny", device=config.device)
    steps = SYNTHETIC_STEPS or int(get_info("cytosyn-tiny").defaults["steps"])
    settings = SamplerSettings(steps=steps, seed=1)
    store = config.cache_path() / "samples" / "synthetic-sample.zarr"
    if store.exists():
        from napari_cytosyn.slide.synthetic import SyntheticSlide

        slide = SyntheticSlide.open(store, model=model)
    else:
        slide = _actions.create_synthetic(store, model, SYNTHETIC_PX, SYNTHETIC_PX, 1, settings)
    return [_layers.synthetic_layer_data(viewer, slide)]
