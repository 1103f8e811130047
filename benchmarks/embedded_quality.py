"""Quality of the embedded default model against the real images it was trained on.

Synthetic 224 px tiles (independent seeds, the model's default steps) are compared with the
real training images at 0.5 um/px:

- haematoxylin and eosin histograms after colour deconvolution (skimage ``rgb2hed``), mean of
  the two 1-D Wasserstein distances; the reference is the distance between the two real images;
- nuclei density (per mm^2) and mean nuclear area (um^2) from the classical segmentation in
  :mod:`napari_cytosyn.quality`, relative to the pooled real images;
- memorisation: RMSE from each synthetic tile to its nearest training crop (all 8 flips and
  rotations, stride 8 px, compared as 8 x 8 block averages), next to the RMSE of the
  autoencoder's own reconstruction of real crops (a tile that close would be a copy).

Figures (with ``--figures``): ``docs/images/embedded_real_vs_synthetic.png`` and, unless
``--quick``, a seamless 2048 x 2048 px region ``docs/images/embedded_region_2048.jpg``.

    python scripts/fetch_training_data.py              # once: the real images
    python benchmarks/embedded_quality.py --figures    # 16 synthetic tiles, 2048 px region
    python benchmarks/embedded_quality.py --quick      # 6 tiles, no region

Last line: ``RESULT {"nuclei_density_rel_err": ..., "nuclear_area_rel_err": ...,
"hed_distance": ..., "hed_distance_real_real": ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def real_images(data: Path) -> dict[str, np.ndarray]:
    from skimage.io import imread

    paths = sorted(data.glob("*_0.5mpp.png"))
    if not paths:
        raise SystemExit(f"no real images in {data}; run python scripts/fetch_training_data.py")
    return {p.stem: imread(p)[..., :3] for p in paths}


def training_crops(images, tile: int, stride: int, scale: int) -> np.ndarray:
    """All dihedral variants' crops, block-averaged by ``scale``: ``(N, tile/scale, ..., 3)``."""
    out = []
    for im in images:
        f = im.astype(np.float32) / 255.0
        for k in range(8):
            v = np.rot90(f, k % 4)
            v = v[:, ::-1] if k >= 4 else v
            h, w = v.shape[:2]
            for y in range(0, h - tile + 1, stride):
                for x in range(0, w - tile + 1, stride):
                    c = v[y : y + tile, x : x + tile]
                    out.append(
                        c.reshape(tile // scale, scale, tile // scale, scale, 3).mean((1, 3))
                    )
    return np.stack(out)


def nearest_rmse(tiles, crops, scale: int) -> np.ndarray:
    t = tiles.astype(np.float32) / 255.0
    n, s = t.shape[0], t.shape[1] // scale
    t = t.reshape(n, s, scale, s, scale, 3).mean((2, 4)).reshape(n, -1)
    c = crops.reshape(len(crops), -1)
    d2 = (t**2).sum(1)[:, None] + (c**2).sum(1)[None] - 2 * t @ c.T
    return np.sqrt(np.maximum(d2.min(1), 0) / t.shape[1])


def montage(rows: list[list[np.ndarray]], gap: int = 6) -> np.ndarray:
    h, w = rows[0][0].shape[:2]
    ncol = max(len(r) for r in rows)
    out = np.full((len(rows) * (h + gap) - gap, ncol * (w + gap) - gap, 3), 255, np.uint8)
    for i, r in enumerate(rows):
        for j, t in enumerate(r):
            out[i * (h + gap) : i * (h + gap) + h, j * (w + gap) : j * (w + gap) + w] = t
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tiles", type=int, help="number of synthetic tiles")
    parser.add_argument("--steps", type=int, help="sampler steps (default: the model's)")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "training")
    parser.add_argument("--weights", type=Path, help="model folder (default: the shipped one)")
    parser.add_argument("--figures", action="store_true", help="write figures to docs/images")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    n_tiles = args.tiles or (6 if args.quick else 16)

    import torch

    from napari_cytosyn.models.embedded import WEIGHTS_DIR, load_embedded
    from napari_cytosyn.quality import hed_distance, nuclei_stats, relative_error
    from napari_cytosyn.sampling import SamplerSettings, generate_region

    torch.set_num_threads(args.threads)
    real = real_images(args.data)
    names = list(real)
    model = load_embedded(device="cpu", path=args.weights or WEIGHTS_DIR)
    steps = args.steps or int(model.info["default_steps"])
    tile = model.tile_px

    t0 = time.perf_counter()
    synth = [
        generate_region(model, SamplerSettings(steps=steps, seed=1000 + i), 0, 0, tile, tile)
        for i in range(n_tiles)
    ]
    print(f"{n_tiles} synthetic {tile} px tiles, {steps} steps: {time.perf_counter() - t0:.1f} s")

    real_stats = nuclei_stats(list(real.values()), mpp=model.mpp)
    syn_stats = nuclei_stats(synth, mpp=model.mpp)
    for name, im in real.items():
        s = nuclei_stats(im, mpp=model.mpp)
        print(
            f"real {name}: {s.density_per_mm2:.0f} nuclei/mm2, mean area {s.mean_area_um2:.1f} um2"
        )
    print(
        f"real pooled: {real_stats.density_per_mm2:.0f} nuclei/mm2, "
        f"mean area {real_stats.mean_area_um2:.1f} um2 ({real_stats.count} nuclei)"
    )
    print(
        f"synthetic: {syn_stats.density_per_mm2:.0f} nuclei/mm2, "
        f"mean area {syn_stats.mean_area_um2:.1f} um2 ({syn_stats.count} nuclei)"
    )
    d_syn = hed_distance(synth, list(real.values()))
    d_real = hed_distance(real[names[0]], real[names[1]])
    print(f"HED distance synthetic-real {d_syn:.4f}; real-real {d_real:.4f}")

    # memorisation: nearest training crop (8 x 8 block averages)
    scale = 8
    crops = training_crops(list(real.values()), tile, stride=8, scale=scale)
    nn_syn = nearest_rmse(np.stack(synth), crops, scale)
    rng = np.random.default_rng(0)
    real_tiles = []
    for im in real.values():
        for _ in range(3):
            y = int(rng.integers(im.shape[0] - tile + 1))
            x = int(rng.integers(im.shape[1] - tile + 1))
            real_tiles.append(im[y : y + tile, x : x + tile])
    with torch.no_grad():
        x = torch.from_numpy(np.stack(real_tiles)).permute(0, 3, 1, 2).float() / 127.5 - 1
        rec = model.decode(model.encode(x))
    rec_u8 = ((rec + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    rec_rmse = nearest_rmse(rec_u8, np.stack(real_tiles).astype(np.float32) / 255.0, 1)
    rec_nn = nearest_rmse(rec_u8, crops, scale)
    print(
        f"nearest training crop RMSE (8x8 block averages): synthetic min {nn_syn.min():.4f} "
        f"median {np.median(nn_syn):.4f}; VAE reconstructions of real crops {rec_nn.mean():.4f} "
        f"(full-res reconstruction RMSE {rec_rmse.mean():.4f})"
    )

    if args.figures:
        from skimage.io import imsave

        out = ROOT / "docs" / "images"
        out.mkdir(parents=True, exist_ok=True)
        fig = montage([real_tiles[:6], synth[:6]])
        imsave(out / "embedded_real_vs_synthetic.png", fig, check_contrast=False)
        print(f"wrote {out / 'embedded_real_vs_synthetic.png'} (top real, bottom synthetic)")
        if not args.quick:
            t1 = time.perf_counter()
            region = generate_region(
                model, SamplerSettings(steps=steps, seed=2048), 0, 0, 2048, 2048
            )
            print(f"2048 x 2048 px region: {time.perf_counter() - t1:.1f} s")
            imsave(out / "embedded_region_2048.jpg", region, quality=88, check_contrast=False)
            imsave(
                out / "embedded_region_2048_crop.png",
                region[768:1280, 768:1280],
                check_contrast=False,
            )

    result = {
        "nuclei_density_rel_err": round(
            relative_error(syn_stats.density_per_mm2, real_stats.density_per_mm2), 4
        ),
        "nuclear_area_rel_err": round(
            relative_error(syn_stats.mean_area_um2, real_stats.mean_area_um2), 4
        ),
        "hed_distance": round(d_syn, 5),
        "hed_distance_real_real": round(d_real, 5),
        "nn_rmse_synthetic_min": round(float(nn_syn.min()), 4),
        "nn_rmse_vae_reconstruction": round(float(rec_nn.mean()), 4),
        "tiles": n_tiles,
        "steps": steps,
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
