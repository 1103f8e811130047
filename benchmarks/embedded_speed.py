"""Speed of the embedded default model: seconds for a 1024 x 1024 px region on this machine.

Loads ``cytosyn-tiny`` on the CPU and times ``generate_region`` (tiled denoising of the whole
canvas, then tiled decoding) with the model's default number of steps and the sampling
engine's default settings otherwise. Model loading is excluded, and so is the first use of each
precision: before its timed run, each precision runs the same region for one step (oneDNN builds
its kernels for new shapes on first use; a cold bfloat16 run measured 3x its warm time). The
region is timed with the default precision (``autocast`` ``auto``: bfloat16 where the CPU
has it natively) and again in float32 (``autocast`` ``off``), unless ``auto`` already resolves
to float32 on this machine (then both keys carry the same run).

Network calls run as the product runs them (``NAPARI_CYTOSYN_MODEL_THREADS`` intra-op threads,
default 1, and up to ``NAPARI_CYTOSYN_MODEL_WORKERS`` calls side by side, default one per core);
``--threads N`` / ``--workers N`` set those two. The decode is the product's (``DecodeConfig.norm``
``auto``: the model's local frozen-GroupNorm decoder where it ships one) unless
``--decode-norm crop`` asks for the cross-faded decode of the plain decoder.

    python benchmarks/embedded_speed.py            # 1024 x 1024 px
    python benchmarks/embedded_speed.py --quick    # 512 x 512 px (time reported as is)
    python benchmarks/embedded_speed.py --thread-policy   # only: 1 thread x 2 calls vs 2 x 1

``--thread-policy`` times denoiser calls (float32, 4 windows of the model's tile each, ms of
wall time per window, median of 8 alternated rounds of 4 calls): two calls side by side with one
intra-op thread each (the product's default on 2 cores) against calls in turn with two intra-op
threads, and ends with its own RESULT line.

Last line: ``RESULT {"seconds_1024": ..., "seconds_1024_fp32": ..., "steps": ..., ...}``, with
``seconds_1024_fp32_cpu_s``: the float32 run's process CPU seconds (for a loaded machine) and
``seconds_1024_fp32_idle_estimate``: the float32 run's wall time on an idle machine with the
workers it had, from each network call's thread CPU time (calls that ran side by side handed to
that many cores, the rest of the process counted as serial; with one intra-op thread a call).
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, help="sampler steps (default: the model's)")
    parser.add_argument(
        "--threads", type=int, default=0, help="intra-op threads per network call (0: 1)"
    )
    parser.add_argument(
        "--workers", type=int, default=0, help="network calls side by side (0: cores / threads)"
    )
    parser.add_argument("--decode-norm", choices=("auto", "crop", "frozen"), default="auto")
    parser.add_argument("--thread-policy", action="store_true")
    parser.add_argument("--sampler", default="euler")
    parser.add_argument("--weights", help="model folder (default: the shipped one)")
    args = parser.parse_args()
    side = 512 if args.quick else 1024

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["NAPARI_CYTOSYN_MODEL_THREADS"] = str(args.threads)  # network calls too
    if args.workers:
        os.environ["NAPARI_CYTOSYN_MODEL_WORKERS"] = str(args.workers)
    from viewport import idle_machine_s, record_parallel_calls

    from napari_cytosyn.models.embedded import load_embedded
    from napari_cytosyn.sampling import DecodeConfig, SamplerSettings, generate_region
    from napari_cytosyn.sampling.precision import resolve_autocast
    from napari_cytosyn.sampling.threads import model_threads, model_workers

    model = load_embedded(device="cpu", path=args.weights) if args.weights else None
    model = model or load_embedded(device="cpu")
    if args.thread_policy:
        print("RESULT " + json.dumps(thread_policy(model)))
        return
    steps = args.steps or int(model.info["default_steps"])
    auto = resolve_autocast("auto", model)
    decode = DecodeConfig(norm=args.decode_norm).resolve(model)
    calls: list = []
    record_parallel_calls(calls)
    seconds, cpu, idle = {}, {}, {}
    for autocast in ("auto", "off") if auto != "off" else ("auto",):
        warm = SamplerSettings(args.sampler, steps=1, seed=0, autocast=autocast, decode=decode)
        generate_region(model, warm, 0, 0, side, side)
        settings = warm.replace(steps=steps)
        calls.clear()
        t0, c0 = time.perf_counter(), time.process_time()
        rgb = generate_region(model, settings, 0, 0, side, side)
        seconds[autocast] = time.perf_counter() - t0
        cpu[autocast] = time.process_time() - c0
        idle[autocast] = idle_machine_s(calls, cpu[autocast], model_workers())
        print(
            f"{side} x {side} px, {steps} {args.sampler} steps, {model_threads()} threads x "
            f"{model_workers()} workers, decode {decode.norm}, autocast {autocast} "
            f"({auto if autocast == 'auto' else 'off'}): {seconds[autocast]:.1f} s "
            f"({cpu[autocast]:.1f} CPU s; idle-machine estimate {idle[autocast]:.1f} s)"
        )
        print(
            f"output {rgb.shape} {rgb.dtype}, "
            f"mean RGB {rgb.reshape(-1, 3).mean(0).round(1).tolist()}"
        )
    for d in (seconds, cpu, idle):
        d.setdefault("off", d["auto"])
    key = "seconds_1024" if side == 1024 else f"seconds_{side}"
    result = {
        key: round(seconds["auto"], 2),
        f"{key}_fp32": round(seconds["off"], 2),
        "autocast_auto": auto,
        "side_px": side,
        "steps": steps,
        "sampler": args.sampler,
        "threads": model_threads(),
        "workers": model_workers(),
        "decode_norm": decode.norm,
        # CPU seconds of the process in the timed float32 run (all threads): the work, whatever
        # the load; on an idle machine the wall time is at least cpu / threads.
        f"{key}_fp32_cpu_s": round(cpu["off"], 2),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    result[f"{key}_fp32_idle_estimate"] = round(idle["off"], 2)
    print("RESULT " + json.dumps(result))


def thread_policy(model, rounds: int = 8) -> dict:
    """Wall ms per denoiser window: 2 calls side by side x 1 thread vs in turn x 2 threads."""
    import statistics
    from concurrent.futures import ThreadPoolExecutor

    import torch

    tile = model.tile_px // model.latent_factor
    gen = torch.Generator().manual_seed(0)
    zs = [torch.randn(4, model.latent_channels, tile, tile, generator=gen) for _ in range(4)]
    t = torch.full((4,), 0.5)
    times: dict[str, list[float]] = {"workers2_threads1": [], "workers1_threads2": []}
    with ThreadPoolExecutor(2) as pool, torch.no_grad():

        def call(z):
            with torch.no_grad():
                return model.denoise(z, t)

        for _ in range(rounds):
            torch.set_num_threads(1)
            t0 = time.perf_counter()
            list(pool.map(call, zs))
            times["workers2_threads1"].append((time.perf_counter() - t0) / 16)
            torch.set_num_threads(2)
            t0 = time.perf_counter()
            for z in zs:
                model.denoise(z, t)
            times["workers1_threads2"].append((time.perf_counter() - t0) / 16)
    out = {f"ms_per_window_{k}": round(statistics.median(v) * 1000, 1) for k, v in times.items()}
    out["load_avg_1min"] = round(os.getloadavg()[0], 2)
    print(out)
    return out


if __name__ == "__main__":
    main()
