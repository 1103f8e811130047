"""Region reads through the `Slide` dask pyramid versus OpenSlide's own `read_region`.

Writes a generated pyramidal JPEG TIFF (default 20,000 x 20,000 px, 256-px tiles, halved while a
level stays >= 1024 px: downsamples 1 to 16), then reads N random 512 x 512 regions at level 0 and
N at the coarsest level. Each region is read once through the dask level
(``slide.levels[level][y:y+512, x:x+512].compute()``) and once through OpenSlide
(``np.asarray(openslide.OpenSlide.read_region(...))``), interleaved region by region with the order
alternating, so both see the same disk cache and the same background load; every pair is checked
pixel for pixel. The whole measurement is repeated with fresh handles (cold OpenSlide tile caches);
the ratios reported are medians over repeats (dask time / OpenSlide time; target <= 1.2).

    python benchmarks/read_slide.py            # full size
    python benchmarks/read_slide.py --quick    # 6,000 px slide, 50 regions
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def measure(path: Path, level_name: str, n: int, size: int, seed: int) -> dict[str, float]:
    """One repeat: fresh handles, ``n`` random regions of one level, three ways."""
    import openslide

    from napari_cytosyn.slide import open_slide
    from napari_cytosyn.slide._openslide import composite_on_white

    slide = open_slide(path)
    osr = openslide.OpenSlide(str(path))
    level = 0 if level_name == "level0" else slide.n_levels - 1
    h, w = slide.level_shapes[level]
    ds = osr.level_downsamples[level]
    rng = np.random.default_rng(seed)
    ys = rng.integers(0, h - size + 1, n)
    xs = rng.integers(0, w - size + 1, n)
    t_dask = t_direct = t_region = 0.0
    for i, (y, x) in enumerate(zip(ys.tolist(), xs.tolist(), strict=True)):

        def direct(y=y, x=x):
            return np.asarray(osr.read_region((round(x * ds), round(y * ds)), level, (size, size)))

        def dask_read(y=y, x=x):
            return slide.levels[level][y : y + size, x : x + size].compute()

        order = (direct, dask_read) if i % 2 == 0 else (dask_read, direct)
        results = {}
        for fn in order:
            t0 = time.perf_counter()
            results[fn.__name__] = fn()
            dt = time.perf_counter() - t0
            if fn is direct:
                t_direct += dt
            else:
                t_dask += dt
        if not np.array_equal(results["dask_read"], composite_on_white(results["direct"])):
            raise AssertionError(f"dask and OpenSlide disagree at level {level} y={y} x={x}")
        t0 = time.perf_counter()
        slide.read_region(level, int(y), int(x), size, size)
        t_region += time.perf_counter() - t0
    slide.close()
    osr.close()
    return {
        "dask_ms": 1e3 * t_dask / n,
        "openslide_ms": 1e3 * t_direct / n,
        "read_region_ms": 1e3 * t_region / n,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="6,000 px slide, 50 regions")
    parser.add_argument("--size-px", type=int, default=20_000, help="slide edge (px)")
    parser.add_argument("--regions", type=int, default=200, help="regions per level")
    parser.add_argument("--repeats", type=int, default=3, help="independent repeats")
    parser.add_argument("--slide", type=Path, help="reuse / keep the generated slide here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.size_px, args.regions = 6000, 50

    from napari_cytosyn.slide.sample import write_sample_slide

    with tempfile.TemporaryDirectory() as tmp:
        path = args.slide or Path(tmp) / f"bench_{args.size_px}.tif"
        if not path.exists():
            t0 = time.perf_counter()
            # Halve down to the last level of at least 1024 px (20,000 px: 5 levels, 1250 px).
            n_levels = 1 + int(np.log2(args.size_px / 1024))
            write_sample_slide(
                path, args.size_px, args.size_px, n_levels=n_levels, compression="jpeg"
            )
            print(
                f"wrote {path} ({args.size_px}^2 px, JPEG q90, 256-px tiles) "
                f"in {time.perf_counter() - t0:.1f} s"
            )
        result: dict[str, float | int | str] = {
            "slide_px": args.size_px,
            "regions": args.regions,
            "region_px": 512,
            "repeats": args.repeats,
        }
        for level_name in ("level0", "coarsest"):
            runs = [
                measure(path, level_name, args.regions, 512, args.seed + 1000 * r)
                for r in range(args.repeats)
            ]
            ratios = [r["dask_ms"] / r["openslide_ms"] for r in runs]
            region_ratios = [r["read_region_ms"] / r["openslide_ms"] for r in runs]
            for r, ratio in zip(runs, ratios, strict=True):
                print(
                    f"{level_name:>8}: dask {r['dask_ms']:6.2f} ms  "
                    f"openslide {r['openslide_ms']:6.2f} ms  "
                    f"Slide.read_region {r['read_region_ms']:6.2f} ms  ratio {ratio:.3f}"
                )
            result[f"dask_ms_{level_name}"] = round(
                statistics.median(r["dask_ms"] for r in runs), 3
            )
            result[f"openslide_ms_{level_name}"] = round(
                statistics.median(r["openslide_ms"] for r in runs), 3
            )
            result[f"ratio_{level_name}"] = round(statistics.median(ratios), 3)
            result[f"ratio_read_region_{level_name}"] = round(statistics.median(region_ratios), 3)
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
