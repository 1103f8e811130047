"""Check a real foundation model (CytoSyn, PixCell, the PixCell ControlNet) on a machine that has
its weights: what the build machines could only verify on same-structure random models.

    python scripts/check_real_model.py pixcell-256 --vae /data/sd35      # or the hub default
    python scripts/check_real_model.py cytosyn --trust-remote-code
    python scripts/check_real_model.py cytosyn:/data/CytoSyn-native --out cytosyn_check.png

Checks, each printed as ``ok``/``FAIL`` with its figure:
1. structure: the loaded transformer's state dict against the reference manifest of its family
   (REPA-E SiT-XL/2, PixCell-256/-1024) key by key, where that manifest applies;
2. VAE and latent scaling: encode/decode PSNR of the shipped H&E sample (a VAE loaded with the
   wrong weights or names reconstructs noise: < 20 dB), and the per-channel mean and std of the
   model-space latents (REPA-E normalisation or PixCell's shift/scale should give roughly 0 and
   1; a wrong statistic shows as a channel far off);
3. denoising: x0 predictions at t = 0.2 from a noised real latent are closer to the clean latent
   than the noisy input is (a wrong time scale, target or channel split fails this);
4. sampling: one native tile with the registry's recommended sampler and steps, saved as PNG.
Ends with ``RESULT {json}``.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch

REFERENCE = Path(__file__).resolve().parents[1] / "tests" / "models" / "reference"
_MANIFESTS = {
    "SiTTransformer": "repae_sit_xl2_224.json",
    "RepoSiT": "repae_sit_xl2_224.json",
}


def structure_check(model) -> tuple[bool | None, str]:
    net = model.net.transformer
    info = model.info
    if info.get("backend") == "pixcell":
        name = (
            "pixcell_transformer_1024.json"
            if info["uni_tokens"] > 1
            else ("pixcell_transformer_256.json")
        )
    else:
        name = _MANIFESTS.get(type(net).__name__)
    if name is None:
        return None, f"no manifest for {type(net).__name__}"
    ref = json.loads((REFERENCE / name).read_text())["state_dict"]["keys"]
    ref = {k: v["shape"] for k, v in ref.items() if not k.startswith("projectors.")}
    ours = {k: list(v.shape) for k, v in net.state_dict().items()}
    if name.startswith("repae"):  # the conditioning path of CytoSyn is not public
        ref = {k: v for k, v in ref.items() if not k.startswith("y_embedder.")}
        ours = {k: v for k, v in ours.items() if not k.startswith("y_embedder.")}
    diff = [k for k in sorted(set(ours) | set(ref)) if ours.get(k) != ref.get(k)]
    return not diff, f"{len(ref)} keys vs {name}" + (f"; differ: {diff[:5]}" if diff else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="registry name or name:source")
    parser.add_argument("--vae", help="VAE hub id or folder (PixCell: the SD3.5 VAE)")
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", default="real_model_check.png")
    args = parser.parse_args()

    from PIL import Image

    from napari_cytosyn._napari._sample_data import sample_image
    from napari_cytosyn.models import get_info, load_model
    from napari_cytosyn.sampling import SamplerSettings, generate_region

    options = {"trust_remote_code": True} if args.trust_remote_code else {}
    if args.vae:
        options["vae"] = args.vae
    model = load_model(args.model, device=args.device, **options)
    print(f"loaded    {model.name}: {json.dumps(model.provenance(), default=str)}")
    results: dict[str, object] = {"model": model.name}

    ok, detail = structure_check(model)
    print(f"structure {'ok' if ok else ('skip' if ok is None else 'FAIL')}: {detail}")
    results["structure_ok"] = ok

    tile = model.tile_px
    rgb = sample_image().rgb[:tile, :tile]
    rgb = np.pad(rgb, ((0, tile - rgb.shape[0]), (0, tile - rgb.shape[1]), (0, 0)), "reflect")
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    z = model.encode(x)
    back = model.decode(z).cpu()
    mse = float(((back - x) ** 2).mean()) / 4.0  # images in [-1, 1] -> [0, 1]
    psnr = 10 * math.log10(1.0 / max(mse, 1e-12))
    mean = [round(v, 3) for v in z.float().mean(dim=(0, 2, 3)).tolist()]
    std = [round(v, 3) for v in z.float().std(dim=(0, 2, 3)).tolist()]
    print(f"vae       {'ok' if psnr > 20 else 'FAIL'}: round trip {psnr:.1f} dB PSNR")
    print(
        f"latents   per-channel mean {mean} std {std} (scaling from "
        f"{model.info.get('latent_scaling_from', 'vae config')})"
    )
    results |= {"vae_psnr_db": round(psnr, 2), "latent_mean": mean, "latent_std": std}

    gen = torch.Generator().manual_seed(0)
    eps = torch.randn(z.shape, generator=gen).to(z.device)
    t = torch.full((1,), 0.2, device=z.device)
    a, s = model.interpolant.alpha(t.cpu()), model.interpolant.sigma(t.cpu())
    zt = a.to(z.device) * z + s.to(z.device) * eps
    x0 = model.denoise(zt, t)
    err_in, err_out = float((zt - z).pow(2).mean()), float((x0 - z).pow(2).mean())
    print(
        f"denoise   {'ok' if err_out < err_in else 'FAIL'}: MSE to clean {err_out:.4f} "
        f"(noisy input {err_in:.4f}) at t = 0.2"
    )
    results |= {"denoise_mse": round(err_out, 5), "noisy_mse": round(err_in, 5)}

    recommended = get_info(args.model).defaults
    settings = SamplerSettings(
        sampler=recommended.get("sampler", "euler"), steps=int(recommended.get("steps", 50)), seed=0
    )
    out = generate_region(model, settings, 0, 0, tile, tile)
    Image.fromarray(out).save(args.out)
    print(f"sample    {settings.sampler}, {settings.steps} steps -> {args.out}")
    results["sample"] = args.out
    print("RESULT " + json.dumps(results))


if __name__ == "__main__":
    main()
