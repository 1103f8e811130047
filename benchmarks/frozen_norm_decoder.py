"""Feasibility: a VAE decoder with frozen GroupNorm statistics for lazy chunks (not in the product).

Lazy chunks are decoded from their own latent crop plus a halo, then cross-faded towards crops
centred on their borders and corners (``sampling/lazy.py``): the decoder's GroupNorm statistics
depend on the crop, so two neighbouring crops disagree at their border without that. A decoder
whose GroupNorm layers use fixed statistics is local, so a chunk could come from one crop. This
script measures that idea on the embedded model, one 1024 x 1024 px region (16 chunks of 256 px)
of a lazy slide (bfloat16 autocast, or float32 with ``--autocast off``):

- statistics estimated once from the decode of another region of the same slide (4 x 1024 px
  below), then frozen;
- seam score on the chunk lines and PSNR against the decode of the whole region at once (normal
  GroupNorm: the reference), for one crop per chunk with halo 4, 6 and 8 latents, next to the
  product's chunks (normal GroupNorm, border and corner cross-fades);
- decoder time per chunk of each (one decoder call at a time), and PSNR / largest difference
  of each frozen variant against the product's chunks (what adopting it would change).

    python benchmarks/frozen_norm_decoder.py                  # bfloat16 autocast
    python benchmarks/frozen_norm_decoder.py --autocast off   # float32

Last line: ``RESULT {json}``.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import torch


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


class FrozenNorms:
    """Context: the decoder's GroupNorm layers use fixed per-group mean and variance (their
    ``forward`` is replaced on the instances for the duration; not thread-safe, a benchmark)."""

    def __init__(self, stats: dict[torch.nn.GroupNorm, tuple[torch.Tensor, torch.Tensor]]):
        self.stats = stats

    def __enter__(self) -> FrozenNorms:
        for mod, (mu, var) in self.stats.items():

            def forward(x, mod=mod, mu=mu, var=var):
                xg = x.float().reshape(x.shape[0], mod.num_groups, -1)
                y = (xg - mu[None, :, None]) * torch.rsqrt(var[None, :, None] + mod.eps)
                y = y.reshape(x.shape) * mod.weight[None, :, None, None]
                return (y + mod.bias[None, :, None, None]).to(x.dtype)

            mod.forward = forward
        return self

    def __exit__(self, *exc) -> None:
        for mod in self.stats:
            del mod.forward


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--autocast", default="bfloat16", choices=("bfloat16", "off"))
    args = ap.parse_args()
    from napari_cytosyn.models import load_model
    from napari_cytosyn.sampling import SamplerSettings, lattice_lines, precision, seam_score
    from napari_cytosyn.sampling.lazy import (
        LazySpec,
        MemoryPhaseCache,
        final_latents,
        render_region_lazy,
    )
    from napari_cytosyn.sampling.tiling import to_uint8

    model = load_model("cytosyn-tiny", device="cpu")
    mode = args.autocast
    spec = LazySpec(settings=SamplerSettings(steps=12, seed=5, autocast=mode), chunk_px=256)
    f = model.latent_factor
    n = spec.chunk_px // f
    size = 1024
    N = size // f
    cache = MemoryPhaseCache()
    t0 = time.perf_counter()
    z = final_latents(model, spec, 0, 0, N, N, cache)
    z_other = final_latents(model, spec, 4 * N, 0, N, N, cache)
    print(f"latents of two {size} px regions: {time.perf_counter() - t0:.1f} s", flush=True)

    norms = [m for m in model.vae.decoder.modules() if isinstance(m, torch.nn.GroupNorm)]
    seen: dict[torch.nn.GroupNorm, tuple[torch.Tensor, torch.Tensor]] = {}

    def estimate(mod, args, out):
        x = args[0].float().reshape(args[0].shape[0], mod.num_groups, -1)
        seen[mod] = (x.mean(-1).mean(0), x.var(-1, unbiased=False).mean(0))

    hooks = [m.register_forward_hook(estimate) for m in norms]
    with torch.no_grad():
        precision.decode(model, z_other[None], mode)
    for h in hooks:
        h.remove()

    with torch.no_grad():
        ref = to_uint8(precision.decode(model, z[None], mode)[0])
    lines = lattice_lines(size, spec.chunk_px, 0)
    result: dict = {"reference_seam": round(seam_score(ref, lines, lines), 4)}
    print(f"whole region decoded at once (reference): seam {result['reference_seam']}")

    frozen = {}
    for halo in (4, 6, 8):
        out = np.zeros_like(ref)
        t0 = time.perf_counter()
        with FrozenNorms(seen), torch.no_grad():
            for cy in range(N // n):
                for cx in range(N // n):
                    y0, x0 = cy * n, cx * n
                    ya, xa = max(0, y0 - halo), max(0, x0 - halo)
                    yb, xb = min(N, y0 + n + halo), min(N, x0 + n + halo)
                    d = to_uint8(precision.decode(model, z[None, :, ya:yb, xa:xb], mode)[0])
                    oy, ox = (y0 - ya) * f, (x0 - xa) * f
                    out[y0 * f : (y0 + n) * f, x0 * f : (x0 + n) * f] = d[
                        oy : oy + n * f, ox : ox + n * f
                    ]
        ms = (time.perf_counter() - t0) / (N // n) ** 2 * 1000
        frozen[halo] = out
        result[f"frozen_halo{halo}"] = {
            "seam": round(seam_score(out, lines, lines), 4),
            "psnr_vs_reference_db": round(psnr(out, ref), 2),
            "decode_ms_per_chunk": round(ms),
        }
        print(f"frozen statistics, one crop per chunk, halo {halo}: {result[f'frozen_halo{halo}']}")

    os.environ["NAPARI_CYTOSYN_MODEL_WORKERS"] = "1"  # decoder work per chunk, call by call
    t0 = time.perf_counter()
    lazy = render_region_lazy(model, spec, 0, 0, size, size, cache)  # latents cached: decode only
    ms = (time.perf_counter() - t0) / (N // n) ** 2 * 1000
    result["product_chunks"] = {
        "seam": round(seam_score(lazy, lines, lines), 4),
        "psnr_vs_reference_db": round(psnr(lazy, ref), 2),
        "decode_ms_per_chunk": round(ms),
    }
    print(
        f"product chunks (normal GroupNorm, border/corner cross-fades): {result['product_chunks']}"
    )
    for halo, out in frozen.items():  # the tolerance: how far one-crop chunks are from today's
        d = np.abs(out.astype(np.int16) - lazy.astype(np.int16))
        result[f"frozen_halo{halo}"]["psnr_vs_product_db"] = round(psnr(out, lazy), 2)
        result[f"frozen_halo{halo}"]["max_abs_diff_vs_product"] = int(d.max())
        print(f"frozen halo {halo} vs product: {result[f'frozen_halo{halo}']}")
    result["autocast"] = mode
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
