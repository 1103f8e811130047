"""Seams vs cost of tiled sampling strategies, side by side on one model and one region.

Methods (all on the same initial noise, the origin-anchored noise field):
- naive: non-overlapping windows, each evolving alone (stride = window);
- multidiffusion: stride half a window, uniform averaging of x0 (Bar-Tal et al. 2023);
- mixture_of_diffusers: stride half a window, Gaussian weights (Jiménez 2023);
- region: our region mode with its default settings (for a model with a local decoder, also
  ``region_crop_decode``: the same with the plain decoder's cross-faded tiles);
- lazy: our lazy random-access mode, rendered chunk by chunk with a fresh phase cache.

Figures per method: seam_score (metric in ``napari_cytosyn.sampling.metrics``; the max over the
lattices the method uses), cost_vs_naive (window evaluations relative to naive tiling of the
same region), time_vs_naive (wall time), and for the GRF model deviation_vs_reference (RMS
pixel difference to an untiled run on a canvas with a wide margin, relative to the RMS pixel
contrast). For lazy mode the isolated-region cost includes the dependency cone around the region;
cost_vs_naive_marginal is the cost of rendering an adjacent region of the same size with the warm
cache, i.e. the steady-state cost of a slide that is rendered as it is explored.

Usage::

    python benchmarks/seams.py                   # GRF model, 2048 x 2048 px, 20 steps
    python benchmarks/seams.py --quick           # 1024 px, 10 steps
    python benchmarks/seams.py --model cytosyn-tiny --size 2048 --steps 20
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from typing import Any

import numpy as np
import torch

from napari_cytosyn.sampling import DecodeConfig, RegionConfig, SamplerSettings, generate_region
from napari_cytosyn.sampling.lazy import (
    LazyPlan,
    LazySpec,
    MemoryPhaseCache,
    lazy_defaults,
    render_region_lazy,
)
from napari_cytosyn.sampling.metrics import lattice_lines, seam_score
from napari_cytosyn.sampling.region import Canvas, sample_canvas, stride_of, window_of
from napari_cytosyn.sampling.tiling import decode_tiled, to_uint8


class CountingModel:
    """Proxy that counts the windows a model denoises (batch elements)."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.windows = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def denoise(self, z, t, cond=None, guidance=1.0):
        self.windows += int(z.shape[0])
        return self._model.denoise(z, t, cond=cond, guidance=guidance)


def load(name: str):
    if name == "grf":
        from napari_cytosyn.models.grf import GRFModel

        return GRFModel()
    try:
        from napari_cytosyn.models import load_model

        return load_model(name, device="cpu")
    except (ImportError, AttributeError):
        from napari_cytosyn.models.embedded import load_embedded

        return load_embedded(device="cpu")


def score(img: np.ndarray, lattices: list[tuple[int, int, int]]) -> float:
    """Max seam score over lattices ``(offset_y_px, offset_x_px, period_px)``."""
    n = img.shape[0]
    return max(
        seam_score(img, lattice_lines(n, p, oy), lattice_lines(n, p, ox)) for oy, ox, p in lattices
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="grf")
    ap.add_argument("--size", type=int, default=2048, help="region side in px")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--sampler", default="euler")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="1024 px, 10 steps")
    ap.add_argument(
        "--phase-times",
        default=None,
        help="lazy mode: comma-separated phase_times (default: LazySpec's); '' = one phase",
    )
    ap.add_argument(
        "--context", default=None, help="lazy mode: comma-separated context_latent per phase"
    )
    ap.add_argument("--chunk-px", type=int, default=512, help="lazy mode: chunk side in px")
    ap.add_argument("--batch", type=int, help="lazy mode: LazySpec.batch (default: LazySpec's)")
    ap.add_argument(
        "--autocast",
        default="off",
        choices=("auto", "off", "bfloat16"),
        help="SamplerSettings.autocast for every method (default off: float32)",
    )
    ap.add_argument(
        "--lazy-only", action="store_true", help="run naive (the cost unit) and lazy only"
    )
    args = ap.parse_args()
    if args.quick:
        args.size, args.steps = 1024, 10
    torch.set_num_threads(args.threads)
    os.environ["NAPARI_CYTOSYN_MODEL_THREADS"] = str(args.threads)  # network calls too
    model = CountingModel(load(args.model))
    n = args.size
    base = SamplerSettings(
        steps=args.steps, sampler=args.sampler, seed=args.seed, autocast=args.autocast
    )
    f = model.latent_factor
    win = window_of(model, base)
    win_px = win * f
    print(
        f"model={args.model} window={win} latents ({win_px} px) region={n}x{n} px "
        f"steps={args.steps} sampler={args.sampler}"
    )

    results: dict[str, dict[str, Any]] = {}
    images: dict[str, np.ndarray] = {}

    def run(name: str, fn, lattices) -> None:
        model.windows = 0
        t0 = time.perf_counter()
        img = fn()
        dt = time.perf_counter() - t0
        images[name] = img
        results[name] = {
            "seam_score": round(score(img, lattices), 4),
            "windows": model.windows,
            "seconds": round(dt, 3),
        }
        print(
            f"{name:22s} seam {results[name]['seam_score']:.4f}  windows {model.windows:7d}  "
            f"{dt:7.2f} s",
            flush=True,
        )

    grid = [(0, 0, win_px)]
    fixed = base.replace(region=RegionConfig(shift_lattice=False))
    naive = fixed.replace(
        region=RegionConfig(overlap=0.0, weights="uniform", shift_lattice=False),
        decode=DecodeConfig(halo_latent=0, blend_latent=0, norm="crop"),
    )
    run("naive", lambda: generate_region(model, naive, 0, 0, n, n), grid)
    if not args.lazy_only:
        half = [(0, 0, stride_of(win, 0.5) * f), *grid]
        md = fixed.replace(region=RegionConfig(overlap=0.5, weights="uniform", shift_lattice=False))
        run("multidiffusion", lambda: generate_region(model, md, 0, 0, n, n), half)
        mod = fixed.replace(
            region=RegionConfig(overlap=0.5, weights="gaussian", shift_lattice=False)
        )
        run("mixture_of_diffusers", lambda: generate_region(model, mod, 0, 0, n, n), half)
        region = base.replace(region=RegionConfig(overlap=0.25, weights="tent", shift_lattice=True))
        region_lines = [
            (0, 0, stride_of(win, region.region.overlap) * f),
            (0, 0, region.decode.tile_latent * f),
            *grid,
        ]
        run("region", lambda: generate_region(model, region, 0, 0, n, n), region_lines)
        results["region"]["decode_norm"] = region.decode.resolve(model).norm
        if results["region"]["decode_norm"] == "frozen":  # and the plain decoder, cross-faded
            crop = region.replace(decode=region.decode.replace(norm="crop"))

            def crop_run() -> np.ndarray:
                return generate_region(model, crop, 0, 0, n, n)

            run("region_crop_decode", crop_run, region_lines)
    lazy_kw: dict[str, Any] = lazy_defaults(model)  # the product's (cytosyn-tiny: frozen decode)
    if args.phase_times is not None:
        lazy_kw["phase_times"] = tuple(float(v) for v in args.phase_times.split(",") if v)
    if args.context is not None:
        lazy_kw["context_latent"] = tuple(int(v) for v in args.context.split(","))
    if args.batch is not None:
        lazy_kw["batch"] = args.batch
    spec = LazySpec(settings=base, chunk_px=args.chunk_px, **lazy_kw)
    cache = MemoryPhaseCache()
    plan = LazyPlan(model, spec, cache)
    # Phase lattices, and the chunk grid (each chunk is decoded on its own, with a halo).
    lazy_lattices = [(oy, ox, p) for oy, ox, p, _ in plan.lattice_lines_px()]
    lazy_lattices.append((0, 0, spec.chunk_px))
    run("lazy", lambda: render_region_lazy(model, spec, 0, 0, n, n, cache), lazy_lattices)
    # Which lattice sets the max: each phase lattice and the chunk grid (decode borders) alone.
    results["lazy"]["seam_by_lattice"] = {
        f"period{p}_offset{oy},{ox}": round(score(images["lazy"], [(oy, ox, p)]), 4)
        for oy, ox, p in lazy_lattices
    }
    model.windows = 0
    t0 = time.perf_counter()
    render_region_lazy(model, spec, 0, n, n, n, cache)
    marginal = {"windows": model.windows, "seconds": time.perf_counter() - t0}

    naive_w, naive_t = results["naive"]["windows"], results["naive"]["seconds"]
    for r in results.values():
        r["cost_vs_naive"] = round(r["windows"] / naive_w, 3)
        r["time_vs_naive"] = round(r["seconds"] / naive_t, 3)
    steps_total = sum(p.last_step - p.first_step for p in plan.phases)
    amortized = sum((p.last_step - p.first_step) * (win / p.stride) ** 2 for p in plan.phases)
    results["lazy"]["cost_vs_naive_amortized"] = round(amortized / steps_total, 3)
    results["lazy"]["cost_vs_naive_marginal"] = round(marginal["windows"] / naive_w, 3)
    results["lazy"]["time_vs_naive_marginal"] = round(marginal["seconds"] / naive_t, 3)
    results["lazy"]["spec"] = spec.to_dict()

    if args.model == "grf":
        # Untiled reference: one window over a canvas with a margin of 64 latents on each side.
        margin = 64
        side = math.ceil(n / f) + 2 * margin
        ref_settings = fixed.replace(
            window_latent=side,
            region=RegionConfig(overlap=0.0, weights="uniform", shift_lattice=False),
        )
        z = sample_canvas(model, ref_settings, Canvas(-margin, -margin, side, side))
        ref = to_uint8(decode_tiled(model, z[0], None, DecodeConfig(blend_latent=0)))
        ref = ref[margin * f : margin * f + n, margin * f : margin * f + n].astype(np.float64)
        contrast = np.sqrt(((ref - ref.mean(axis=(0, 1))) ** 2).mean())
        for name, img in images.items():
            dev = np.sqrt(((img.astype(np.float64) - ref) ** 2).mean()) / contrast
            results[name]["deviation_vs_reference"] = round(float(dev), 4)
        results["reference"] = {"seam_score": round(score(ref.astype(np.uint8), grid), 4)}

    print()
    for name, r in results.items():
        print(f"{name:22s} " + "  ".join(f"{k}={v}" for k, v in r.items() if k != "spec"))
    meta = {
        "model": args.model,
        "size_px": n,
        "steps": args.steps,
        "sampler": args.sampler,
        "autocast": args.autocast,
        "lazy_batch": spec.batch,
    }
    print("RESULT " + json.dumps({**results, "meta": meta}))


if __name__ == "__main__":
    main()
