"""Segmentation test kit on the embedded mask-conditioned model (CPU).

- ``layout_f1``: the reference segmenter (Otsu + watershed on hematoxylin) on images synthesized
  from procedural layouts, scored against the layouts they were made from (F1 at IoU 0.5; target
  >= 0.8: the image really shows the nuclei it claims). ``layout_f1_real``: the same for a layout
  taken from held-out real tissue.
- ``ranking_ok``: the kit ranks ``otsu_watershed`` above ``threshold_components`` (mean F1) on
  every stress variant.
- ``seconds_per_mp``: wall seconds of synthesis + all variants + both methods' scoring, per
  megapixel of synthesized image.
- ``real_vs_synthetic_shift``: two-sample KS statistic of nuclear area (reference segmenter)
  between a held-out real block (tiatoolbox image) and the synthetic twin of its layout;
  ``real_vs_real_shift``: the same between that block and a held-out block of the other,
  unrelated real image (stardist image). Held-out: the bottom-right ``--holdout-px`` square of
  each image at 0.5 um/px, never used to train the mask-conditioned UNet (scripts/train_cells.py).

    python scripts/fetch_training_data.py     # once: the real images
    python benchmarks/testkit.py              # 2 layouts of 256 px, all variants
    python benchmarks/testkit.py --quick      # 1 layout

Last line: ``RESULT {"layout_f1": ..., "ranking_ok": ..., "seconds_per_mp": ...,
"real_vs_synthetic_shift": ..., "real_vs_real_shift": ..., ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT / "data" / "training")
    ap.add_argument("--layouts", type=int, default=2)
    ap.add_argument("--size", type=int, default=256, help="side of each layout (px)")
    ap.add_argument("--steps", type=int, default=None, help="sampler steps (model default)")
    ap.add_argument("--guidance", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--holdout-px", type=int, default=160)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="one layout")
    ap.add_argument("--out", type=Path, help="keep the test set and its report here")
    args = ap.parse_args()

    import torch
    from skimage.io import imread

    from napari_cytosyn.models import load_model
    from napari_cytosyn.testkit.dataset import cases_from_image
    from napari_cytosyn.testkit.layouts import LayoutParams, layout_from_image, procedural_layout
    from napari_cytosyn.testkit.methods import otsu_watershed
    from napari_cytosyn.testkit.metrics import morphometric_shift, morphometrics, score
    from napari_cytosyn.testkit.runner import evaluate, resolve_method, summarize
    from napari_cytosyn.testkit.synthesis import synthesize

    torch.set_num_threads(args.threads)
    os.environ["NAPARI_CYTOSYN_MODEL_THREADS"] = str(args.threads)  # network calls too
    model = load_model("cytosyn-tiny-cells", device="cpu", dtype="float32")
    print(f"model: {model.name}, training {model.info.get('training', {}).get('steps')} steps")
    n = 1 if args.quick else args.layouts
    methods = [
        resolve_method("builtin:otsu_watershed"),
        resolve_method("builtin:threshold_components"),
    ]
    rows, f1s, pixels, t_total = [], [], 0, 0.0
    for i in range(n):
        layout = procedural_layout((args.size, args.size), LayoutParams(), seed=args.seed + i)
        t0 = time.perf_counter()
        rgb = synthesize(
            layout, model, seed=args.seed + i, steps=args.steps, guidance=args.guidance
        )
        t_syn = time.perf_counter() - t0
        cases = cases_from_image(
            rgb, layout, seed=args.seed + i, layout_id=f"L{i:03d}", model=model, steps=args.steps
        )
        for m in methods:
            r, _ = evaluate(m, cases)
            rows += r
        t_total += time.perf_counter() - t0
        pixels += layout.labels.size
        f1 = score(layout.labels, otsu_watershed(rgb)).f1
        f1s.append(f1)
        print(f"layout {i}: {layout.n_nuclei} nuclei, synthesis {t_syn:.1f} s, layout F1 {f1:.3f}")
        if args.out:
            from skimage.io import imsave

            args.out.mkdir(parents=True, exist_ok=True)
            imsave(args.out / f"L{i:03d}.png", rgb, check_contrast=False)
    summary = summarize(rows)
    ranking = {}
    for v in dict.fromkeys(s["variant"] for s in summary):
        good = next(
            s["f1"] for s in summary if s["variant"] == v and s["method"] == "otsu_watershed"
        )
        bad = next(
            s["f1"] for s in summary if s["variant"] == v and s["method"] == "threshold_components"
        )
        ranking[v] = (good, bad)
        print(f"{v:>18}: otsu_watershed F1 {good:.3f}  threshold_components F1 {bad:.3f}")

    # real tissue: held-out blocks of the two training images
    paths = {p.stem: p for p in args.data.glob("*_0.5mpp.png")}
    if "tiatoolbox_target_0.5mpp" not in paths or "stardist_histo_0.5mpp" not in paths:
        raise SystemExit(f"real images missing in {args.data}; run scripts/fetch_training_data.py")
    hp = args.holdout_px
    real_a = imread(paths["tiatoolbox_target_0.5mpp"])[-hp:, -hp:, :3]
    real_b = imread(paths["stardist_histo_0.5mpp"])[-hp:, -hp:, :3]
    twin_layout = layout_from_image(real_a)
    twin = synthesize(twin_layout, model, seed=args.seed, steps=args.steps, guidance=args.guidance)
    seg_a, seg_b, seg_twin = (otsu_watershed(x) for x in (real_a, real_b, twin))
    f1_real = score(twin_layout.labels, seg_twin).f1
    area = lambda lab: {"area_um2": morphometrics(lab)["area_um2"]}  # noqa: E731
    shift_twin = morphometric_shift(area(seg_a), area(seg_twin))["area_um2"]
    shift_real = morphometric_shift(area(seg_a), area(seg_b))["area_um2"]
    print(
        f"real block: {seg_a.max()} nuclei, twin: {seg_twin.max()}, other real: {seg_b.max()}; "
        f"KS area real-twin {shift_twin:.3f}, real-real {shift_real:.3f}; twin layout F1 "
        f"{f1_real:.3f}"
    )
    if args.out:
        from skimage.io import imsave

        imsave(args.out / "real_block.png", real_a, check_contrast=False)
        imsave(args.out / "twin_block.png", twin, check_contrast=False)

    result = {
        "layout_f1": round(float(np.mean(f1s)), 4),
        "layout_f1_real": round(float(f1_real), 4),
        "ranking_ok": all(g > b for g, b in ranking.values()),
        "seconds_per_mp": round(t_total / (pixels / 1e6), 1),
        "real_vs_synthetic_shift": round(shift_twin, 4),
        "real_vs_real_shift": round(shift_real, 4),
        "layouts": n,
        "size_px": args.size,
        "guidance": args.guidance,
        "steps": args.steps or int(model.info.get("default_steps", 12)),
        "threads": args.threads,
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
