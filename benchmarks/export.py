"""Export benchmark: a rendered 20,000 x 20,000 px synthetic slide to OME-Zarr, OME-TIFF and the
SVS-layout TIFF, and the tile-copy export of an inpainted JPEG slide of the same size.

Compares each writer with a plain zarr copy of the same chunks (all pyramid levels, the writer's
Blosc-zstd compressor, same thread count, no metadata, no transposition) and reports the peak RSS
of every export, each run in a fresh subprocess so that ``ru_maxrss`` is the export's own.
``copy_tiles_ratio`` compares the tile-copy export of an inpainted slide (source: a JPEG
pyramidal TIFF of the sample pattern with one 1024 x 1024 px GRF edit; untouched tiles copied,
touched tiles re-encoded, mask sidecars written) with reading every tile of every source level
once through our reader (decoded, same thread count).

The slide is NOT rendered with a model (that would take hours on a CPU): its store is filled
with a cheap deterministic H&E-like pattern (8 tiles of ``slide.sample.sample_tissue`` picked
by a hash of the chunk position), marked complete, and its pyramid is built from the children
exactly like a rendered slide's. The writers cannot tell the difference.

    python benchmarks/export.py            # 20,000 x 20,000 px
    python benchmarks/export.py --quick    # 4,096 x 4,096 px

Last line: ``RESULT {"ome_zarr_ratio": ..., "ome_tiff_ratio": ..., "tiff_ratio": ...,
"copy_tiles_ratio": ..., "peak_rss_gib": ...}`` (targets: ``tiff_ratio`` <= 1.3,
``copy_tiles_ratio`` <= 1.5, ``peak_rss_gib`` <= 1).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

WORKERS = 4


def fill_store(path: Path, side: int, chunk_px: int) -> None:
    """A complete synthetic-slide store of ``side`` x ``side`` px holding the sample pattern."""
    from napari_cytosyn.models.grf import GRFModel
    from napari_cytosyn.sampling import SamplerSettings
    from napari_cytosyn.slide.sample import sample_tissue
    from napari_cytosyn.slide.synthetic import SyntheticSlide

    slide = SyntheticSlide.create(
        path, GRFModel(), side, side, SamplerSettings(steps=4, seed=0), chunk_px=chunk_px
    )
    tiles = [
        sample_tissue(k * chunk_px, 0, chunk_px, chunk_px, 8 * chunk_px, chunk_px, glass=False)
        for k in range(8)
    ]
    store = slide.store
    ny, nx = store.grid(0)

    def put(c: tuple[int, int]) -> None:
        cy, cx = c
        y0, y1, x0, x1 = store.bounds(0, cy, cx)
        tile = tiles[(cy * 7919 + cx * 104729) % 8]
        store.write_chunk(0, cy, cx, np.ascontiguousarray(tile[: y1 - y0, : x1 - x0]))

    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(put, [(cy, cx) for cy in range(ny) for cx in range(nx)]))
    SyntheticSlide.open(path, mode="r+").finish_pyramid()


def plain_copy(store: Path, out: Path) -> None:
    """Baseline: every chunk of every level copied into a zarr v2 array, same codec and threads."""
    import zarr
    from numcodecs import Blosc

    from napari_cytosyn.export._zarr_levels import BLOSC
    from napari_cytosyn.slide.synthetic import SyntheticSlide

    slide = SyntheticSlide.open(store, mode="r")
    root = zarr.open_group(str(out), mode="w", zarr_format=2)
    for k in range(slide.store.n_levels):
        src = slide.store.level_array(k)
        dst = root.create_array(
            str(k),
            shape=src.shape,
            chunks=src.chunks,
            dtype="uint8",
            compressors=[Blosc(**BLOSC, shuffle=Blosc.SHUFFLE)],
            chunk_key_encoding={"name": "v2", "separator": "/"},
        )
        c = slide.chunk_px

        def copy(cyx: tuple[int, int], src=src, dst=dst, c=c) -> None:
            y, x = cyx[0] * c, cyx[1] * c
            dst[y : y + c, x : x + c] = src[y : y + c, x : x + c]

        ny, nx = slide.store.grid(k)
        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(copy, [(cy, cx) for cy in range(ny) for cx in range(nx)]))


def make_inpainted(folder: Path, side: int, chunk_px: int) -> None:
    """A JPEG pyramidal TIFF of the sample pattern and an edit store with one GRF edit."""
    from napari_cytosyn.models.grf import GRFModel
    from napari_cytosyn.sampling import SamplerSettings
    from napari_cytosyn.slide.composite import CompositeSlide
    from napari_cytosyn.slide.sample import write_sample_slide

    n_levels = max(1, math.ceil(math.log2(side / chunk_px)) + 1)
    source = write_sample_slide(
        folder / "source.tif", side, side, n_levels=n_levels, tile_px=chunk_px, compression="jpeg"
    )
    comp = CompositeSlide(source, folder / "edits.zarr", chunk_px=chunk_px)
    yy, xx = np.mgrid[:1024, :1024]
    disc = (yy - 511.5) ** 2 + (xx - 511.5) ** 2 <= 500**2
    y0 = x0 = side // 2 - 512
    comp.inpaint((y0, x0, 1024, 1024), disc, GRFModel(boundary="periodic"),
                 SamplerSettings(steps=4), halo_px=64)  # fmt: skip


def read_source_once(source: Path) -> None:
    """Decode every tile of every level of ``source`` through our reader, WORKERS threads."""
    from napari_cytosyn.chunk_grid import tiles
    from napari_cytosyn.export._stream import bounded_map, read_block
    from napari_cytosyn.slide import open_slide

    slide = open_slide(source)
    for level in slide.levels:
        th, tw = int(level.chunks[0][0]), int(level.chunks[1][0])
        jobs = tiles(level.shape[:2], (th, tw))
        for _ in bounded_map(lambda t, lv=level: read_block(lv, *t).shape, jobs, WORKERS):
            pass


def run_one(kind: str, store: Path, out: Path) -> dict[str, float]:
    """One timed run in this (fresh) process; ``store`` is the inpainted folder for the
    ``read-source`` and ``copy-tiles`` kinds."""
    from napari_cytosyn.export import export_slide
    from napari_cytosyn.slide.synthetic import SyntheticSlide

    t0 = time.perf_counter()
    if kind == "copy":
        plain_copy(store, out)
    elif kind == "read-source":
        read_source_once(store / "source.tif")
    elif kind == "copy-tiles":
        from napari_cytosyn.slide.composite import CompositeSlide

        comp = CompositeSlide(store / "source.tif", store / "edits.zarr")
        export_slide(comp, out, compression="copy", workers=WORKERS, checksum_source=False)
    else:
        slide = SyntheticSlide.open(store, mode="r")
        export_slide(slide, out, workers=WORKERS, compression="jpeg")
    seconds = time.perf_counter() - t0
    rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    return {"seconds": seconds, "rss_gib": rss_gib}


def sidecars(out: Path) -> list[Path]:
    """Mask sidecars an export of an inpainted slide writes beside ``out``."""
    stem = out.name.split(".")[0]
    return [out.with_name(f"{stem}.synthetic-mask.tif"), out.with_name(f"{stem}.synthetic.geojson")]


def in_subprocess(kind: str, store: Path, out: Path) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", kind, str(store), str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} export failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="4,096 px slide")
    parser.add_argument("--side", type=int, help="slide side in px (overrides --quick)")
    parser.add_argument("--chunk-px", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of each (best kept)")
    parser.add_argument("--store", type=Path, help="reuse (or keep) the filled store here")
    parser.add_argument(
        "--child", nargs=3, metavar=("KIND", "STORE", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        kind, store, out = args.child
        print(json.dumps(run_one(kind, Path(store), Path(out))))
        return

    side = args.side or (4096 if args.quick else 20_000)
    work = Path(tempfile.mkdtemp(prefix="cytosyn-bench-export-"))
    try:
        store = args.store or work / "slide.cytosyn"
        if store.exists():
            print(f"reusing the filled store {store} (deterministic pattern, not a model)")
        else:
            t0 = time.perf_counter()
            fill_store(store, side, args.chunk_px)
            print(
                f"filled a {side} x {side} px store with a deterministic pattern (not rendered by "
                f"a model), pyramid built from children: {time.perf_counter() - t0:.1f} s"
            )
        inpainted = work / "inpainted"
        inpainted.mkdir()
        t0 = time.perf_counter()
        make_inpainted(inpainted, side, args.chunk_px)
        took = time.perf_counter() - t0
        print(f"wrote a {side} px JPEG source slide and one GRF edit: {took:.1f} s")
        best: dict[str, dict[str, float]] = {}
        outs = {
            "copy": (store, "copy.zarr"),
            "ome-zarr": (store, "slide.ome.zarr"),
            "ome-tiff": (store, "slide.ome.tif"),
            "tiff": (store, "slide.svs"),
            "read-source": (inpainted, "none"),
            "copy-tiles": (inpainted, "inpainted.svs"),
        }
        for _ in range(args.repeats):
            for kind, (source, name) in outs.items():  # side by side, same conditions
                out = work / name
                result = in_subprocess(kind, source, out)
                written = [out, *sidecars(out)]
                size_mb = sum(
                    p.stat().st_size for w in written if w.exists() for p in [w, *w.rglob("*")]
                    if p.is_file()
                ) / 1e6  # fmt: skip
                result["size_mb"] = size_mb
                print(
                    f"{kind:>11}: {result['seconds']:7.2f} s  peak RSS {result['rss_gib']:.3f} GiB"
                    f"  {size_mb:8.1f} MB"
                )
                if kind not in best or result["seconds"] < best[kind]["seconds"]:
                    best[kind] = result
                for w in written:
                    if w.is_dir():
                        shutil.rmtree(w, ignore_errors=True)
                    elif w.exists():
                        w.unlink()
        copy_s = best["copy"]["seconds"]
        exports = ("ome-zarr", "ome-tiff", "tiff", "copy-tiles")
        source_mb = (inpainted / "source.tif").stat().st_size / 1e6
        result = {
            "side_px": side,
            "workers": WORKERS,
            "copy_s": round(copy_s, 3),
            "ome_zarr_s": round(best["ome-zarr"]["seconds"], 3),
            "ome_tiff_s": round(best["ome-tiff"]["seconds"], 3),
            "tiff_s": round(best["tiff"]["seconds"], 3),
            "ome_zarr_ratio": round(best["ome-zarr"]["seconds"] / copy_s, 3),
            "ome_tiff_ratio": round(best["ome-tiff"]["seconds"] / copy_s, 3),
            "tiff_ratio": round(best["tiff"]["seconds"] / copy_s, 3),
            "read_source_s": round(best["read-source"]["seconds"], 3),
            "copy_tiles_s": round(best["copy-tiles"]["seconds"], 3),
            "copy_tiles_ratio": round(
                best["copy-tiles"]["seconds"] / best["read-source"]["seconds"], 3
            ),
            "copy_tiles_mb": round(best["copy-tiles"]["size_mb"], 1),
            "source_mb": round(source_mb, 1),
            "peak_rss_gib": round(max(best[k]["rss_gib"] for k in exports), 3),
            "copy_peak_rss_gib": round(best["copy"]["rss_gib"], 3),
            "pattern_not_model": True,
        }
        print("RESULT " + json.dumps(result), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
