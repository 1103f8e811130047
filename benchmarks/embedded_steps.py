"""Fewer sampler steps for the embedded model: how far the final latents move.

The decoders of ``cytosyn-tiny`` were fine-tuned and colour-matched on the final latents of 12
Euler steps. For each candidate sampler / step count / time shift this prints the RMSE (per tile,
then mean, median and 90th percentile over tiles) between its final latents and the 12-step
Euler latents from the same noise, for unconditional tiles and for tiles conditioned on
descriptors of real crops (both images), and the share of tiles where it beats the uniform grid
of the same sampler and step count. Model calls per tile: steps x the sampler's calls per step.

    python benchmarks/embedded_steps.py                 # 48 + 48 tiles, the default candidates
    python benchmarks/embedded_steps.py --tiles 16 --candidates euler:8:1.0,heun:4:1.5

Last line: ``RESULT {"<sampler>:<steps>:<shift>": {"mean": ..., ...}, ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

DEFAULT_CANDIDATES = (
    "euler:8:1.0,euler:8:0.8,euler:8:1.2,euler:8:1.5,euler:6:1.0,euler:6:0.8,"
    "dpmpp_2m:8:1.0,dpmpp_2m:8:1.25,heun:4:1.0,heun:4:1.5"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiles", type=int, default=48, help="unconditional (and conditioned) tiles")
    ap.add_argument("--candidates", default=DEFAULT_CANDIDATES, help="sampler:steps:shift,...")
    ap.add_argument("--reference-steps", type=int, default=12)
    ap.add_argument("--data", type=Path, default=Path("data/training"))
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()

    import torch
    from embedded_quality import embed_crops, random_crops, real_images

    from napari_cytosyn.models.embedded import load_embedded
    from napari_cytosyn.sampling import time_grid
    from napari_cytosyn.sampling.samplers import get_sampler

    torch.set_num_threads(args.threads)
    model = load_embedded(device="cpu")
    n, lat = args.tiles, model.tile_px // model.latent_factor
    z = torch.randn(
        2 * n, model.latent_channels, lat, lat, generator=torch.Generator().manual_seed(0)
    )
    images = list(real_images(args.data).values())
    crops = [
        c
        for k, im in enumerate(images)
        for c in random_crops(im, n // len(images) + 1, 224, 10 + k)
    ]
    cond = embed_crops(model, crops[:n])

    def denoise(x: torch.Tensor, t: float) -> torch.Tensor:  # rows < n unconditional
        out = []
        for b in range(0, x.shape[0], 16):
            c = None if b < n else cond[b - n : b - n + 16]
            out.append(model.denoise(x[b : b + 16], torch.full((len(x[b : b + 16]),), t), cond=c))
        return torch.cat(out)

    def final(sampler: str, steps: int, shift: float) -> torch.Tensor:
        ts = time_grid(steps, shift, sampler)
        return get_sampler(sampler)(denoise, z.clone(), ts, model.interpolant)

    ref = final("euler", args.reference_steps, 1.0)
    print(f"reference: {args.reference_steps} Euler steps, {n} + {n} tiles of {lat} latents")
    cache: dict[tuple[str, int, float], np.ndarray] = {}

    def rmse(sampler: str, steps: int, shift: float) -> np.ndarray:  # per tile
        key = (sampler, steps, shift)
        if key not in cache:
            cache[key] = ((final(*key) - ref) ** 2).mean((1, 2, 3)).sqrt().numpy()
        return cache[key]

    result = {}
    for cand in args.candidates.split(","):
        sampler, steps, shift = cand.split(":")
        per = rmse(sampler, int(steps), float(shift))
        row = {
            "mean": round(float(per.mean()), 4),
            "median": round(float(np.median(per)), 4),
            "p90": round(float(np.quantile(per, 0.9)), 4),
            "uncond": round(float(per[:n].mean()), 4),
            "cond": round(float(per[n:].mean()), 4),
            "wins_vs_uniform": round(float((per < rmse(sampler, int(steps), 1.0)).mean()), 3),
        }
        result[cand] = row
        print(f"{cand}: latent RMSE to {args.reference_steps} Euler steps {json.dumps(row)}")
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
