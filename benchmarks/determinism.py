"""Determinism across threads and processes with the embedded model (cytosyn-tiny).

Renders the same synthetic slide (cytosyn-tiny, float32) four ways into fresh stores and
compares every level bit for bit: in this process with 1 and with 2 torch threads, and on a
dask ``LocalCluster`` of 1 and of 2 worker processes (``render_distributed``). Network calls run
with ``NAPARI_CYTOSYN_MODEL_THREADS`` threads (default 1, ``sampling/threads.py``); run it
with ``NAPARI_CYTOSYN_MODEL_THREADS=2`` and the 1-thread/2-thread comparison still holds among
runs that share the value.

    python benchmarks/determinism.py            # 512 x 512 px, 256 px chunks, 4 steps
    python benchmarks/determinism.py --quick    # 256 x 256 px, 128 px chunks, 2 steps

Last line: ``RESULT {"threads_identical": ..., "workers_identical": ..., "values_differing": ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

# Keep this folder off the import path (benchmarks/distributed.py would shadow dask's package).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import numpy as np  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    side, chunk, steps = (256, 128, 2) if args.quick else (512, 256, 4)
    os.environ.setdefault("NAPARI_CYTOSYN_AUTOCAST", "off")

    import torch

    from napari_cytosyn.distributed import render_distributed
    from napari_cytosyn.models import load_model
    from napari_cytosyn.sampling import SamplerSettings
    from napari_cytosyn.sampling.threads import model_threads
    from napari_cytosyn.slide.synthetic import SyntheticSlide

    model = load_model("cytosyn-tiny", device="cpu")
    settings = SamplerSettings(steps=steps, autocast="off")
    work = Path(tempfile.mkdtemp(prefix="cytosyn-determinism-"))

    def levels(path: Path) -> list[np.ndarray]:
        slide = SyntheticSlide.open(path, mode="r")
        out = [np.asarray(slide.store.level_array(k)[...]) for k in range(slide.store.n_levels)]
        slide.close()
        return out

    def create(name: str) -> SyntheticSlide:
        return SyntheticSlide.create(
            work / name, model, side, side, settings.replace(seed=11), chunk_px=chunk
        )

    try:
        results: dict[str, list[np.ndarray]] = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            slide = create(f"threads{threads}")
            t0 = time.perf_counter()
            slide.render_all()
            slide.finish_pyramid()
            slide.close()
            print(f"in process, {threads} torch thread(s): {time.perf_counter() - t0:.1f} s")
            results[f"threads{threads}"] = levels(work / f"threads{threads}")
        for workers in (1, 2):
            create(f"workers{workers}").close()
            t0 = time.perf_counter()
            render_distributed(work / f"workers{workers}", model="cytosyn-tiny", device="cpu",
                               workers=workers)  # fmt: skip
            print(f"dask, {workers} worker process(es): {time.perf_counter() - t0:.1f} s")
            results[f"workers{workers}"] = levels(work / f"workers{workers}")

        ref = results["threads1"]
        differing = {
            name: int(sum(int((a != b).sum()) for a, b in zip(ref, lv, strict=True)))
            for name, lv in results.items()
        }
        threads_same = differing["threads2"] == 0
        workers_same = differing["workers1"] == 0 and differing["workers2"] == 0
        print(f"model threads (NAPARI_CYTOSYN_MODEL_THREADS): {model_threads()}")
        for name, n in differing.items():
            print(f"{name:<10} values differing from threads1: {n}")
        print(
            "RESULT "
            + json.dumps(
                {
                    "side_px": side,
                    "chunk_px": chunk,
                    "steps": steps,
                    "model_threads": model_threads(),
                    "threads_identical": threads_same,
                    "workers_identical": workers_same,
                    "values_differing": differing,
                }
            )
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
