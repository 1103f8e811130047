"""float32 vs bfloat16 autocast on the embedded model: speed of each network, and the pictures.

``SamplerSettings.autocast = "auto"`` runs the networks in bfloat16 on CPUs with native bfloat16
(AVX512-BF16 / AMX); this measures what that buys and what it changes, side by side in one run:

1. speed: median time of one denoiser call (``--batch`` windows of the model's tile) and of one
   decoder call (a 40 x 40 latent crop, the lazy chunk decode at 256 px chunks), per mode;
2. pictures: ``--tiles`` 224 px tiles (seeds 1000...) generated in both modes: the paired
   difference (mean absolute uint8 difference, PSNR) next to the difference between two
   float32 tiles of neighbouring seeds (unrelated tissue), and, per mode, the quality figures of
   ``benchmarks/embedded_quality.py`` against the real training images (nuclei density and mean
   nuclear area relative error, HED stain-histogram distance).

    python scripts/fetch_training_data.py     # once: the real images (for the quality figures)
    python benchmarks/precision.py            # 16 tiles
    python benchmarks/precision.py --quick    # 4 tiles, fewer repeats, no quality figures

Last line: ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def median_ms(fn, repeats: int) -> float:
    fn()  # first call: oneDNN builds its kernels for the shape
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", type=int, help="tiles per mode (default 16; 4 with --quick)")
    ap.add_argument("--batch", type=int, default=8, help="windows per denoiser call")
    ap.add_argument("--repeats", type=int, help="timed calls per network and mode")
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "training")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    n_tiles = args.tiles or (4 if args.quick else 16)
    repeats = args.repeats or (5 if args.quick else 15)

    import torch

    from napari_cytosyn.models import load_model
    from napari_cytosyn.sampling import SamplerSettings, generate_region, precision

    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["NAPARI_CYTOSYN_MODEL_THREADS"] = str(args.threads)  # network calls too
    model = load_model("cytosyn-tiny", device="cpu")
    native = precision.native_bf16("cpu")
    print(f"torch threads {torch.get_num_threads()}; native bfloat16: {native}")
    steps = int(model.info["default_steps"])
    n = model.tile_px // model.latent_factor
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(args.batch, model.latent_channels, n, n, generator=gen)
    t = torch.full((args.batch,), 0.5)
    crop = torch.randn(1, model.latent_channels, 40, 40, generator=gen)
    modes = ("off", "bfloat16")
    speed = {}
    for mode in modes:

        def denoise(mode=mode):
            with precision.network_scope(model, mode):
                model.denoise(z, t)

        speed[mode] = {
            "denoise_ms": round(median_ms(denoise, repeats), 1),
            "decode_ms": round(
                median_ms(lambda m=mode: precision.decode(model, crop, m), repeats), 1
            ),
        }
        print(
            f"{mode:9s} denoiser {args.batch} windows {speed[mode]['denoise_ms']} ms; "
            f"decoder 40x40 latents {speed[mode]['decode_ms']} ms"
        )

    tiles = {}
    for mode in modes:
        t0 = time.perf_counter()
        tiles[mode] = [
            generate_region(
                model,
                SamplerSettings(steps=steps, seed=1000 + i, autocast=mode),
                0,
                0,
                model.tile_px,
                model.tile_px,
            )
            for i in range(n_tiles)
        ]
        print(
            f"{mode:9s} {n_tiles} tiles of {model.tile_px} px, {steps} steps: "
            f"{time.perf_counter() - t0:.1f} s"
        )
    off, bf = tiles["off"], tiles["bfloat16"]
    paired_mad = [
        float(np.mean(np.abs(a.astype(int) - b.astype(int)))) for a, b in zip(off, bf, strict=True)
    ]
    paired_psnr = [psnr(a, b) for a, b in zip(off, bf, strict=True)]
    other_mad = [
        float(np.mean(np.abs(off[i].astype(int) - off[i + 1].astype(int))))
        for i in range(n_tiles - 1)
    ]
    other_psnr = [psnr(off[i], off[i + 1]) for i in range(n_tiles - 1)]
    pictures = {
        "paired_mean_abs_diff": round(statistics.mean(paired_mad), 2),
        "paired_psnr_db": round(statistics.median(paired_psnr), 2),
        "paired_psnr_db_min": round(min(paired_psnr), 2),
        "other_seed_mean_abs_diff": round(statistics.mean(other_mad), 2),
        "other_seed_psnr_db": round(statistics.median(other_psnr), 2),
    }
    print(
        f"bfloat16 vs float32, same seed: mean |diff| {pictures['paired_mean_abs_diff']} "
        f"(uint8), PSNR median {pictures['paired_psnr_db']} dB (min "
        f"{pictures['paired_psnr_db_min']}); two float32 tiles of other seeds: mean |diff| "
        f"{pictures['other_seed_mean_abs_diff']}, PSNR {pictures['other_seed_psnr_db']} dB"
    )

    quality = {}
    paths = sorted(args.data.glob("*_0.5mpp.png"))
    if args.quick or not paths:
        if not args.quick:
            print(
                f"no real images in {args.data} (python scripts/fetch_training_data.py): "
                "quality figures skipped"
            )
    else:
        from skimage.io import imread

        from napari_cytosyn.quality import hed_distance, nuclei_stats, relative_error

        real = [imread(p)[..., :3] for p in paths]
        ref = nuclei_stats(real, mpp=model.mpp)
        for mode in modes:
            s = nuclei_stats(tiles[mode], mpp=model.mpp)
            quality[mode] = {
                "nuclei_density_rel_err": round(
                    relative_error(s.density_per_mm2, ref.density_per_mm2), 4
                ),
                "nuclear_area_rel_err": round(
                    relative_error(s.mean_area_um2, ref.mean_area_um2), 4
                ),
                "hed_distance": round(hed_distance(tiles[mode], real), 5),
            }
            print(f"{mode:9s} quality vs real: {quality[mode]}")

    result = {
        "native_bf16": native,
        "torch_threads": torch.get_num_threads(),
        "denoise_speedup": round(speed["off"]["denoise_ms"] / speed["bfloat16"]["denoise_ms"], 2),
        "decode_speedup": round(speed["off"]["decode_ms"] / speed["bfloat16"]["decode_ms"], 2),
        "speed": speed,
        "pictures": pictures,
        "quality": quality,
        "tiles": n_tiles,
        "steps": steps,
        "batch": args.batch,
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
