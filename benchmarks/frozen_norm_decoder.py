"""The frozen-GroupNorm decode of lazy chunks: its statistics, and what it costs and changes.

Lazy chunks are decoded either from their own latent crop plus a halo, cross-faded towards
crops centred on their borders and corners (``LazySpec.decode_norm="crop"``: the decoder's
GroupNorm statistics depend on the crop, so neighbouring crops disagree at their border without
the cross-fade), or by a copy of the decoder whose GroupNorm layers use fixed statistics
(``"frozen"``): a local decoder, so a chunk comes from its own crop (two halves side by side).

``--write-stats`` estimates those statistics for cytosyn-tiny's two decoders (20x ``vae/``, 40x
``vae_x2/``) and writes them next to each decoder (``decoder_norm_stats.safetensors``): the
per-group mean and variance of every decoder GroupNorm's input, each the average over eight
64 x 64-latent crops of the model's own final latents (two 1024 px lazy regions, seeds 101 and
102, unconditional, the model's default steps, float32), the statistics of a whole crop as the
decoder computes them. Fixed inputs: the file does not depend on what a user rendered.

Without it, the measurement: one 1024 x 1024 px region (16 chunks of 256 px at 20x; 4 x 4
chunks of 512 px at 40x with ``--scale 40x``) of a lazy slide, seed 5, rendered through the
product with either decode (one network call at a time for the decode cost), against the whole
region decoded at once with normal GroupNorm (the reference): seam score on the chunk lines and
on the half-chunk lines, PSNR to the reference, decoder CPU ms per chunk, and the largest
difference between the two decodes, and tissue measures of the three pictures (hematoxylin
sharpness, nuclear texture, nuclei density and mean area, as in ``embedded_quality.py``).

    python benchmarks/frozen_norm_decoder.py --write-stats        # (re)make the shipped files
    python benchmarks/frozen_norm_decoder.py --autocast off       # float32 (20x), model's halo
    python benchmarks/frozen_norm_decoder.py --autocast off --halo 4
    python benchmarks/frozen_norm_decoder.py --autocast off --scale 40x

Last line: ``RESULT {json}``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np
import torch


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def write_stats() -> None:
    from safetensors.torch import save_file

    from napari_cytosyn.models.embedded import WEIGHTS_DIR, load_embedded
    from napari_cytosyn.models.tiny_nets import NORM_STATS_NAME, decoder_norms
    from napari_cytosyn.sampling import SamplerSettings
    from napari_cytosyn.sampling.lazy import LazySpec, MemoryPhaseCache, final_latents

    model = load_embedded("cpu")
    steps = int(model.info["default_steps"])
    crops = []
    for seed in (101, 102):
        spec = LazySpec(settings=SamplerSettings(steps=steps, seed=seed, autocast="off"))
        t0 = time.perf_counter()
        z = final_latents(model, spec, 0, 0, 128, 128, MemoryPhaseCache())
        print(f"seed {seed}: final latents 128 x 128 in {time.perf_counter() - t0:.1f} s")
        crops += [z[:, y : y + 64, x : x + 64] for y in (0, 64) for x in (0, 64)]
    for scale, folder in (("20x", "vae"), ("40x", "vae_x2")):
        m = model if scale == "20x" else load_embedded("cpu", scale="40x")
        sums: dict[str, list[torch.Tensor]] = {}

        def record(mod, args, out, name, sums=sums):
            x = args[0].double().reshape(args[0].shape[0], mod.num_groups, -1)
            mean, var = x.mean(-1)[0], x.var(-1, unbiased=False)[0]
            sums.setdefault(f"{name}.mean", []).append(mean)
            sums.setdefault(f"{name}.var", []).append(var)

        hooks = [
            mod.register_forward_hook(lambda mod, a, o, name=name: record(mod, a, o, name))
            for name, mod in decoder_norms(m.vae).items()
        ]
        for z in crops:
            m.decode(z[None])
        for h in hooks:
            h.remove()
        stats = {k: torch.stack(v).mean(0).float().contiguous() for k, v in sums.items()}
        path = WEIGHTS_DIR / folder / NORM_STATS_NAME
        save_file(stats, str(path))
        print(f"{scale}: {len(stats) // 2} GroupNorm layers -> {path}")


def measure(mode: str, scale: str, halo: int | None) -> dict:
    from napari_cytosyn.models.embedded import load_embedded
    from napari_cytosyn.quality import h_sharpness, nuclear_texture, nuclei_stats
    from napari_cytosyn.sampling import SamplerSettings, lattice_lines, precision, seam_score
    from napari_cytosyn.sampling.lazy import (
        LazySpec,
        MemoryPhaseCache,
        final_latents,
        render_region_lazy,
    )
    from napari_cytosyn.sampling.tiling import to_uint8

    model = load_embedded("cpu", scale=scale)
    halo = model.frozen_norm_halo_latent if halo is None else halo
    f = model.latent_factor
    size = 1024 if scale == "20x" else 2048
    chunk_px = 256 if scale == "20x" else 512
    settings = SamplerSettings(steps=int(model.info["default_steps"]), seed=5, autocast=mode)
    N = size // f
    cache = MemoryPhaseCache()
    spec = LazySpec(settings=settings, chunk_px=chunk_px)
    t0 = time.perf_counter()
    z = final_latents(model, spec, 0, 0, N, N, cache)
    print(f"latents of a {size} px region: {time.perf_counter() - t0:.1f} s", flush=True)
    with torch.no_grad():
        ref = to_uint8(precision.decode(model, z[None], mode)[0])
    chunk_lines = lattice_lines(size, chunk_px, 0)
    half_lines = lattice_lines(size, chunk_px, chunk_px // 2)
    result: dict = {
        "reference_seam": round(seam_score(ref, chunk_lines, chunk_lines), 4),
        "reference_seam_half_lines": round(seam_score(ref, half_lines, []), 4),
    }
    os.environ["NAPARI_CYTOSYN_MODEL_WORKERS"] = "1"  # decoder work per chunk, call by call
    images = {}
    for norm in ("crop", "frozen"):
        spec_n = LazySpec(settings=settings, chunk_px=chunk_px, decode_norm=norm)
        if norm == "frozen":
            spec_n = dataclasses.replace(spec_n, decode_halo_latent=halo)
        t0 = time.thread_time()
        images[norm] = out = render_region_lazy(model, spec_n, 0, 0, size, size, cache)
        ms = (time.thread_time() - t0) / (size // chunk_px) ** 2 * 1000
        result[norm] = {
            "seam": round(seam_score(out, chunk_lines, chunk_lines), 4),
            "seam_half_lines": round(seam_score(out, half_lines, []), 4),
            "psnr_vs_reference_db": round(psnr(out, ref), 2),
            "decode_cpu_ms_per_chunk": round(ms),
        }
        print(f"decode_norm {norm}: {result[norm]}", flush=True)
    images["reference"] = ref
    for name, img in images.items():  # does the local decode draw the same tissue?
        nuc = nuclei_stats(img, model.mpp)
        result.setdefault(name, {}).update(
            h_sharpness=round(h_sharpness(img), 6),
            nuclear_texture=round(nuclear_texture(img, model.mpp), 5),
            nuclei_per_mm2=round(nuc.density_per_mm2, 1),
            nuclear_area_um2=round(nuc.mean_area_um2, 2),
        )
    print(f"tissue measures: { {k: result[k] for k in images} }", flush=True)
    d = np.abs(images["frozen"].astype(np.int16) - images["crop"].astype(np.int16))
    result["frozen_vs_crop"] = {
        "psnr_db": round(psnr(images["frozen"], images["crop"]), 2),
        "max_abs_diff": int(d.max()),
        "mean_abs_diff": round(float(d.mean()), 3),
    }
    result["decode_cost_ratio"] = round(
        result["crop"]["decode_cpu_ms_per_chunk"] / result["frozen"]["decode_cpu_ms_per_chunk"], 2
    )
    result.update(autocast=mode, scale=scale, chunk_px=chunk_px, size_px=size, frozen_halo=halo)
    return result


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--autocast", default="off", choices=("bfloat16", "off"))
    ap.add_argument("--scale", default="20x", choices=("20x", "40x"))
    ap.add_argument("--write-stats", action="store_true", help="write the shipped statistics")
    ap.add_argument(
        "--halo", type=int, help="decode_halo_latent of the frozen decode (default: the model's)"
    )
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.write_stats:
        write_stats()
        return
    print("RESULT " + json.dumps(measure(args.autocast, args.scale, args.halo)))


if __name__ == "__main__":
    main()
