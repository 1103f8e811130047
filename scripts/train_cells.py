"""Train ``cytosyn-tiny-cells``: a mask-conditioned rectified-flow UNet on cytosyn-tiny's latents.

The autoencoder of the embedded ``cytosyn-tiny`` model is frozen and shared (read from its weights
folder); only a new UNet is trained. Its input is the noisy latent plus the nucleus layout at
latent resolution (see :mod:`napari_cytosyn.models.cells`). Layouts are pseudo-labels: the
reference segmenter of the test kit (Otsu + watershed on the hematoxylin channel,
:func:`napari_cytosyn.testkit.methods.otsu_watershed`) run on each training image. The layout is
dropped (zeroed, "present" channel 0) with probability ``--p-uncond`` so the model also learns the
unconditional branch (classifier-free guidance).

A ``--holdout-px`` square at the bottom-right of every training image is never used for the UNet
(the test kit's benchmark uses those blocks as unseen real tissue).

Run ``scripts/fetch_training_data.py`` first. Typical use (CPU, 1 thread, in the background)::

    nice -n 10 python scripts/train_cells.py --minutes 70 --threads 1 --resume

Seeded (``--seed``); ``--steps`` fixes the number of steps instead of a time budget. A checkpoint
(network, EMA, optimiser, RNG states) is written to ``--runs`` every ``--save-minutes``;
``--resume`` continues from it. The EMA weights are written as float16 safetensors to ``--out``
with ``cytosyn_tiny_cells.json`` (which records the commands).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DModel
from skimage.io import imsave

sys.path.insert(0, str(Path(__file__).parent))
from train_embedded import (
    TIMESTEP_SCALE,
    dihedral,
    load_images,
    log,
    save_half,
    stain_jitter,
)

from napari_cytosyn.models.cells import CONFIG_NAME, TINY_DIR, layout_mask, tiny_config
from napari_cytosyn.testkit.methods import otsu_watershed

TILE_LATENT = 28
F_LAT = 8
COND_CHANNELS = F_LAT * F_LAT + 1

UNET_CONFIG = dict(
    sample_size=TILE_LATENT,
    in_channels=4 + COND_CHANNELS,
    out_channels=4,
    down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    block_out_channels=(64, 96, 128),
    layers_per_block=1,
    attention_head_dim=32,
    norm_num_groups=32,
)


@torch.no_grad()
def encode_variants(vae, images, labels, rng, jitters: int, holdout_px: int):
    """Latents, layout masks and usable-latent maps of every dihedral x shift x stain variant.

    Returns a list of ``(z (4, h, w), mask (1, 8h, 8w), ok (h, w) bool)``; ``ok`` is False on
    latents that touch the held-out block.
    """
    out = []
    for im, lab in zip(images, labels, strict=True):
        keep = np.ones(im.shape[:2], np.float32)
        keep[-holdout_px:, -holdout_px:] = 0.0
        mask = layout_mask(lab)
        for k in range(8):
            bi, bm, bk = dihedral(im, k), dihedral(mask[..., None], k), dihedral(keep[..., None], k)
            for sy, sx in ((0, 0), (4, 4)):
                h, w = ((bi.shape[0] - sy) // 8) * 8, ((bi.shape[1] - sx) // 8) * 8
                vi = bi[sy : sy + h, sx : sx + w]
                vm = torch.from_numpy(np.ascontiguousarray(bm[sy : sy + h, sx : sx + w, 0]))
                vk = torch.from_numpy(np.ascontiguousarray(bk[sy : sy + h, sx : sx + w, 0]))
                ok = F.avg_pool2d(vk[None, None], 8)[0, 0] > 0.999
                for j in range(jitters):
                    v = stain_jitter(vi, rng) if j else vi
                    x = torch.from_numpy(np.ascontiguousarray(v)).permute(2, 0, 1)[None]
                    z = vae.encode(x * 2 - 1).latent_dist.mean[0]
                    out.append((z, vm[None], ok))
    return out


def crop_positions(ok: torch.Tensor) -> np.ndarray:
    """Top-left corners of all TILE_LATENT windows lying wholly on usable latents."""
    win = F.avg_pool2d(ok[None, None].float(), TILE_LATENT, stride=1)[0, 0] > 0.999
    return np.argwhere(win.numpy())


def batch(variants, positions, rng, n: int, shift, scale):
    zs, ms = [], []
    for _ in range(n):
        i = int(rng.integers(len(variants)))
        z, m, _ = variants[i]
        y, x = positions[i][int(rng.integers(len(positions[i])))]
        zs.append(z[:, y : y + TILE_LATENT, x : x + TILE_LATENT])
        ms.append(m[:, y * 8 : (y + TILE_LATENT) * 8, x * 8 : (x + TILE_LATENT) * 8])
    z0 = (torch.stack(zs) - shift) * scale
    return z0, torch.stack(ms)


def net_inputs(z, mask, present):
    """Noisy latent + unshuffled layout + presence channel (as models.cells._CellsUNet)."""
    b, _, h, w = z.shape
    m = F.pixel_unshuffle(mask, F_LAT) * present[:, None, None, None]
    p = present[:, None, None, None].expand(b, 1, h, w)
    return torch.cat([z, m, p], 1)


@torch.no_grad()
def save_preview(ema, vae, variants, shift, scale, path: Path, seed: int) -> None:
    """Four layouts (from the training variants) above their conditioned samples (12 Euler)."""
    g = torch.Generator().manual_seed(seed)
    picks = [variants[i] for i in (0, len(variants) // 3, len(variants) // 2, -1)]
    masks = torch.stack([m[:, : TILE_LATENT * 8, : TILE_LATENT * 8] for _, m, _ in picks])
    z = torch.randn(len(picks), 4, TILE_LATENT, TILE_LATENT, generator=g)
    present = torch.ones(len(picks))
    ts = torch.linspace(1.0, 0.0, 13)
    for t, tn in itertools.pairwise(ts):
        v = ema(net_inputs(z, masks, present), (t * TIMESTEP_SCALE).expand(len(picks))).sample
        z = z + (tn - t) * v
    rgb = vae.decode(z / scale + shift).sample.clamp(-1, 1)
    rgb = ((rgb + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    lay = (masks[:, 0].numpy() * 255).astype(np.uint8)[..., None].repeat(3, -1)
    imsave(path, np.concatenate([np.concatenate(list(lay), 1), np.concatenate(list(rgb), 1)], 0))


def _rel(value):
    """A path relative to the working directory when it lies inside it (for the record)."""
    if isinstance(value, Path) and value.is_absolute():
        try:
            return value.relative_to(Path.cwd())
        except ValueError:
            return value
    return value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("data/training"))
    ap.add_argument("--vae", type=Path, default=TINY_DIR, help="cytosyn-tiny folder (shared VAE)")
    ap.add_argument(
        "--out", type=Path, default=Path("src/napari_cytosyn/models/weights/cytosyn-tiny-cells")
    )
    ap.add_argument("--runs", type=Path, default=Path("runs/cells"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--minutes", type=float, default=70.0)
    ap.add_argument("--steps", type=int, default=0, help="fixed step count (overrides minutes)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--ema", type=float, default=0.995)
    ap.add_argument("--p-uncond", type=float, default=0.15)
    ap.add_argument("--jitters", type=int, default=2)
    ap.add_argument("--holdout-px", type=int, default=160)
    ap.add_argument("--save-minutes", type=float, default=8.0)
    ap.add_argument("--resume", action="store_true", help="continue from --runs/checkpoint.pt")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    args.runs.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    images = load_images(args.data)
    labels = [otsu_watershed((im * 255).round().astype(np.uint8)) for im in images]
    log(f"{len(images)} images, pseudo-label nuclei {[int(lab.max()) for lab in labels]}")
    tiny = tiny_config(args.vae)
    shift = torch.tensor(tiny["latent_shift"])[None, :, None, None]
    scale = torch.tensor(tiny["latent_scale"])[None, :, None, None]
    vae = AutoencoderKL.from_pretrained(args.vae / "vae", torch_dtype=torch.float32).eval()
    vae.requires_grad_(False)
    t_enc = time.time()
    variants = encode_variants(vae, images, labels, rng, args.jitters, args.holdout_px)
    positions = [crop_positions(ok) for _, _, ok in variants]
    log(f"{len(variants)} latent maps in {time.time() - t_enc:.0f} s")

    torch.manual_seed(args.seed + 1)
    unet = UNet2DModel(**UNET_CONFIG)
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(args.seed + 2)
    step, elapsed, losses = 0, 0.0, []
    ckpt = args.runs / "checkpoint.pt"
    if args.resume and ckpt.is_file():
        state = torch.load(ckpt, weights_only=False)
        unet.load_state_dict(state["unet"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        rng.bit_generator.state = state["rng"]
        step, elapsed = state["step"], state["elapsed"]
        log(f"resumed at step {step} ({elapsed / 60:.1f} min)")
    log(f"UNet params {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M")

    def save(final: bool) -> None:
        torch.save(
            dict(
                unet=unet.state_dict(),
                ema=ema.state_dict(),
                opt=opt.state_dict(),
                gen=gen.get_state(),
                rng=rng.bit_generator.state,
                step=step,
                elapsed=elapsed,
            ),
            ckpt,
        )
        save_half(ema, args.out / "unet")
        cfg = {
            "name": "cytosyn-tiny-cells",
            "target": "flow",
            "timestep_scale": TIMESTEP_SCALE,
            "conditioning": "nucleus mask, pixel-unshuffled by 8, + presence channel",
            "autoencoder": "cytosyn-tiny (shared, frozen)",
            "default_steps": 12,
            "training": {
                "seed": args.seed,
                "steps": step,
                "minutes": round(elapsed / 60, 1),
                "batch": args.batch,
                "p_uncond": args.p_uncond,
                "holdout_px": args.holdout_px,
                "final": final,
                "data": [p.name for p in sorted(args.data.glob("*_0.5mpp.png"))],
                "pseudo_labels": "napari_cytosyn.testkit.methods.otsu_watershed (defaults)",
                "command": "python scripts/train_cells.py "
                + " ".join(
                    f"--{k.replace('_', '-')} {_rel(v)}"
                    for k, v in vars(args).items()
                    if v is not None and not isinstance(v, bool)
                ),
            },
        }
        (args.out / CONFIG_NAME).write_text(json.dumps(cfg, indent=2))
        save_preview(ema, vae, variants, shift, scale, args.runs / f"preview_{step:06d}.png", 0)
        log(f"saved at step {step}")

    budget = args.minutes * 60.0
    t0, last_save = time.time() - elapsed, time.time()
    while True:
        elapsed = time.time() - t0
        frac = step / args.steps if args.steps else elapsed / budget
        if frac >= 1.0:
            break
        lr = (
            args.lr
            * min(1.0, (step + 1) / 200)
            * (0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * frac)))
        )
        for g in opt.param_groups:
            g["lr"] = lr
        z0, mask = batch(variants, positions, rng, args.batch, shift, scale)
        eps = torch.randn(z0.shape, generator=gen)
        t = torch.sigmoid(torch.randn(z0.shape[0], generator=gen))  # logit-normal (SD3)
        present = (torch.rand(z0.shape[0], generator=gen) >= args.p_uncond).float()
        tt = t[:, None, None, None]
        zt = (1 - tt) * z0 + tt * eps
        v = unet(net_inputs(zt, mask, present), t * TIMESTEP_SCALE).sample
        loss = F.mse_loss(v, eps - z0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        step += 1
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), unet.parameters(), strict=True):
                pe.lerp_(p, 1 - decay)
        losses.append(loss.item())
        if step % 25 == 0:
            log(f"step {step} loss {np.mean(losses[-25:]):.4f} lr {lr:.2e}")
        if time.time() - last_save > args.save_minutes * 60:
            elapsed = time.time() - t0
            save(final=False)
            last_save = time.time()
    elapsed = time.time() - t0
    save(final=True)
    log(f"done: {step} steps in {elapsed / 60:.1f} min")


if __name__ == "__main__":
    main()
