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

and, each at 20x (0.5 um/px) and 40x (0.25 um/px; keys ending ``_20x`` / ``_40x``):

- ``sharpness_ratio``: variance of the Laplacian of the haematoxylin channel, synthetic over
  real. 20x: unconditional tiles over random real crops. 40x: inpainted discs in the shipped
  40x sample (the TIA Centre field at 0.25 um/px, inpainted the way a slide is: by the 40x
  model directly, or for a 20x-only model at 0.5 um/px and resampled back 2x), measured inside
  the disc (minus the feather) over the real ring around it;
- ``nuclear_texture_rel_err``: mean over nuclei of the std of haematoxylin inside each nucleus;
- ``nuclei_density_rel_err``, ``nuclear_area_rel_err`` (20x: the pooled real images, the
  unconditional tiles; 40x: the 40x image, tiles conditioned on it where the model can);
- ``realism_auc``: 5-fold cross-validated AUC of a logistic regression on the
  :data:`napari_cytosyn.quality.REALISM_FEATURES` of 224 px patches, real vs synthetic
  (0.5 = indistinguishable); ``realism_auc_vae`` the same for the autoencoder's own
  reconstructions of other real crops (20x: 2 x 24 crops of 224 px; 40x: 12 of 448 px, in
  quadrants) against the same real crops: the ceiling the decoder sets on real latents;
- ``conditioning_area_err``: tiles conditioned on crops of one real image (20x: each of the
  two; 40x: the 40x image), relative error of mean nuclear area to that image, averaged;
  ``conditioning_area_err_uncond`` gives the same for unconditional tiles.

Tiles are sampled in batches by plain Euler on ``model.denoise`` (the engine's ``euler``
update) on the model's native tile. ``--compare`` adds side-by-side full-zoom crops
(real, the compared weights, these weights) to the figures.

    python scripts/fetch_training_data.py              # once: the real images
    python benchmarks/embedded_quality.py --figures    # 16 synthetic tiles, 2048 px region
    python benchmarks/embedded_quality.py --quick      # 6 tiles, no region
    python benchmarks/embedded_quality.py --only-40x   # the _40x keys only
    python benchmarks/embedded_quality.py --guidance 3 # conditioned tiles with CFG 3

Last line: ``RESULT {"nuclei_density_rel_err": ..., "nuclear_area_rel_err": ...,
"hed_distance": ..., "hed_distance_real_real": ..., "sharpness_ratio_20x": ..., ...}``.
"""

from __future__ import annotations

import argparse
import itertools
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


def sample_tiles(
    model, n: int, steps: int, seed: int, cond=None, batch: int = 8, guidance: float = 1.0
) -> list:
    """``n`` native tiles (uint8) by batched Euler from seeded noise; ``cond`` ``(n, D)``, with
    classifier-free ``guidance`` (1.0: none, the product's default)."""
    import torch

    from napari_cytosyn.sampling import time_grid

    lat = model.tile_px // model.latent_factor
    out = []
    for b0 in range(0, n, batch):
        nb = min(batch, n - b0)
        g = torch.Generator().manual_seed(seed + b0)
        z = torch.randn(nb, model.latent_channels, lat, lat, generator=g)
        c = None if cond is None else cond[b0 : b0 + nb]
        grid = time_grid(steps)
        for t, tn in itertools.pairwise(grid):
            x0 = model.denoise(
                z, torch.full((nb,), t), cond=c, guidance=guidance if c is not None else 1.0
            )
            z = x0 + (tn / t) * (z - x0)
        rgb = model.decode(z)
        rgb = ((rgb + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
        out.extend(list(rgb))
    return out


def random_crops(im: np.ndarray, n: int, size: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        y = int(rng.integers(im.shape[0] - size + 1))
        x = int(rng.integers(im.shape[1] - size + 1))
        out.append(im[y : y + size, x : x + size])
    return out


def embed_crops(model, crops: list[np.ndarray]):
    import torch

    x = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return model.embed(x)


def quadrants(tiles: list[np.ndarray], size: int = 224) -> list[np.ndarray]:
    out = []
    for t in tiles:
        for y in range(0, t.shape[0] - size + 1, size):
            for x in range(0, t.shape[1] - size + 1, size):
                out.append(t[y : y + size, x : x + size])
    return out


def realism_auc(real: list[np.ndarray], synth: list[np.ndarray], mpp: float, tag: str) -> float:
    """Cross-validated AUC on all features; also prints each feature's own AUC (synthetic
    scored higher: > 0.5 means the feature is larger in synthetic patches) and mean values,
    which say what gives the synthetic patches away."""
    from napari_cytosyn.quality import REALISM_FEATURES, auc, cv_auc, realism_features

    x = np.stack([realism_features(p, mpp) for p in [*real, *synth]])
    y = np.r_[np.zeros(len(real)), np.ones(len(synth))]
    per = [(auc(x[:, j], y), j) for j in range(x.shape[1])]
    for a, j in sorted(per, key=lambda t: -abs(t[0] - 0.5)):
        print(
            f"{tag} realism feature {REALISM_FEATURES[j]}: AUC {a:.3f} "
            f"(real {x[y == 0, j].mean():.4g}, synthetic {x[y == 1, j].mean():.4g})"
        )
    return cv_auc(x, y, folds=5, seed=0)


def reconstructions(model, crops: list[np.ndarray]) -> list[np.ndarray]:
    """The autoencoder's own reconstructions (encode, decode) of real ``crops`` (uint8)."""
    import torch

    out = []
    with torch.no_grad():
        for b in range(0, len(crops), 4):
            x = torch.from_numpy(np.stack(crops[b : b + 4])).permute(0, 3, 1, 2).float()
            rgb = model.decode(model.encode(x / 127.5 - 1))
            out.extend(((rgb + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy())
    return out


def upsample2(rgb: np.ndarray) -> np.ndarray:
    """2x bilinear, as the composite slide resamples a 0.5 um/px result into a 40x slide."""
    from napari_cytosyn.slide.composite import _from_model

    return _from_model(rgb, (rgb.shape[0] * 2, rgb.shape[1] * 2), 0.5)


def disc(size: int, cy: int, cx: int, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def inpaint_sharpness(model20, model40, img40: np.ndarray, steps: int, centres) -> tuple:
    """Inpaint discs of the 40x image; returns (ratio, list of (real, inpainted) crops).

    Context: 448 px at 0.25 um/px around each disc (radius 96 px). ``model40`` inpaints at
    0.25 um/px; without it ``model20`` inpaints the 2x area average and the result is resampled
    back 2x (what a composite slide does for a 20x-only model).
    """
    from scipy import ndimage as ndi

    from napari_cytosyn.chunk_grid import downsample_area
    from napari_cytosyn.quality import h_sharpness
    from napari_cytosyn.sampling import InpaintConfig, SamplerSettings, inpaint

    size, r, feather = 448, 96.0, 16
    st = SamplerSettings(
        steps=steps, seed=7, autocast="off", inpaint=InpaintConfig(feather_px=feather)
    )
    inside, ring, crops = [], [], []
    for i, (cy, cx) in enumerate(centres):
        ctx = img40[cy - size // 2 : cy + size // 2, cx - size // 2 : cx + size // 2]
        m = disc(size, size // 2, size // 2, r)
        if model40 is not None:
            out = inpaint(model40, ctx, m, st.replace(seed=7 + i))
        else:
            m20 = downsample_area(m.astype(np.uint8)[..., None], 2)[..., 0] > 0
            out20 = inpaint(model20, downsample_area(ctx, 2), m20, st.replace(seed=7 + i))
            out = np.where(m[..., None], upsample2(out20), ctx)
        core = ndi.binary_erosion(m, iterations=feather)
        band = ndi.binary_dilation(m, iterations=48) & ~ndi.binary_dilation(m, iterations=8)
        inside.append(h_sharpness(out, core))
        ring.append(h_sharpness(ctx, band))
        crops.append((ctx, out))
    return float(np.mean(inside) / np.mean(ring)), crops


def quality_40x(
    model, model40, data: Path, steps: int, n_cond: int, quick: bool, guidance: float = 1.0
) -> tuple:
    """The ``_40x`` keys on the natively 40x image (0.25 um/px); also returns the synthetic 40x
    tiles, the reference crops they are conditioned on and the inpainted (real, result) crops."""
    from skimage.io import imread

    from napari_cytosyn.quality import nuclear_texture, nuclei_stats, relative_error

    conditional = bool(model.info.get("conditional"))
    img40 = imread(data / "tiatoolbox_target_0.25mpp.png")[..., :3]
    mpp40 = 0.25
    refs40 = random_crops(img40, n_cond, 448, 40)
    real40 = random_crops(img40, 24, 224, 41)
    if model40 is not None:
        c40 = embed_crops(model40, refs40) if conditional else None
        syn40 = sample_tiles(model40, n_cond, steps, 4000, c40, batch=4, guidance=guidance)
        unc40 = sample_tiles(model40, n_cond, steps, 5000, None, batch=4) if conditional else syn40
    else:  # a 20x-only model: its 0.5 um/px tiles upsampled 2x, as a 40x slide shows them
        syn40 = [upsample2(t) for t in sample_tiles(model, n_cond, steps, 4000)]
        unc40 = syn40
    real40_stats = nuclei_stats(img40, mpp40)
    s40 = nuclei_stats(syn40, mpp40)
    u40 = nuclei_stats(unc40, mpp40)
    tex40_real = nuclear_texture(img40, mpp40)
    tex40 = nuclear_texture(syn40, mpp40)
    auc_40 = realism_auc(real40, quadrants(syn40), mpp40, "40x")
    rec40 = (
        reconstructions(model40, random_crops(img40, 12, 448, 71)) if model40 is not None else None
    )
    auc_vae_40 = (
        realism_auc(real40, quadrants(rec40), mpp40, "40x vae") if rec40 is not None else None
    )
    centres = [(260, 260), (740, 700)] if not quick else [(260, 260)]
    sharp_40, inpainted = inpaint_sharpness(model, model40, img40, steps, centres)
    print(
        f"40x ({'native decoder' if model40 is not None else '20x upsampled 2x'}): "
        f"{s40.density_per_mm2:.0f} nuclei/mm2 (real {real40_stats.density_per_mm2:.0f}), "
        f"area {s40.mean_area_um2:.1f} um2 (real {real40_stats.mean_area_um2:.1f}), texture "
        f"{tex40:.4f} (real {tex40_real:.4f}), inpainting sharpness ratio {sharp_40:.3f}, "
        f"realism AUC {auc_40:.3f}"
    )
    area_ref = real40_stats.mean_area_um2
    area_err = round(relative_error(s40.mean_area_um2, area_ref), 4)
    keys = {
        "sharpness_ratio_40x": round(sharp_40, 3),
        "nuclear_texture_rel_err_40x": round(relative_error(tex40, tex40_real), 4),
        "nuclei_density_rel_err_40x": round(
            relative_error(s40.density_per_mm2, real40_stats.density_per_mm2), 4
        ),
        "nuclear_area_rel_err_40x": area_err,
        "realism_auc_40x": round(auc_40, 3),
        "realism_auc_vae_40x": None if auc_vae_40 is None else round(auc_vae_40, 3),
        "conditioning_area_err_40x": area_err if conditional else None,
        "conditioning_area_err_uncond_40x": round(relative_error(u40.mean_area_um2, area_ref), 4),
        "native_40x": model40 is not None,
    }
    return keys, syn40, refs40, inpainted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--tiles", type=int, help="number of unconditional synthetic tiles")
    parser.add_argument("--cond-tiles", type=int, help="conditioned tiles per reference image")
    parser.add_argument("--steps", type=int, help="sampler steps (default: the model's)")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "training")
    parser.add_argument("--weights", type=Path, help="model folder (default: the shipped one)")
    parser.add_argument("--compare", type=Path, help="other weights for the side-by-side crops")
    parser.add_argument("--figures", action="store_true", help="write figures to docs/images")
    parser.add_argument("--no-region", action="store_true", help="skip the 2048 px region")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--guidance", type=float, default=1.0, help="classifier-free guidance of conditioned tiles"
    )
    parser.add_argument(
        "--only-40x", action="store_true", help="the _40x keys only (picking a 40x decoder)"
    )
    args = parser.parse_args()
    n_tiles = args.tiles or (6 if args.quick else 16)
    n_cond = args.cond_tiles or (4 if args.quick else 8)

    import torch

    from napari_cytosyn.models.embedded import WEIGHTS_DIR, load_embedded
    from napari_cytosyn.quality import (
        h_sharpness,
        hed_distance,
        nuclear_texture,
        nuclei_stats,
        relative_error,
    )
    from napari_cytosyn.sampling import SamplerSettings, generate_region

    torch.set_num_threads(args.threads)
    os.environ["NAPARI_CYTOSYN_MODEL_THREADS"] = str(args.threads)  # network calls too
    real = real_images(args.data)
    names = list(real)
    weights = args.weights or WEIGHTS_DIR
    model = load_embedded(device="cpu", path=weights)
    try:
        model40 = load_embedded(device="cpu", path=weights, scale="40x")
    except FileNotFoundError:
        model40 = None
    conditional = bool(model.info.get("conditional"))
    steps = args.steps or int(model.info["default_steps"])
    tile = model.tile_px
    print(
        f"model v{model.info['version']}: conditional {conditional}, 40x decoder "
        f"{model40 is not None}, {steps} steps"
    )

    if args.only_40x:  # the 40x keys do not depend on the 20x decoder or tiles
        q40, *_ = quality_40x(model, model40, args.data, steps, n_cond, args.quick, args.guidance)
        extra = {"steps": steps, "conditional": conditional, "guidance": args.guidance}
        print("RESULT " + json.dumps({**q40, **extra}))
        return
    t0 = time.perf_counter()
    synth = sample_tiles(model, n_tiles, steps, seed=1000)
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

    # ---- 20x: sharpness, texture, conditioning, realism
    real_crops = [c for k, im in enumerate(real.values()) for c in random_crops(im, 12, tile, k)]
    sharp_20 = float(np.mean([h_sharpness(t) for t in synth])) / float(
        np.mean([h_sharpness(t) for t in real_crops])
    )
    tex_real = nuclear_texture(list(real.values()), model.mpp)
    tex_syn = nuclear_texture(synth, model.mpp)
    cond_tiles, cond_err, uncond_err = [], [], []
    for k, (name, im) in enumerate(real.items()):
        ref_area = nuclei_stats(im, model.mpp).mean_area_um2
        uncond_err.append(relative_error(syn_stats.mean_area_um2, ref_area))
        if conditional:
            refs = random_crops(im, n_cond, tile, 100 + k)
            c = embed_crops(model, refs)
            tiles = sample_tiles(model, n_cond, steps, 2000 + 100 * k, c, guidance=args.guidance)
            cond_tiles.extend(tiles)
            area = nuclei_stats(tiles, model.mpp).mean_area_um2
            cond_err.append(relative_error(area, ref_area))
            print(f"conditioned on {name}: mean nuclear area {area:.1f} um2 (real {ref_area:.1f})")
    auc_20 = realism_auc(real_crops, synth + cond_tiles, model.mpp, "20x")
    rec_crops = [
        c for k, im in enumerate(real.values()) for c in random_crops(im, 24, tile, 60 + k)
    ]
    auc_vae_20 = realism_auc(real_crops, reconstructions(model, rec_crops), model.mpp, "20x vae")
    print(
        f"20x: sharpness ratio {sharp_20:.3f}, nuclear texture {tex_syn:.4f} (real "
        f"{tex_real:.4f}), realism AUC {auc_20:.3f}"
    )

    q40, syn40, refs40, inpainted = quality_40x(
        model, model40, args.data, steps, n_cond, args.quick, args.guidance
    )

    if args.figures:
        from skimage.io import imsave

        out = ROOT / "docs" / "images"
        out.mkdir(parents=True, exist_ok=True)
        fig = montage([real_tiles[:6], synth[:6]])
        imsave(out / "embedded_real_vs_synthetic.png", fig, check_contrast=False)
        print(f"wrote {out / 'embedded_real_vs_synthetic.png'} (top real, bottom synthetic)")
        rows40 = [[c for c, _ in inpainted], [o for _, o in inpainted]]
        imsave(out / "embedded_inpaint_40x.png", montage(rows40), check_contrast=False)
        if args.compare:
            other = load_embedded(device="cpu", path=args.compare)
            o_steps = int(other.info["default_steps"])
            o_syn = sample_tiles(other, 3, o_steps, seed=1000)
            half = [c[:112, :112] for c in real_crops[:: len(real_crops) // 3][:3]]
            rows = [half, [t[:112, :112] for t in o_syn], [t[:112, :112] for t in synth[:3]]]
            fig = montage([[np.kron(t, np.ones((2, 2, 1), np.uint8)) for t in r] for r in rows])
            imsave(out / "embedded_zoom_20x.png", fig, check_contrast=False)
            try:  # the compared weights' own 40x decoder, else their 20x tiles upsampled
                other40 = load_embedded(device="cpu", path=args.compare, scale="40x")
                c = embed_crops(other40, refs40[:3]) if other40.uncond is not None else None
                o40 = sample_tiles(other40, 3, o_steps, 4000, c, batch=4)
            except FileNotFoundError:
                o40 = [upsample2(t) for t in sample_tiles(other, 3, o_steps, seed=4000)]
            rows = [
                [c[:224, :224] for c in refs40[:3]],
                [t[:224, :224] for t in o40],
                [t[:224, :224] for t in syn40[:3]],
            ]
            imsave(out / "embedded_zoom_40x.png", montage(rows), check_contrast=False)
            print("wrote embedded_zoom_20x.png / embedded_zoom_40x.png (real, compared, these)")
        if not (args.quick or args.no_region):
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
        "sharpness_ratio_20x": round(sharp_20, 3),
        "nuclear_texture_rel_err_20x": round(relative_error(tex_syn, tex_real), 4),
        "nuclei_density_rel_err_20x": round(
            relative_error(syn_stats.density_per_mm2, real_stats.density_per_mm2), 4
        ),
        "nuclear_area_rel_err_20x": round(
            relative_error(syn_stats.mean_area_um2, real_stats.mean_area_um2), 4
        ),
        "realism_auc_20x": round(auc_20, 3),
        "realism_auc_vae_20x": round(auc_vae_20, 3),
        "conditioning_area_err_20x": round(float(np.mean(cond_err)), 4) if cond_err else None,
        "conditioning_area_err_uncond_20x": round(float(np.mean(uncond_err)), 4),
        **q40,
        "conditional": conditional,
        "guidance": args.guidance,
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
