"""The headless demo behind ``napari-cytosyn demo --out DIR``: synthesize, inpaint, export, preview.

Synthesizes a ``size x size`` image in region mode (far cheaper than lazy mode at demo size) as
``DIR/synthetic.ome.zarr``; inpaints a central disc of it (edits in ``DIR/inpainted.edits``) and
exports ``DIR/inpainted.ome.zarr`` with the mask as ``labels/synthetic``; writes
``DIR/preview.png`` (synthetic | inpainted, mask outlined); checks that no pixel outside the mask
changed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def disc_mask(size: int) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """A centred disc of a fifth of ``size`` in radius: region ``(y, x, h, w)`` and ``(h, w)``
    bool mask in level-0 px."""
    r = max(8, int(size * 0.2))
    c = size // 2
    yy, xx = np.mgrid[-r:r, -r:r]
    return (c - r, c - r, 2 * r, 2 * r), (yy + 0.5) ** 2 + (xx + 0.5) ** 2 <= r * r


def preview(left: np.ndarray, right: np.ndarray, mask0: np.ndarray, max_px: int = 1024) -> Any:
    """Side-by-side ``(h, 2w + 8, 3)`` uint8 with the mask's outline drawn on the right."""
    from skimage.segmentation import find_boundaries

    outline = find_boundaries(mask0, mode="thick")
    right = right.copy()
    right[outline] = (0, 200, 0)
    gap = np.full((left.shape[0], 8, 3), 255, np.uint8)
    both = np.concatenate([left, gap, right], axis=1)
    step = max(1, int(np.ceil(both.shape[1] / max_px)))
    return both[::step, ::step]


def run_demo(
    model: Any,
    settings: Any,
    out: str | Path,
    *,
    size: int = 512,
    overwrite: bool = False,
    version: str = "0.4",
    progress_bar: Callable[[str, str], Any] | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the demo described in the module docstring with ``model`` and ``settings``
    (``SamplerSettings``, its seed used); returns what it wrote and measured.

    ``progress_bar(desc, unit)`` is a context manager giving a ``progress(done, total)``
    callback (the CLI's tqdm bars); ``say`` reports each step. ``version``: OME-Zarr 0.4 or 0.5.
    """
    import imageio.v3 as iio

    from napari_cytosyn.export import export_slide
    from napari_cytosyn.sampling import generate_region, make_recipe, resolve_settings
    from napari_cytosyn.sampling.conditioning import is_conditional
    from napari_cytosyn.slide.array import ArraySlide
    from napari_cytosyn.slide.composite import CompositeSlide
    from napari_cytosyn.slide.kinds import open_any
    from napari_cytosyn.slide.provenance import region_provenance

    bars = progress_bar or (lambda desc, unit: contextlib.nullcontext(None))
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; the demo writes a folder")
    if size < 64:
        raise ValueError(f"--size {size}: use at least 64 px")
    out.mkdir(parents=True, exist_ok=True)
    synthetic_zarr, inpainted_zarr = out / "synthetic.ome.zarr", out / "inpainted.ome.zarr"
    png = out / "preview.png"
    if not overwrite:
        existing = [p.name for p in (synthetic_zarr, inpainted_zarr, png) if p.exists()]
        if existing:
            raise FileExistsError(f"{out} already holds {', '.join(existing)}; pass --overwrite")
    started = time.perf_counter()
    settings = resolve_settings(settings, model)

    with bars("synthesize", "batch") as bar:
        image = generate_region(model, settings, 0, 0, size, size, progress=bar)
    provenance = region_provenance(make_recipe(model, settings, "region"), (0, 0, size, size))
    region_slide = ArraySlide(
        [image], mpp=float(model.mpp), kind="synthetic", provenance=provenance, name="synthetic"
    )
    export_slide(region_slide, synthetic_zarr, chunk_px=256, version=version, overwrite=overwrite)
    say(f"wrote {synthetic_zarr}")

    real = open_any(synthetic_zarr)
    region, mask = disc_mask(size)
    # a conditional model takes the real tissue in a ring around the disc as its reference; a
    # ring cell's crop (one model tile) must be mostly tissue outside the disc, which an image
    # under two tiles cannot give: there the disc is inpainted unconditioned, as it was made
    reference = "auto" if size >= 2 * model.tile_px else "none"
    if reference == "none" and is_conditional(model):
        say(f"--size {size} < {2 * model.tile_px} px (two model tiles): inpainting unconditioned")
    composite = CompositeSlide(real, out / "inpainted.edits", chunk_px=256, overwrite=True)
    with bars("inpaint", "step") as bar:
        composite.inpaint(region, mask, model, settings, progress=bar, reference=reference)
    with bars(f"export {inpainted_zarr.name}", "chunk") as bar:
        export_slide(composite, inpainted_zarr, version=version, overwrite=overwrite, progress=bar)
    say(f"wrote {inpainted_zarr}")

    before = real.read_region(0, 0, 0, size, size)
    after = open_any(inpainted_zarr).read_region(0, 0, 0, size, size)
    mask0 = np.zeros((size, size), bool)
    y, x, h, w = region
    mask0[y : y + h, x : x + w] = mask
    changed_outside = int(np.any(before != after, axis=-1)[~mask0].sum())
    changed_inside = float(np.any(before != after, axis=-1)[mask0].mean())
    iio.imwrite(png, preview(before, after, mask0))
    seconds = time.perf_counter() - started
    say(f"wrote {png}")
    say(
        f"demo done in {seconds:.1f} s with model {model.name!r}: {int(mask0.sum())} px "
        f"inpainted ({changed_inside:.0%} of them changed), {changed_outside} px changed "
        "outside the mask (must be 0)",
    )
    if changed_outside:
        raise RuntimeError(f"{changed_outside} px outside the mask changed: inpainting is broken")
    return {
        "synthetic": synthetic_zarr,
        "inpainted": inpainted_zarr,
        "preview": png,
        "seconds": seconds,
        "changed_outside": changed_outside,
    }
