"""Throughput of a CytoSyn-shaped model through the tiled region sampler.

Full config (GPU): SiT-XL/2 (hidden 1152, depth 28, 16 heads, ~675M parameters, random init) with
an SD-VAE f8d4-shaped AutoencoderKL (128-256-512-512, ~84M), 224 px tiles at 0.5 um/px, bf16 where
supported, a 1792 x 1792 px region (8 x 8 native tiles), Euler sampler, windows overlapping by half.
``--model cytosyn-structure``: the same at exactly the published REPA-E SiT-XL/2 layout (checked
key by key against ``tests/models/reference/repae_sit_xl2_224.json`` before it runs) with the
SD-VAE f8d4 config REPA-E's VAE converts into.
``--quick`` (CPU): SiT-S/2 (384, 12, 6 heads) and a small VAE on a 224 x 448 px region, 1 thread.

Measured: wall time of ``generate_region`` for ``--measure-steps`` steps (after a warm-up run),
and, with ``torch.utils.flop_counter``, the FLOPs of runs with 1 and 2 steps; the difference is the
cost of one sampler step, the rest the fixed cost (initial noise + tiled decode). From these:
- tiles/s and MP/s at the default step count (``--steps``, CytoSyn's public default 250),
  projected as fixed_time + steps x step_time from the measured run;
- achieved TFLOP/s = counted FLOPs / measured time of the measured run, next to the device peak:
  GPUs from a table of dense bf16/fp32 tensor peaks by name, CPUs estimated as
  threads x clock x FLOPs/cycle (from the AVX-512/AVX2+FMA flags and the CPU family), and a
  measured large-matmul rate for reference.
Prints figures, then ``RESULT {json}`` with device, mp_per_s, tflops, peak_tflops.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from napari_cytosyn.models.cytosyn import assemble_cytosyn
from napari_cytosyn.models.device import resolve_device, resolve_dtype
from napari_cytosyn.models.registry import get_info
from napari_cytosyn.models.sit import SiTTransformer, sit_flops_per_forward
from napari_cytosyn.sampling import RegionConfig, SamplerSettings, generate_region

# Dense (no sparsity) tensor-core peaks in TFLOP/s from vendor data sheets: (bf16, fp32/tf32).
GPU_PEAKS = {
    "H200": (989.0, 494.0),
    "H100 SXM": (989.0, 494.0),
    "H100 PCIe": (756.0, 378.0),
    "H100": (989.0, 494.0),
    "A100": (312.0, 156.0),
    "L40S": (362.0, 183.0),
    "L4": (121.0, 60.0),
    "A10": (125.0, 62.5),
    "RTX 4090": (165.0, 82.6),
}


def gpu_peak(name: str, dtype: torch.dtype) -> float | None:
    for key, (bf16, fp32) in GPU_PEAKS.items():
        if key in name:
            return bf16 if dtype in (torch.bfloat16, torch.float16) else fp32
    return None


def cpu_peak(threads: int) -> tuple[float, str]:
    """Peak fp32 TFLOP/s estimate for ``threads`` cores and how it was estimated."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if ":" in line:
                    k, v = (s.strip() for s in line.split(":", 1))
                    info.setdefault(k, v)
    except OSError:
        return float("nan"), "unknown (no /proc/cpuinfo)"
    flags = set(info.get("flags", "").split())
    mhz = float(info.get("cpu MHz", "0") or 0)
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq") as fh:
            mhz = max(mhz, int(fh.read()) / 1000)
    except OSError:
        pass
    amd = info.get("vendor_id") == "AuthenticAMD"
    family = int(info.get("cpu family", "0") or 0)
    if "avx512f" in flags and (not amd or family >= 26):
        per_cycle, isa = 64, "AVX-512, 2 FMA units x 16 fp32 lanes x 2"
    elif "avx512f" in flags or ("avx2" in flags and "fma" in flags):
        per_cycle, isa = 32, "2 FMA units x 8 fp32 lanes x 2 (AVX2, or Zen 4 AVX-512 double-pumped)"
    else:
        per_cycle, isa = 8, "SSE, 1 unit x 4 lanes x 2"
    peak = threads * mhz * 1e6 * per_cycle / 1e12
    how = f"{threads} thread(s) x {mhz / 1000:.2f} GHz x {per_cycle} FLOP/cycle ({isa})"
    return peak, how


def cpu_name() -> str | None:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 1.0:
        a @ b
        reps += 1
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


REFERENCE = Path(__file__).resolve().parents[1] / "tests" / "models" / "reference"


def check_reference_layout(sit: SiTTransformer) -> int:
    """Compare ``sit`` with REPA-E's SiT-XL/2 manifest (every key and shape, projectors
    excepted); returns the number of keys checked, raises naming the first difference."""
    ref = json.loads((REFERENCE / "repae_sit_xl2_224.json").read_text())["state_dict"]["keys"]
    ref = {k: v["shape"] for k, v in ref.items() if not k.startswith("projectors.")}
    ours = {k: list(v.shape) for k, v in sit.state_dict().items()}
    if ours != ref:
        diff = [k for k in sorted(set(ours) | set(ref)) if ours.get(k) != ref.get(k)][:3]
        raise SystemExit(f"SiT layout differs from the REPA-E reference at {diff}")
    return len(ref)


def build_model(config: str, device: torch.device, dtype: torch.dtype):
    """``quick``: SiT-S/2 + small VAE; ``full``: SiT-XL/2 + SD-VAE-shaped VAE;
    ``cytosyn-structure``: the REPA-E SiT-XL/2 of the reference manifest (checked key by key)
    with the SD-VAE f8d4 that REPA-E's VAE converts into. Random weights."""
    from diffusers import AutoencoderKL

    from napari_cytosyn.models.latent import LatentScaling
    from napari_cytosyn.models.repae_vae import SD_VAE_F8D4_CONFIG

    vae_config = dict(SD_VAE_F8D4_CONFIG)
    if config == "quick":
        sit = SiTTransformer(sample_size=28, hidden_size=384, depth=12, num_heads=6)
        vae_config["block_out_channels"] = [32, 64, 128, 128]
    else:
        sit = SiTTransformer(sample_size=28, hidden_size=1152, depth=28, num_heads=16)
    if config == "cytosyn-structure":
        print(f"layout              {check_reference_layout(sit)} keys = REPA-E SiT-XL/2 reference")
    vae = AutoencoderKL.from_config(vae_config)
    with torch.no_grad():  # adaLN-Zero init would make the blocks identities; use random weights
        for p in sit.parameters():
            p.normal_(0.0, 0.02)
    return assemble_cytosyn(
        get_info("cytosyn"), sit, vae, device, dtype, LatentScaling(), "random weights"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small CPU config")
    parser.add_argument(
        "--model",
        choices=("sit-xl2", "cytosyn-structure"),
        default="sit-xl2",
        help="full config: SiT-XL/2 (default) or cytosyn-structure (the REPA-E SiT-XL/2 layout "
        "of tests/models/reference, checked key by key, with the SD-VAE f8d4)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--steps", type=int, default=250, help="default steps to report at")
    parser.add_argument("--measure-steps", type=int, default=None)
    parser.add_argument("--region-px", type=int, nargs=2, default=None, metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads")
    parser.add_argument(
        "--compile",
        action="store_true",
        help="time the transformer under torch.compile (FLOPs counted uncompiled; the "
        "compilation itself is reported apart, as compile_s)",
    )
    args = parser.parse_args()

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
        os.environ["NAPARI_CYTOSYN_MODEL_THREADS"] = str(args.threads)  # network calls too
    if device.type == "cpu" and not args.quick:
        print("no GPU: running the --quick configuration")
    quick = args.quick or device.type == "cpu"
    h_px, w_px = args.region_px or ((224, 448) if quick else (1792, 1792))
    measure_steps = max(args.measure_steps or (3 if quick else 10), 2)
    batch = args.batch_size or (8 if quick else 64)
    torch.manual_seed(0)
    config = "quick" if quick else ("full" if args.model == "sit-xl2" else args.model)
    model = build_model(config, device, dtype)
    sit = model.net.transformer
    params = sum(p.numel() for p in sit.parameters())
    windows = [0]
    inner = model.net.forward

    def counting_forward(z, t, cond=None):
        windows[0] += z.shape[0]
        return inner(z, t, cond)

    model.net.forward = counting_forward

    def run(steps: int) -> float:
        settings = SamplerSettings(
            sampler="euler", steps=steps, seed=0, region=RegionConfig(batch_size=batch)
        )
        sync(device)
        t0 = time.perf_counter()
        generate_region(model, settings, 0, 0, h_px, w_px)
        sync(device)
        return time.perf_counter() - t0

    run(1)  # warm-up (allocations, kernels)
    flops = []
    for steps in (1, 2):
        with FlopCounterMode(display=False) as counter:
            run(steps)
        flops.append(counter.get_total_flops())
    step_flops = flops[1] - flops[0]
    fixed_flops = flops[0] - step_flops
    compile_s = None
    if args.compile:
        model.net.call = torch.compile(model.net.call)
        compile_s = run(1)  # compiles for each batch shape the sampler uses
        compile_s = max(0.0, compile_s - run(1))
    one_step = run(1)
    windows[0] = 0
    measured = run(measure_steps)
    windows_per_step = windows[0] / measure_steps
    # time(n) = fixed + n * step, from the 1-step and n-step runs
    step_time = (measured - one_step) / (measure_steps - 1)
    if step_time <= 0:  # timing noise on very small configs
        step_time = measured / measure_steps
    fixed_time = max(one_step - step_time, 0.0)
    measured_flops = fixed_flops + measure_steps * step_flops
    tflops = measured_flops / measured / 1e12
    total_time = fixed_time + args.steps * step_time
    mp = h_px * w_px / 1e6
    tiles = h_px * w_px / model.tile_px**2
    analytic = sit_flops_per_forward(
        (model.tile_px // 8 // 2) ** 2, sit.config.hidden_size, sit.config.depth
    )
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = gpu_peak(name, dtype)
        peak_how = "data-sheet dense tensor peak" if peak else "unknown GPU (not in table)"
    else:
        name = cpu_name() or platform.processor() or platform.machine()
        peak, peak_how = cpu_peak(args.threads)
    mm = matmul_tflops(device, dtype, 4096 if device.type == "cuda" else 1024)

    print(f"device              {name} ({device}, {dtype}, threads={torch.get_num_threads()})")
    print(
        f"model               SiT d={sit.config.hidden_size} depth={sit.config.depth} "
        f"({params / 1e6:.0f}M params), tile {model.tile_px} px"
    )
    print(f"region              {h_px} x {w_px} px = {mp:.3f} MP = {tiles:.2f} tiles")
    print(f"windows per step    {windows_per_step:.0f} (batch {batch}, overlap 0.5)")
    print(
        f"FLOPs per step      {step_flops / 1e12:.3f} TFLOP counted; analytic SiT "
        f"{windows_per_step * analytic / 1e12:.3f} TFLOP"
    )
    print(f"fixed FLOPs         {fixed_flops / 1e12:.3f} TFLOP (tiled VAE decode, noise)")
    print(
        f"measured            {measure_steps} steps in {measured:.2f} s; "
        f"step {step_time:.3f} s, fixed {fixed_time:.2f} s"
    )
    print(
        f"at {args.steps} steps      {total_time:.1f} s -> {tiles / total_time:.4f} tiles/s, "
        f"{mp / total_time:.5f} MP/s"
    )
    print(
        f"achieved            {tflops:.3f} TFLOP/s vs peak {peak:.3f} ({peak_how}); "
        f"large matmul {mm:.3f} TFLOP/s"
    )
    if compile_s is not None:
        print(f"torch.compile       the transformer; compiling took {compile_s:.1f} s")
    result = {
        "device": name,
        "torch_device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "config": config,
        "region_px": [h_px, w_px],
        "steps": args.steps,
        "measure_steps": measure_steps,
        "tiles_per_s": round(tiles / total_time, 6),
        "mp_per_s": round(mp / total_time, 6),
        "tflops": round(tflops, 4),
        "peak_tflops": round(peak, 3) if peak else None,
        "peak_how": peak_how,
        "matmul_tflops": round(mm, 4),
        "step_s": round(step_time, 4),
        "fixed_s": round(fixed_time, 3),
        "compiled": bool(args.compile),
        "compile_s": None if compile_s is None else round(compile_s, 1),
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
