"""Every model family through the samplers on a GPU, against the same run on the CPU.

The build machines have no GPU, so the test suite runs every path on the CPU only; a tensor left
on the wrong device shows only here. For each model (the embedded models, and tiny random
models in the CytoSyn, PixCell-256, PixCell-1024 and generic diffusers layouts, built with the
test suite's builders) and each path (a region, a region conditioned on a reference image,
an inpainting conditioned on the tissue around the mask), the script runs:

- the CPU in float32 (the reference),
- the GPU in float32: the same pixels up to the GPU's arithmetic (TF32 convolutions by default);
  reported as the mean and maximum absolute difference in 8-bit levels,
- the GPU in the model's default precision (``dtype="auto"``: bfloat16 on Ampere and newer);

and on each device the lazy slide's chunks asked for in the other order, from an empty cache,
against the region (the maximum difference: 0 where the result does not depend on the order).

    python scripts/gpu_check.py                 # needs a CUDA device
    python scripts/gpu_check.py --device cpu    # the same cases, CPU against CPU (a dry run)

Each case prints ``ok`` or ``FAIL`` with its figures; ends with ``RESULT {json}``. The reference
encoders of CytoSyn (H0-mini) and PixCell (UNI2-h) come from the hub; offline, a fixed random
projection of the crop's pixels stands in for them (on the crop's device).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def builders():
    spec = importlib.util.spec_from_file_location("tiny_models", ROOT / "tests/models/conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class StandInEncoder:
    """``rgb (B, 3, h, w) -> (B, dim)``: a fixed random projection of 4 x 4 pooled pixels."""

    def __init__(self, dim: int):
        self.weight = torch.randn(48, dim, generator=torch.Generator().manual_seed(dim)) / 7.0

    def __call__(self, rgb: torch.Tensor) -> torch.Tensor:
        pooled = torch.nn.functional.adaptive_avg_pool2d(rgb.float(), 4).flatten(1)
        return pooled @ self.weight.to(pooled.device)


def tissue_image(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth pink-purple RGB image (what the reference crops are cut from)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w] / 37.0
    base = np.stack([np.sin(x + rng.uniform(0, 6)), np.cos(y), np.sin(x + y)], axis=-1)
    rgb = np.array([200, 120, 190]) + base * np.array([30, 40, 25]) + rng.normal(0, 6, (h, w, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)


def run_paths(model, tile: int) -> dict[str, np.ndarray]:
    from napari_cytosyn.sampling import SamplerSettings, generate_region, inpaint
    from napari_cytosyn.sampling.conditioning import image_field, is_conditional, surround_field
    from napari_cytosyn.sampling.lazy import (
        LazySpec,
        MemoryPhaseCache,
        lazy_defaults,
        render_chunk,
        render_region_lazy,
    )

    settings = SamplerSettings(steps=3, seed=7)
    h, w = tile, 2 * tile
    spec = LazySpec(settings=settings, chunk_px=tile, **lazy_defaults(model))
    out = {
        "region": generate_region(model, settings, 0, 0, h, w),
        "lazy": render_region_lazy(model, spec, 0, 0, h, w),
    }
    # the same chunks asked for in the other order, from an empty cache: bit-identical where
    # the device's kernels do not depend on what else is in a batch
    cache = MemoryPhaseCache()
    right = render_chunk(model, spec, 0, 1, cache)
    left = render_chunk(model, spec, 0, 0, cache)
    both = np.hstack([left, right]).astype(np.int16)
    out["lazy_order_diff"] = int(np.abs(both - out["lazy"]).max())
    image = tissue_image(2 * tile, 2 * tile, 1)
    mask = np.zeros(image.shape[:2], bool)
    mask[tile // 2 : tile + tile // 2, tile // 2 : tile + tile // 2] = True
    cond = None
    if is_conditional(model):
        f = model.latent_factor
        field = image_field(model, tissue_image(h, w, 2)).window_cond(f)
        out["region_reference"] = generate_region(model, settings, 0, 0, h, w, cond=field)
        out["lazy_reference"] = render_region_lazy(model, spec, 0, 0, h, w, cond=field)
        ring = surround_field(model, image, mask, np.ones_like(mask), ring_px=tile)
        cond = ring.window_cond(f)
    out["inpaint"] = inpaint(model, image, mask, settings, cond=cond)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from napari_cytosyn.models import load_model

    tiny = builders()
    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    cyto = tiny.build_cytosyn(work / "cytosyn", remote_code=False)
    p256 = tiny.build_pixcell(work / "pixcell256", tokens=1, sample_size=32)
    p1024 = tiny.build_pixcell(work / "pixcell1024", tokens=16, sample_size=16)
    generic = tiny.build_generic(work / "generic")
    models = {
        "cytosyn-tiny": ("cytosyn-tiny", {}),
        "cytosyn-tiny-cells": ("cytosyn-tiny-cells", {}),
        "cytosyn (tiny random)": (f"cytosyn:{cyto}", {"embedder": StandInEncoder(16)}),
        "pixcell-256 (tiny random)": (
            f"pixcell-256:{p256}",
            {"embedder": StandInEncoder(24), "vae": str(p256 / "vae")},
        ),
        "pixcell-1024 (tiny random)": (
            f"pixcell-1024:{p1024}",
            {"embedder": StandInEncoder(24), "vae": str(p1024 / "vae")},
        ),
        "diffusers generic (tiny random)": (f"diffusers:{generic}", {}),
    }
    rows, failures = [], 0
    for label, (name, kwargs) in models.items():
        try:
            ref_model = load_model(name, device="cpu", dtype="float32", **kwargs)
            tile = int(ref_model.tile_px)
            reference = run_paths(ref_model, tile)
            cpu_order = reference.pop("lazy_order_diff")
            if cpu_order:
                print(f"FAIL {label}: CPU lazy chunks differ with the order asked ({cpu_order})")
                failures += 1
        except Exception:
            traceback.print_exc()
            print(f"FAIL {label}: the CPU reference failed")
            failures += 1
            continue
        for dtype in ("float32", "auto"):
            row = {"model": label, "device": args.device, "dtype": dtype}
            try:
                torch.manual_seed(0)
                model = load_model(name, device=args.device, dtype=dtype, **kwargs)
                t0 = time.perf_counter()
                got = run_paths(model, tile)
                row["seconds"] = round(time.perf_counter() - t0, 2)
                row["model_dtype"] = str(model.dtype).removeprefix("torch.")
                row["lazy_order_diff"] = got.pop("lazy_order_diff")
                for path, ref in reference.items():
                    diff = np.abs(got[path].astype(np.int16) - ref.astype(np.int16))
                    row[path] = {"mean": round(float(diff.mean()), 3), "max": int(diff.max())}
                row["ok"] = set(got) == set(reference)
            except Exception as err:
                traceback.print_exc()
                row["ok"], row["error"] = False, f"{type(err).__name__}: {err}"[:300]
            failures += not row["ok"]
            figures = {k: v for k, v in row.items() if isinstance(v, dict)}
            if "lazy_order_diff" in row:
                figures["lazy chunks in the other order, max diff"] = row["lazy_order_diff"]
            print(f"{'ok  ' if row['ok'] else 'FAIL'} {label} {dtype}: {figures or row['error']}")
            rows.append(row)
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA device"
    print(
        "RESULT "
        + json.dumps({"device": name, "cases": len(rows), "failures": failures, "rows": rows})
    )
    raise SystemExit(1 if failures else 0)


if __name__ == "__main__":
    main()
