"""Region reads through the `Slide` dask pyramid versus OpenSlide's own `read_region`.

Writes a generated pyramidal JPEG TIFF (default 20,000 x 20,000 px, 256-px tiles, halved while a
level stays >= 1024 px: downsamples 1 to 16), then reads N random 512 x 512 regions at level 0 and
N at the coarsest level. Each region is read once through the dask level
(``slide.levels[level][y:y+512, x:x+512].compute()``) and once through OpenSlide
(``np.asarray(openslide.OpenSlide.read_region(...))``), interleaved region by region with the order
alternating, so both see the same disk cache and the same background load; every pair is checked
pixel for pixel. The whole measurement is repeated with fresh handles (cold OpenSlide tile caches);
the ratios reported are medians over repeats (dask time / OpenSlide time; target <= 1.2), for wall
time and for process CPU time (all threads; less sensitive to other load on the machine).

The same slices are also taken from a dask array chunked like the level over a source whose reads
cost nothing: ``dask_free_source_ms`` is dask's own cost per region (graph, optimisation,
scheduling, concatenation), and ``ratio_floor`` = (OpenSlide + that) / OpenSlide is the best ratio
any dask-backed level could reach on this machine, whatever the reader does.

    python benchmarks/read_slide.py            # full size
    python benchmarks/read_slide.py --quick    # 6,000 px slide, 50 regions
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


class _FreeSource:
    """A level-shaped source whose reads cost nothing (an uninitialised buffer): the same
    slice of a dask array over it, chunked like the slide's level, measures dask's own cost."""

    def __init__(self, shape: tuple[int, int]):
        self.shape, self.dtype, self.ndim = (*shape, 3), np.dtype(np.uint8), 3

    def __getitem__(self, key):
        ys, xs = key[0], key[1]
        return np.empty((ys.stop - ys.start, xs.stop - xs.start, 3), np.uint8)


def measure(path: Path, level_name: str, n: int, size: int, seed: int) -> dict[str, float]:
    """One repeat: fresh handles (one per method, so no method warms another's tile cache),
    ``n`` random regions of one level, read three ways in rotating order."""
    import openslide

    from napari_cytosyn.slide import open_slide
    from napari_cytosyn.slide._openslide import composite_on_white

    osr = openslide.OpenSlide(str(path))
    slide = open_slide(path)
    slide_rr = open_slide(path)
    level = 0 if level_name == "level0" else slide.n_levels - 1
    h, w = slide.level_shapes[level]
    ds = osr.level_downsamples[level]
    rng = np.random.default_rng(seed)
    ys = rng.integers(0, h - size + 1, n).tolist()
    xs = rng.integers(0, w - size + 1, n).tolist()
    import dask.array as da

    # dask alone: the same slices of an array chunked like this level over a free source.
    free = da.from_array(
        _FreeSource((h, w)),
        chunks=slide.levels[level].chunksize,
        asarray=False,
        inline_array=True,
        meta=np.empty((0, 0, 0), np.uint8),
    )
    wall = {"openslide": 0.0, "dask": 0.0, "read_region": 0.0, "dask_free_source": 0.0}
    cpu = dict.fromkeys(wall, 0.0)
    for i, (y, x) in enumerate(zip(ys, xs, strict=True)):
        methods = {
            "openslide": lambda y=y, x=x: np.asarray(
                osr.read_region((round(x * ds), round(y * ds)), level, (size, size))
            ),
            "dask": lambda y=y, x=x: slide.levels[level][y : y + size, x : x + size].compute(),
            "read_region": lambda y=y, x=x: slide_rr.read_region(level, y, x, size, size),
            "dask_free_source": lambda y=y, x=x: free[y : y + size, x : x + size].compute(),
        }
        names = list(methods)
        names = names[i % 4 :] + names[: i % 4]
        results = {}
        for name in names:
            t0, c0 = time.perf_counter(), time.process_time()
            results[name] = methods[name]()
            wall[name] += time.perf_counter() - t0
            cpu[name] += time.process_time() - c0
        expected = composite_on_white(results["openslide"])
        for name in ("dask", "read_region"):
            if not np.array_equal(results[name], expected):
                raise AssertionError(f"{name} and OpenSlide disagree: level {level} y={y} x={x}")
    for handle in (slide, slide_rr, osr):
        handle.close()
    out = {f"{k}_ms": 1e3 * v / n for k, v in wall.items()}
    out.update({f"{k}_cpu_ms": 1e3 * v / n for k, v in cpu.items()})
    return out


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
        load_before = round(os.getloadavg()[0], 2)
        result: dict[str, float | int | str | None] = {
            "load_average_1min_before": load_before,
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
            for r in runs:
                print(
                    f"{level_name:>8}: wall ms  dask {r['dask_ms']:6.2f}  openslide "
                    f"{r['openslide_ms']:6.2f}  Slide.read_region {r['read_region_ms']:6.2f}  "
                    f"| CPU ms  dask {r['dask_cpu_ms']:6.2f}  "
                    f"openslide {r['openslide_cpu_ms']:6.2f}  "
                    f"Slide.read_region {r['read_region_cpu_ms']:6.2f}  "
                    f"| dask over a free source {r['dask_free_source_ms']:5.2f}"
                )

            def median(key, runs=runs):
                return round(statistics.median(r[key] for r in runs), 3)

            def median_ratio(num, den, runs=runs):
                return round(statistics.median(r[num] / r[den] for r in runs), 3)

            for key in ("dask_ms", "openslide_ms", "read_region_ms", "dask_free_source_ms"):
                result[f"{key[:-3]}_ms_{level_name}"] = median(key)
            # The best ratio any dask-backed level could reach: OpenSlide's time plus dask's own.
            result[f"ratio_floor_{level_name}"] = round(
                statistics.median(
                    (r["openslide_ms"] + r["dask_free_source_ms"]) / r["openslide_ms"] for r in runs
                ),
                3,
            )
            result[f"ratio_{level_name}"] = median_ratio("dask_ms", "openslide_ms")
            result[f"ratio_read_region_{level_name}"] = median_ratio(
                "read_region_ms", "openslide_ms"
            )
            result[f"cpu_ratio_{level_name}"] = median_ratio("dask_cpu_ms", "openslide_cpu_ms")
        result["load_average_1min"] = round(os.getloadavg()[0], 2)
        result["cpu_count"] = os.cpu_count()
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
