"""Synthetic twin of a slide laid out from two tissues: does the twin follow its reference?

A test slide is laid out at 0.5 um/px from the two real H&E images the embedded model is trained
on (``scripts/fetch_training_data.py``): square regions of ``--region`` px in a checkerboard of
tissue A (stardist's H&E) and tissue B (TIA Centre tumour), each ``--block`` px block of a
region a crop of its image (mirrored beyond its edges), two blocks left as glass. Regions are
1024 px (four blocks) by default: the twin's condition varies over about one grid cell plus one
model window (224 + 224 px at the default grid), so in a checkerboard of single 512 px blocks
every 256 px metric cell lies against the other tissue on two sides and gets about a quarter of
its condition from it (``--region 512`` is that old layout). Its twin is made with a conditional
model (``SyntheticSlide.create(reference=...)``, guidance: the registry's conditioned scale) and
rendered; then, per grid cell of ``--cell`` px that is tissue in both:

- ``density_corr``, ``area_corr``: Pearson correlation, over the cells, between the reference's
  and the twin's nuclear density and mean nuclear area (classical segmentation of
  :mod:`napari_cytosyn.quality`, Otsu's threshold clipped at :data:`OTSU_CLIP`); targets >= 0.6;
- ``tissue_iou``: IoU of the two slides' tissue masks (the same Otsu-based mask on both
  thumbnails); target >= 0.9;
- ``embed_share``: time to embed the reference over the time to render the twin; <= 0.1
  (wall clock; ``embed_share_cpu``: the same in CPU seconds of the process, which a shared,
  loaded machine changes less);
- ``seam``: the twin's mean step across its chunk borders over its mean step across other
  lines (:func:`napari_cytosyn.sampling.seam_score`, on the chunk borders that are no layout
  block's edge; 1.0: no seams; several layouts: the largest);
- ``nn_ratio``: privacy. RMSE (8 x 8 px block means) from each of ``--nn-tiles`` twin tiles to
  its nearest crop of the whole reference slide (every crop at a multiple of 8 px, in all 8
  flips and rotations, as ``embedded_quality.py`` searches training crops), the closest tile
  over the mean of the same distance for the model's VAE reconstructions of the reference tiles
  at the same places (whose originals are among the crops); >= 1.5 means no twin tile is nearer
  to a real crop than a re-encoded copy of it would be, with a margin. ``nn_ratio_uncond`` is
  the same for unconditional tiles of the model (its memorisation of its training images, of
  which the test slide is made), ``nn_own_place`` counts twin tiles whose nearest crop overlaps
  their own place (a twin copying its reference would show there).

    python scripts/fetch_training_data.py --out data/training   # once
    python benchmarks/twin.py                                    # 2048 px slide, 1024 px regions
    python benchmarks/twin.py --quick                            # 1024 px, 512 px regions
    python benchmarks/twin.py --model NAME                       # any conditional model

Last line: ``RESULT {"density_corr": ..., "area_corr": ..., "tissue_iou": ...,
"embed_share": ..., "nn_ratio": ..., ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from embedded_quality import real_images, sample_tiles  # noqa: E402

GLASS = (246, 244, 246)
#: Otsu's threshold of a cell's haematoxylin clipped at this percentile: a few saturated pixels
#: (a pen mark on a real slide; R = G = 0 blue in a twin) would otherwise take it to their level
#: and the cell would count a handful of nuclei (``tests/test_quality.py``).
OTSU_CLIP = 99.0
#: Crops of the privacy check: every ``NN_STRIDE`` px, compared as ``NN_STRIDE`` px block means.
NN_STRIDE = 8


def layout(
    images: list[np.ndarray], size: int, block: int, seed: int = 0, region: int | None = None
) -> tuple:
    """The test slide ``(size, size, 3)`` uint8 and its block plan (``0``/``1`` = tissue A/B,
    ``-1`` = glass), ``(size // block,) * 2``: regions of ``region`` px (default ``block``) in a
    checkerboard of the two tissues, each block of a region a crop of its tissue's image."""
    rng = np.random.default_rng(seed)
    n = size // block
    r = max(1, (region or block) // block)  # blocks per region side
    plan = (np.add.outer(np.arange(n) // r, np.arange(n) // r) % 2).astype(int)
    # glass: a corner block and one more, away from the corner (the tissue has an outline)
    plan[n - 1, n - 1] = -1
    plan[0, n // 2] = -1
    out = np.empty((size, size, 3), np.uint8)
    out[...] = GLASS
    padded = [np.pad(im, ((block, block), (block, block), (0, 0)), mode="reflect") for im in images]
    for i in range(n):
        for j in range(n):
            kind = plan[i, j]
            if kind < 0:
                continue
            src = padded[kind]
            y = int(rng.integers(0, src.shape[0] - block + 1))
            x = int(rng.integers(0, src.shape[1] - block + 1))
            out[i * block : (i + 1) * block, j * block : (j + 1) * block] = src[
                y : y + block, x : x + block
            ]
    return out, plan


def default_model() -> str | None:
    """The first embedded (offline) model whose loaded weights take a reference."""
    from napari_cytosyn.models import available
    from napari_cytosyn.sampling.conditioning import is_conditional

    for info in available():
        if info.backend == "embedded" and is_conditional(load(info.name)):
            return info.name
    return None


def load(name: str):
    if name.startswith("py:"):
        import importlib

        module, _, attr = name[3:].partition(":")
        return getattr(importlib.import_module(module), attr)()
    from napari_cytosyn.models import load_model

    return load_model(name, device="cpu")


def cell_stats(img: np.ndarray, tissue: np.ndarray, cell: int, mpp: float):
    """Per cell that is >= 90 % tissue: ``(cells, density, mean area)``."""
    from napari_cytosyn.quality import nuclei_stats

    cells, dens, area = [], [], []
    for y in range(0, img.shape[0] - cell + 1, cell):
        for x in range(0, img.shape[1] - cell + 1, cell):
            if tissue[y : y + cell, x : x + cell].mean() < 0.9:
                continue
            s = nuclei_stats(img[y : y + cell, x : x + cell], mpp=mpp, clip=OTSU_CLIP)
            cells.append((y, x))
            dens.append(s.density_per_mm2)
            area.append(s.mean_area_um2)
    return cells, np.array(dens), np.array(area)


def nearest_crop(image: np.ndarray, tiles: np.ndarray, band: int = 24) -> tuple:
    """RMSE (block means of ``NN_STRIDE`` px, RGB in [0, 1]) from each tile ``(N, t, t, 3)``
    uint8 to its nearest crop of ``image`` among all crops every ``NN_STRIDE`` px in the 8 flips
    and rotations of the whole image: ``((N,) float, (N, 3) int (variant, y px, x px))``.

    Crops at multiples of ``NN_STRIDE`` are windows of the image's block-mean image, so all of
    them are searched (the reference tiles' own originals included), a band of rows at a time.
    """
    s = NN_STRIDE
    h, w = (d // s * s for d in image.shape[:2])
    f = image[:h, :w].astype(np.float32).reshape(h // s, s, w // s, s, 3).mean((1, 3)) / 255
    n, t = len(tiles), tiles.shape[1] // s
    q = tiles.astype(np.float32).reshape(n, t, s, t, s, 3).mean((2, 4)) / 255
    q = q.transpose(0, 3, 1, 2).reshape(n, -1)  # the layout of sliding_window_view's windows
    qq = (q**2).sum(1)[:, None]
    best, where = np.full(n, np.inf), np.zeros((n, 3), np.int64)
    for k in range(8):
        v = np.rot90(f, k % 4)
        v = v[:, ::-1] if k >= 4 else v
        win = np.lib.stride_tricks.sliding_window_view(v, (t, t), axis=(0, 1))
        for r0 in range(0, win.shape[0], band):
            c = win[r0 : r0 + band].reshape(-1, q.shape[1])
            d2 = qq + (c**2).sum(1)[None] - 2 * q @ c.T
            j = d2.argmin(1)
            d = d2[np.arange(n), j]
            better = d < best
            best[better] = d[better]
            rows, cols = np.divmod(j[better], win.shape[1])
            where[better] = np.stack([np.full(rows.size, k), (r0 + rows) * s, cols * s], 1)
    return np.sqrt(np.maximum(best, 0) / q.shape[1]), where


def side_by_side(images: list[np.ndarray], gap: int = 8) -> np.ndarray:
    h = max(im.shape[0] for im in images)
    w = sum(im.shape[1] for im in images) + gap * (len(images) - 1)
    out = np.full((h, w, 3), 255, np.uint8)
    x = 0
    for im in images:
        out[: im.shape[0], x : x + im.shape[1]] = im
        x += im.shape[1] + gap
    return out


def figures(model, slide, ref_img, twin_img, size: int, block: int, settings) -> None:
    """``docs/images/twin_side_by_side.jpg`` (the reference slide and its twin) and
    ``docs/images/inpaint_conditioned.jpg`` (a mask across four blocks: real, inpainted
    conditioned on the tissue around it, inpainted without a reference)."""
    import imageio.v3 as iio

    from napari_cytosyn.chunk_grid import downsample_area
    from napari_cytosyn.slide.composite import CompositeSlide

    out = ROOT / "docs" / "images"
    out.mkdir(parents=True, exist_ok=True)
    d = max(1, size // 768)
    pair = side_by_side([downsample_area(ref_img, d), downsample_area(twin_img, d)])
    iio.imwrite(out / "twin_side_by_side.jpg", pair, quality=90)
    # a square mask centred on a corner shared by four blocks (two of each tissue)
    c, half = size // 2, block // 2
    region = (c - half, c - half, block, block)
    mask = np.ones((block, block), bool)
    crops = [ref_img[c - block : c + block, c - block : c + block]]
    with tempfile.TemporaryDirectory() as tmp:
        for name, reference in (("auto", "auto"), ("none", "none")):
            comp = CompositeSlide(slide, Path(tmp) / name)
            comp.inpaint(region, mask, model, settings, reference=reference)
            crops.append(comp.read_region(0, c - block, c - block, 2 * block, 2 * block))
    iio.imwrite(out / "inpaint_conditioned.jpg", side_by_side(crops), quality=90)
    print(f"wrote {out / 'twin_side_by_side.jpg'} and {out / 'inpaint_conditioned.jpg'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1024 px slide, 256 px blocks")
    parser.add_argument("--size", type=int, help="slide side in px (default 2048)")
    parser.add_argument("--block", type=int, help="layout block in px (default 512)")
    parser.add_argument(
        "--region",
        type=int,
        help="side of one tissue's regions in px, a multiple of --block (default 1024; "
        "--quick 512; the old checkerboard of single blocks: --region equal to --block)",
    )
    parser.add_argument("--cell", type=int, default=256, help="metric cell in px")
    parser.add_argument("--model", help="a conditional model (default: the embedded one)")
    parser.add_argument("--steps", type=int, help="sampler steps (default: the model's)")
    parser.add_argument(
        "--seed",
        default="0",
        help="seed of the layout and the twin; several, comma-separated (0,1,2,3,4), make one "
        "slide and twin each and pool their cells",
    )
    parser.add_argument(
        "--grid-um",
        type=float,
        help="embed the reference on a grid of this spacing in um (default: the product's, "
        "every window on its own footprint)",
    )
    parser.add_argument(
        "--guidance", type=float, help="guidance scale (default: the model's conditioned one, or 1)"
    )
    parser.add_argument(
        "--guidance-interval",
        help="t interval of the guidance, lo,hi (t = 1 noise; default: the model's, else 0,1)",
    )
    parser.add_argument(
        "--decode-norm",
        choices=("frozen", "crop"),
        help="how lazy chunks decode (LazySpec.decode_norm; default: the model's)",
    )
    parser.add_argument(
        "--nn-tiles", type=int, default=32, help="tiles of the privacy check (default 32)"
    )
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "training")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--jobs", type=int, default=1, help="layouts (seeds) made at once, one process each"
    )
    parser.add_argument("--out", type=Path, help="keep the slides and the twins here")
    parser.add_argument(
        "--figures",
        action="store_true",
        help="write the user guide's figures to docs/images (from the first seed)",
    )
    args = parser.parse_args()
    args.size = args.size or (1024 if args.quick else 2048)
    args.block = args.block or (256 if args.quick else 512)
    args.region = args.region or 2 * args.block
    seeds = [int(v) for v in str(args.seed).split(",")]

    import torch

    from napari_cytosyn.sampling.conditioning import is_conditional

    torch.set_num_threads(args.threads)
    os.environ["NAPARI_CYTOSYN_MODEL_THREADS"] = str(args.threads)  # network calls too
    name = args.model or default_model()
    if name is None:
        raise SystemExit(
            "no embedded model takes a reference (the shipped cytosyn-tiny weights are "
            "unconditional): pass --model with a conditional model"
        )
    model = load(name)
    if not is_conditional(model):
        raise SystemExit(
            f"{name} is unconditional; the twin benchmark needs a conditional model (the "
            "embedded cytosyn-tiny v2, cytosyn, pixcell-256...): pass --model"
        )
    jobs = [(args, name, seed, args.figures and k == 0) for k, seed in enumerate(seeds)]
    if args.jobs > 1 and len(seeds) > 1:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(min(args.jobs, len(seeds)), mp_context=ctx) as pool:
            runs = list(pool.map(run_seed, jobs))
    else:
        runs = [run_seed(job) for job in jobs]
    result = runs[0]["result"]
    if len(runs) > 1:
        result = pooled(runs, seeds)
    print("RESULT " + json.dumps(result))


def run_seed(job: tuple) -> dict:
    """:func:`one_layout` for ``(args, model name, seed, figures)`` (in a worker process with
    ``--jobs``: its own model, threads as the parent's)."""
    import torch

    args, name, seed, make_figures = job
    torch.set_num_threads(args.threads)
    os.environ["NAPARI_CYTOSYN_MODEL_THREADS"] = str(args.threads)
    images = list(real_images(args.data).values())
    return one_layout(args, load(name), name, images, seed, make_figures)


def pooled(runs: list[dict], seeds: list[int]) -> dict:
    """Several layouts' figures: the correlations over the cells of all of them, each layout's
    (and their mean and sd: how much one layout can say), the worst privacy ratio and IoU, the
    embedding time over the rendering time of all of them."""

    def corr(key: str) -> float:
        a = np.concatenate([r[key][0] for r in runs])
        b = np.concatenate([r[key][1] for r in runs])
        return round(float(np.corrcoef(a, b)[0, 1]), 3)

    res = [r["result"] for r in runs]
    out = {
        "density_corr": corr("density"),
        "area_corr": corr("area"),
        "tissue_iou": min(r["tissue_iou"] for r in res),
        "embed_share": round(sum(r["embed_s"] for r in res) / sum(r["render_s"] for r in res), 4),
        "nn_ratio": min(r["nn_ratio"] for r in res),
        "seam": max((r["seam"] for r in res if r["seam"] is not None), default=None),
        "nn_ratio_uncond": min(r["nn_ratio_uncond"] for r in res),
        "nn_own_place": sum(r["nn_own_place"] for r in res),
        "cells": sum(r["cells"] for r in res),
        "seeds": seeds,
    }
    for key in ("density_corr", "area_corr"):
        v = np.array([np.nan if r[key] is None else r[key] for r in res])
        out[f"{key}_seeds"] = [r[key] for r in res]
        out[f"{key}_mean"] = round(float(np.nanmean(v)), 3)
        out[f"{key}_sd"] = round(float(np.nanstd(v, ddof=1)), 3)
    out["embed_share_seeds"] = [r["embed_share"] for r in res]
    cpu = sum(r["embed_cpu_s"] for r in res) / sum(r["render_cpu_s"] for r in res)
    out["embed_share_cpu"] = round(cpu, 4)
    out["embed_s"] = round(sum(r["embed_s"] for r in res), 2)
    out["render_s"] = round(sum(r["render_s"] for r in res), 2)
    keep = ("model", "steps", "guidance", "guidance_interval", "decode_norm")
    keep += ("size_px", "block_px", "region_px", "grid_px", "cell_px")
    out.update({k: res[0][k] for k in keep})
    return out


def one_layout(args, model, name: str, images: list, seed: int, make_figures: bool = False) -> dict:
    """Lay out a test slide with ``seed``, make and render its twin, measure it: ``{"result":
    the layout's RESULT dict, "density": (reference, twin) per cell, "area": likewise}``."""
    import torch

    from napari_cytosyn.chunk_grid import downsample_area
    from napari_cytosyn.sampling import SamplerSettings, seam_score
    from napari_cytosyn.slide import open_slide
    from napari_cytosyn.slide.reference import slide_tissue_mask
    from napari_cytosyn.slide.sample import write_pyramidal_tiff
    from napari_cytosyn.slide.synthetic import SyntheticSlide

    size, block, region = args.size, args.block, args.region
    ref_img, plan = layout(images, size, block, seed, region)
    work = Path(args.out) / f"seed{seed}" if args.out else Path(tempfile.mkdtemp(prefix="twin-"))
    work.mkdir(parents=True, exist_ok=True)
    slide_path = write_pyramidal_tiff(
        work / "two_tissues.tif",
        [ref_img, downsample_area(ref_img, 4)],
        mpp=(model.mpp, model.mpp),
        tile_px=256,
    )
    slide = open_slide(slide_path)
    print(f"reference slide {size} px, blocks of {block} px, regions of {region} px:\n{plan}")

    steps = args.steps or int(getattr(model, "info", {}).get("default_steps", 12))
    guidance = args.guidance
    if guidance is None and not name.startswith("py:"):
        from napari_cytosyn.models import get_info

        guidance = get_info(name).defaults.get("guidance_conditioned")
    interval = args.guidance_interval
    if interval is None and not name.startswith("py:"):
        from napari_cytosyn.models import get_info

        interval = get_info(name).defaults.get("guidance_interval")
    if isinstance(interval, str):
        interval = [float(v) for v in interval.split(",")]
    settings = SamplerSettings(
        steps=steps,
        seed=seed,
        guidance=float(guidance or 1.0),
        guidance_interval=tuple(interval or (0.0, 1.0)),
    )
    store = work / "twin.cytosyn"
    # one-off imports are not embedding time
    import skimage.color
    import skimage.filters
    import skimage.morphology  # noqa: F401

    t0, c0 = time.perf_counter(), time.process_time()
    # creating the twin = the reference's tissue mask, checksum and grid embeddings (batched)
    twin = SyntheticSlide.create(
        store,
        model,
        None,
        None,
        settings.replace(seed=seed),
        chunk_px=256,
        reference=slide,
        reference_grid_um=args.grid_um,
        lazy={"decode_norm": args.decode_norm} if args.decode_norm else None,
        overwrite=True,
    )
    t_embed, c_embed = time.perf_counter() - t0, time.process_time() - c0
    ref = twin.metadata()["reference"]
    grid = ref.get("grid_px", "windows")  # default: every window on its own footprint
    print(f"embedded {ref['tissue_cells']} reference crops (grid: {grid}): {t_embed:.1f} s")
    t1, c1 = time.perf_counter(), time.process_time()
    twin.render_all()
    t_render, c_render = time.perf_counter() - t1, time.process_time() - c1
    print(f"rendered the twin ({len(twin.missing_chunks(0)) == 0}): {t_render:.1f} s")
    twin_img = twin.read_region(0, 0, 0, *twin.level_shapes[0])
    # chunks decode separately: steps across their borders against steps elsewhere (1 = none),
    # on the borders that are no layout block's edge (where the tissue itself changes)
    lines = [v for v in range(twin.chunk_px, size, twin.chunk_px) if v % block]
    seam = float(seam_score(twin_img, lines, lines)) if lines else float("nan")

    # tissue masks: the same function on both slides
    m_ref = slide_tissue_mask(slide, max_px=512)
    m_twin = slide_tissue_mask(twin, max_px=512)
    hh, ww = min(m_ref.shape[0], m_twin.shape[0]), min(m_ref.shape[1], m_twin.shape[1])
    m_ref, m_twin = m_ref[:hh, :ww], m_twin[:hh, :ww]
    iou = float((m_ref & m_twin).sum() / max(1, (m_ref | m_twin).sum()))

    # per-cell nuclei statistics where both are tissue
    def full(mask: np.ndarray) -> np.ndarray:
        rows = np.minimum(np.arange(size) * mask.shape[0] // size, mask.shape[0] - 1)
        return mask[np.ix_(rows, rows)]

    both = full(m_ref) & full(m_twin)
    cells, d_ref, a_ref = cell_stats(ref_img, both, args.cell, model.mpp)
    _c, d_twin, a_twin = cell_stats(twin_img, both, args.cell, model.mpp)
    density_corr = float(np.corrcoef(d_ref, d_twin)[0, 1]) if len(cells) > 2 else float("nan")
    area_corr = float(np.corrcoef(a_ref, a_twin)[0, 1]) if len(cells) > 2 else float("nan")
    for kind in (0, 1):
        sel = [k for k, (y, x) in enumerate(cells) if plan[y // block, x // block] == kind]
        if not sel:
            continue
        print(
            f"tissue {'AB'[kind]}: reference {d_ref[sel].mean():.0f} nuclei/mm2, "
            f"{a_ref[sel].mean():.1f} um2; twin {d_twin[sel].mean():.0f} nuclei/mm2, "
            f"{a_twin[sel].mean():.1f} um2 ({len(sel)} cells)"
        )

    # privacy: nearest reference crop of twin tiles vs of VAE reconstructions of the reference.
    # Tiles lie on the crops' 8 px lattice, so a reconstruction's own original is a candidate.
    tile = model.tile_px
    rng = np.random.default_rng(1)
    spots: list[tuple[int, int]] = []
    for _ in range(20_000):
        y, x = (NN_STRIDE * int(v) for v in rng.integers(0, (size - tile) // NN_STRIDE + 1, 2))
        if both[y : y + tile, x : x + tile].mean() >= 0.95 and (y, x) not in spots:
            spots.append((y, x))
        if len(spots) == args.nn_tiles:
            break
    if not spots:
        raise SystemExit("the twin and its reference share no tissue tile: the layout is lost")
    syn_tiles = np.stack([twin_img[y : y + tile, x : x + tile] for y, x in spots])
    ref_tiles = np.stack([ref_img[y : y + tile, x : x + tile] for y, x in spots])
    with torch.no_grad():
        x = torch.from_numpy(ref_tiles).permute(0, 3, 1, 2).float() / 127.5 - 1
        rec = model.decode(model.encode(x))
    rec_u8 = ((rec + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    uncond = np.stack(sample_tiles(model, len(spots), steps, 9000 + seed))
    (nn_syn, at_syn), (nn_rec, _a), (nn_unc, _b) = (
        nearest_crop(ref_img, t) for t in (syn_tiles, rec_u8, uncond)
    )
    nn_ratio = float(nn_syn.min() / max(1e-9, nn_rec.mean()))
    k = int(nn_syn.argmin())
    own = sum(
        v == 0 and abs(ny - y) < tile and abs(nx - x) < tile
        for (v, ny, nx), (y, x) in zip(at_syn, spots, strict=True)
    )
    print(
        f"nearest reference crop RMSE over {len(spots)} tiles: twin min {nn_syn.min():.4f} "
        f"median {np.median(nn_syn):.4f} (closest: twin tile at {spots[k]}, its crop "
        f"{tuple(int(v) for v in at_syn[k])} (variant, y, x)); unconditional tiles min "
        f"{nn_unc.min():.4f} median {np.median(nn_unc):.4f}; VAE reconstructions mean "
        f"{nn_rec.mean():.4f}; twin tiles nearest to a crop overlapping their own place: {own}"
    )

    def num(v: float, nd: int) -> float | None:
        return round(v, nd) if np.isfinite(v) else None  # JSON has no NaN

    result = {
        "density_corr": num(density_corr, 3),
        "area_corr": num(area_corr, 3),
        "tissue_iou": round(iou, 4),
        "embed_share": round(t_embed / t_render, 4),
        "embed_share_cpu": round(c_embed / c_render, 4),
        "nn_ratio": round(nn_ratio, 3),
        "seam": num(seam, 3),
        "nn_ratio_uncond": round(float(nn_unc.min() / max(1e-9, nn_rec.mean())), 3),
        "nn_own_place": int(own),
        "cells": len(cells),
        "embed_s": round(t_embed, 2),
        "render_s": round(t_render, 2),
        "embed_cpu_s": round(c_embed, 2),
        "render_cpu_s": round(c_render, 2),
        "model": name,
        "steps": steps,
        "guidance": settings.guidance,
        "guidance_interval": list(settings.guidance_interval),
        "decode_norm": twin.recipe["lazy"]["decode_norm"],
        "size_px": size,
        "block_px": block,
        "region_px": region,
        "grid_px": grid,
        "cell_px": args.cell,
        "seed": seed,
    }
    if make_figures:
        figures(model, slide, ref_img, twin_img, size, block, settings)
    print(f"seed {seed}: " + json.dumps(result), flush=True)
    return {"result": result, "density": (d_ref, d_twin), "area": (a_ref, a_twin)}


if __name__ == "__main__":
    main()
