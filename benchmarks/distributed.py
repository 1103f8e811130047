"""Distributed rendering benchmark: level-0 chunks per second with 1 and 2 dask worker processes.

Renders the same synthetic slide (GRF test model, so the cost is the sampler's and the store's,
not a network's) into fresh stores: once in this process (``render_all``, reference), then on a
``LocalCluster`` of 1 and of 2 single-threaded worker processes. Cluster start-up and the
per-worker model load are excluded (workers are warmed with one ``worker_model`` call); the
final pyramid pass is included. Outputs are checked bit-identical to the reference.

    python benchmarks/distributed.py           # 1536 x 1536 px, 256 px chunks (36 chunks)
    python benchmarks/distributed.py --quick   # 768 x 768 px (9 chunks)

Last line: ``RESULT {"chunks_per_s_1": ..., "chunks_per_s_2": ..., ...}``.
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

# This file is named like the dask package it benchmarks: keep its folder off the import path
# (here and in the worker processes, which inherit sys.path) so `import distributed` is dask's.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent.resolve()]

import numpy as np  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--side", type=int, help="slide side in px")
    parser.add_argument("--chunk-px", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--group", type=int, default=2, help="chunks per task side (2 = 2x2)")
    args = parser.parse_args()
    side = args.side or (768 if args.quick else 1536)

    import torch

    from napari_cytosyn.distributed import (
        close_client,
        make_client,
        render_distributed,
        worker_model,
    )
    from napari_cytosyn.models.grf import GRFModel
    from napari_cytosyn.sampling import SamplerSettings
    from napari_cytosyn.slide.synthetic import SyntheticSlide

    torch.set_num_threads(1)
    settings = SamplerSettings(steps=args.steps)
    work = Path(tempfile.mkdtemp(prefix="cytosyn-bench-dist-"))

    def create(name: str):
        return SyntheticSlide.create(
            work / name, GRFModel(), side, side, settings.replace(seed=1), chunk_px=args.chunk_px
        )

    try:
        ref = create("ref.cytosyn")
        n = len(ref.missing_chunks(0))
        t0 = time.perf_counter()
        ref.render_all()
        local_s = time.perf_counter() - t0
        reference = np.asarray(ref.store.level_array(0)[...])
        print(f"{side} x {side} px, {n} chunks of {args.chunk_px} px, {args.steps} steps, GRF")
        print(f"in-process (1 thread): {local_s:.2f} s, {n / local_s:.3f} chunks/s")
        result: dict[str, float | int] = {
            "side_px": side,
            "chunks": n,
            "group": args.group,
            "cpu_count": os.cpu_count() or 0,
            "chunks_per_s_inprocess": round(n / local_s, 4),
        }
        for workers in (1, 2):
            client = make_client(workers=workers)
            try:
                client.run(worker_model, GRFModel)  # load the model in every worker first
                create(f"w{workers}.cytosyn")
                t0 = time.perf_counter()
                render_distributed(
                    work / f"w{workers}.cytosyn", model=GRFModel, client=client, group=args.group
                )
                seconds = time.perf_counter() - t0
            finally:
                close_client(client)
            out = SyntheticSlide.open(work / f"w{workers}.cytosyn", mode="r")
            same = bool(np.array_equal(np.asarray(out.store.level_array(0)[...]), reference))
            print(f"{workers} worker(s): {seconds:.2f} s, {n / seconds:.3f} chunks/s, "
                  f"bit-identical to in-process: {same}")  # fmt: skip
            result[f"chunks_per_s_{workers}"] = round(n / seconds, 4)
            result[f"identical_{workers}"] = same
        result["speedup_2_vs_1"] = round(result["chunks_per_s_2"] / result["chunks_per_s_1"], 3)
        print("RESULT " + json.dumps(result))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
