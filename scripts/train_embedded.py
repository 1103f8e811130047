"""Train the embedded default model ``cytosyn-tiny`` on CPU: an f8/4-channel AutoencoderKL, then a
rectified-flow UNet on its latents (224 px tiles = 28 x 28 latents at 0.5 um/px).

Run ``scripts/fetch_training_data.py`` first. Typical use (about 75 minutes on 2 CPU cores)::

    python scripts/train_embedded.py --data data/training \
        --out src/napari_cytosyn/models/weights/cytosyn-tiny --vae-minutes 30 --unet-minutes 40

``--vae-steps`` / ``--unet-steps`` fix the number of optimisation steps instead of a time
budget; with them and ``--seed`` a run is reproducible (the step counts a time-budgeted run
reached are written to ``cytosyn_tiny.json``). Checkpoints of both stages are written to
``--out`` every ``--save-minutes``, so an early model is usable while training goes on.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, UNet2DModel
from skimage.color import hed2rgb, rgb2hed
from skimage.io import imread, imsave

TIMESTEP_SCALE = 1000.0  # the UNet sees t * 1000 as its timestep
TILE_LATENT = 28
HOLDOUT_PX = 128  # bottom-right block of the first image, never seen by the VAE

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(32, 64, 128, 128),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=16,
    sample_size=224,
    mid_block_add_attention=False,  # fully convolutional: tiles decode like the whole
)

UNET_CONFIG = dict(
    sample_size=TILE_LATENT,
    in_channels=4,
    out_channels=4,
    down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    block_out_channels=(64, 128, 192),
    layers_per_block=1,
    attention_head_dim=32,
    norm_num_groups=32,
)


def save_half(model, path: Path) -> None:
    """Save a float16 copy as safetensors (halves the shipped size; loaded back as float32)."""
    copy.deepcopy(model).half().save_pretrained(path, safe_serialization=True)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------- data


def load_images(data: Path) -> list[np.ndarray]:
    """The training images as float32 ``(H, W, 3)`` in [0, 1], at 0.5 um/px."""
    paths = sorted(data.glob("*_0.5mpp.png"))
    if not paths:
        raise FileNotFoundError(f"no *_0.5mpp.png in {data}; run scripts/fetch_training_data.py")
    return [imread(p)[..., :3].astype(np.float32) / 255.0 for p in paths]


def stain_jitter(rgb: np.ndarray, rng: np.random.Generator, scale=0.05, bias=0.01) -> np.ndarray:
    """Mild H&E stain jitter: scale and shift the H and E concentrations (Tellez et al. 2018)."""
    hed = rgb2hed(rgb)
    for k in (0, 1):
        hed[..., k] = hed[..., k] * (1.0 + rng.normal(0, scale)) + rng.normal(0, bias)
    return np.clip(hed2rgb(hed), 0.0, 1.0).astype(np.float32)


def dihedral(rgb: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/90-degree rotations of ``(H, W, C)``."""
    out = np.rot90(rgb, k % 4, axes=(0, 1))
    return np.ascontiguousarray(out[:, ::-1] if k >= 4 else out)


def vae_batch(images, rng, batch: int, crop: int) -> torch.Tensor:
    """Random augmented crops ``(B, 3, crop, crop)`` in [-1, 1], avoiding the holdout block."""
    out = []
    while len(out) < batch:
        i = int(rng.integers(len(images)))
        im = images[i]
        h, w = im.shape[:2]
        y, x = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
        if i == 0 and y + crop > h - HOLDOUT_PX and x + crop > w - HOLDOUT_PX:
            continue
        c = dihedral(im[y : y + crop, x : x + crop], int(rng.integers(8)))
        out.append(stain_jitter(c, rng))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2) * 2.0 - 1.0


# ---------------------------------------------------------------- VAE


class PatchDiscriminator(torch.nn.Module):
    """A small PatchGAN (Isola et al. 2017) for the last part of VAE training."""

    def __init__(self, ch: int = 32):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, ch, 4, 2, 1),
            torch.nn.LeakyReLU(0.2),
            torch.nn.Conv2d(ch, ch * 2, 4, 2, 1),
            torch.nn.GroupNorm(8, ch * 2),
            torch.nn.LeakyReLU(0.2),
            torch.nn.Conv2d(ch * 2, ch * 4, 4, 1, 1),
            torch.nn.GroupNorm(8, ch * 4),
            torch.nn.LeakyReLU(0.2),
            torch.nn.Conv2d(ch * 4, 1, 4, 1, 1),
        )

    def forward(self, x):
        return self.net(x)


def gradient_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 between finite-difference image gradients (keeps nuclear edges sharp)."""
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
    return (dy(a) - dy(b)).abs().mean() + (dx(a) - dx(b)).abs().mean()


def fft_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 between log FFT amplitudes (penalises lost high frequencies, i.e. blur)."""
    fa = torch.log1p(torch.fft.rfft2(a, norm="ortho").abs())
    fb = torch.log1p(torch.fft.rfft2(b, norm="ortho").abs())
    return (fa - fb).abs().mean()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a - b) / 2.0).pow(2).mean().item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def train_vae(args, images, rng, out: Path) -> tuple[AutoencoderKL, int]:
    torch.manual_seed(args.seed)
    vae = AutoencoderKL(**VAE_CONFIG)
    disc = PatchDiscriminator()
    log(f"VAE params {sum(p.numel() for p in vae.parameters()) / 1e6:.2f} M")
    opt = torch.optim.AdamW(vae.parameters(), lr=args.vae_lr, weight_decay=0.0)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=args.vae_lr, betas=(0.5, 0.9))
    im0 = images[0]
    hold = torch.from_numpy(im0[-HOLDOUT_PX:, -HOLDOUT_PX:].copy()).permute(2, 0, 1)[None] * 2 - 1
    t0, step, last_save = time.time(), 0, time.time()
    budget = args.vae_minutes * 60.0
    while True:
        frac = step / args.vae_steps if args.vae_steps else (time.time() - t0) / budget
        if frac >= 1.0:
            break
        lr = (
            args.vae_lr
            * min(1.0, (step + 1) / 100)
            * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        )
        for g in opt.param_groups:
            g["lr"] = lr
        x = vae_batch(images, rng, args.vae_batch, args.vae_crop)
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        l1 = (rec - x).abs().mean()
        lg = gradient_l1(rec, x)
        lf = fft_l1(rec, x)
        kl = post.kl().mean() / (x.shape[-1] * x.shape[-2])
        loss = l1 + args.grad_weight * lg + args.fft_weight * lf + args.kl_weight * kl
        use_gan = frac >= 1.0 - args.gan_frac
        if use_gan:
            loss = loss - args.gan_weight * disc(rec).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if use_gan:  # hinge loss for the discriminator
            d_loss = F.relu(1 - disc(x)).mean() + F.relu(1 + disc(rec.detach())).mean()
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
        step += 1
        if step % 25 == 0:
            with torch.no_grad():
                hp = psnr(vae.decode(vae.encode(hold).latent_dist.mean).sample.clamp(-1, 1), hold)
            log(
                f"vae step {step} l1 {l1.item():.4f} grad {lg.item():.4f} fft {lf.item():.4f} "
                f"kl {kl.item():.3f} gan {int(use_gan)} lr {lr:.2e} holdout_psnr {hp:.2f}"
            )
        if time.time() - last_save > args.save_minutes * 60:
            save_half(vae, out / "vae")
            last_save = time.time()
    vae.eval()
    save_half(vae, out / "vae")
    log(f"VAE done: {step} steps in {(time.time() - t0) / 60:.1f} min")
    return vae, step


def finetune_decoder(args, vae, images, rng, out: Path) -> int:
    """Train only the decoder (encoder frozen, so latents and their scaling do not change).

    Decodes posterior samples of larger crops (``--decoder-crop``) with the same L1 + gradient +
    FFT loss; returns the number of steps.
    """
    vae.requires_grad_(False)
    params = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=args.decoder_lr, weight_decay=0.0)
    im0 = images[0]
    hold = torch.from_numpy(im0[-HOLDOUT_PX:, -HOLDOUT_PX:].copy()).permute(2, 0, 1)[None] * 2 - 1
    t0, step = time.time(), 0
    while (time.time() - t0) < args.decoder_minutes * 60:
        frac = (time.time() - t0) / (args.decoder_minutes * 60)
        for g in opt.param_groups:
            g["lr"] = args.decoder_lr * 0.5 * (1 + math.cos(math.pi * frac))
        x = vae_batch(images, rng, args.vae_batch, args.decoder_crop)
        with torch.no_grad():
            z = vae.encode(x).latent_dist.sample()
        rec = vae.decode(z).sample
        loss = (
            (rec - x).abs().mean()
            + args.grad_weight * gradient_l1(rec, x)
            + args.fft_weight * fft_l1(rec, x)
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        if step % 25 == 0:
            with torch.no_grad():
                hp = psnr(vae.decode(vae.encode(hold).latent_dist.mean).sample.clamp(-1, 1), hold)
            log(f"decoder step {step} loss {loss.item():.4f} holdout_psnr {hp:.2f}")
    vae.requires_grad_(False).eval()
    save_half(vae, out / "vae")
    log(f"decoder fine-tune done: {step} steps in {(time.time() - t0) / 60:.1f} min")
    return step


# ---------------------------------------------------------------- latents


@torch.no_grad()
def encode_variants(vae, images, rng, jitters: int) -> list[torch.Tensor]:
    """Posterior means of all 8 dihedral variants x 2 half-latent shifts x ``jitters`` stains."""
    lat = []
    for im in images:
        for k in range(8):
            base = dihedral(im, k)
            for sy, sx in ((0, 0), (4, 4)):
                for j in range(jitters):
                    v = base[sy:, sx:]
                    v = stain_jitter(v, rng) if j else v
                    h, w = (v.shape[0] // 8) * 8, (v.shape[1] // 8) * 8
                    x = torch.from_numpy(np.ascontiguousarray(v[:h, :w])).permute(2, 0, 1)[None]
                    lat.append(vae.encode(x * 2 - 1).latent_dist.mean[0])
    return lat


def latent_batch(latents, rng, batch: int) -> torch.Tensor:
    out = []
    for _ in range(batch):
        z = latents[int(rng.integers(len(latents)))]
        y = int(rng.integers(z.shape[1] - TILE_LATENT + 1))
        x = int(rng.integers(z.shape[2] - TILE_LATENT + 1))
        out.append(z[:, y : y + TILE_LATENT, x : x + TILE_LATENT])
    return torch.stack(out)


# ---------------------------------------------------------------- flow UNet


@torch.no_grad()
def euler_sample(unet, n: int, steps: int, seed: int, size: int = TILE_LATENT) -> torch.Tensor:
    """Plain Euler on the rectified-flow ODE from t=1 (noise) to t=0; returns scaled latents."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 4, size, size, generator=g)
    ts = torch.linspace(1.0, 0.0, steps + 1)
    for t, t_next in itertools.pairwise(ts):
        v = unet(z, (t * TIMESTEP_SCALE).expand(n)).sample
        z = z + (t_next - t) * v
    return z


def save_preview(unet, vae, mean, std, path: Path, seed: int) -> None:
    z = euler_sample(unet, 4, 12, seed)
    with torch.no_grad():
        rgb = vae.decode(z * std + mean).sample.clamp(-1, 1)
    rgb = ((rgb + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    imsave(path, np.concatenate(list(rgb), 1))


def train_unet(
    args, latents, mean, std, vae, rng, out: Path, runs: Path
) -> tuple[UNet2DModel, int]:
    torch.manual_seed(args.seed + 1)
    unet = UNet2DModel(**UNET_CONFIG)
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    log(f"UNet params {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M")
    opt = torch.optim.AdamW(unet.parameters(), lr=args.unet_lr, weight_decay=0.0)
    scaled = [(z - mean[:, None, None]) / std[:, None, None] for z in latents]
    t0, step, last_save, losses = time.time(), 0, time.time(), []
    budget = args.unet_minutes * 60.0
    gen = torch.Generator().manual_seed(args.seed + 2)
    while True:
        frac = step / args.unet_steps if args.unet_steps else (time.time() - t0) / budget
        if frac >= 1.0:
            break
        lr = (
            args.unet_lr
            * min(1.0, (step + 1) / 200)
            * (0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * frac)))
        )
        for g in opt.param_groups:
            g["lr"] = lr
        z0 = latent_batch(scaled, rng, args.unet_batch)
        eps = torch.randn(z0.shape, generator=gen)
        t = torch.sigmoid(torch.randn(z0.shape[0], generator=gen))  # logit-normal (SD3)
        tt = t[:, None, None, None]
        zt = (1 - tt) * z0 + tt * eps
        v = unet(zt, t * TIMESTEP_SCALE).sample
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
            log(f"unet step {step} loss {np.mean(losses[-25:]):.4f} lr {lr:.2e}")
        if time.time() - last_save > args.save_minutes * 60:
            save_half(ema, out / "unet")
            save_preview(
                ema,
                vae,
                mean[None, :, None, None],
                std[None, :, None, None],
                runs / f"preview_{step:06d}.png",
                args.seed,
            )
            log(f"checkpoint at step {step}")
            last_save = time.time()
    save_half(ema, out / "unet")
    log(f"UNet done: {step} steps in {(time.time() - t0) / 60:.1f} min")
    return ema, step


def write_model_config(out: Path, mean, std, info: dict) -> None:
    cfg = {
        "name": "cytosyn-tiny",
        "target": "flow",
        "interpolant": "flow",
        "timestep_scale": TIMESTEP_SCALE,
        "mpp": 0.5,
        "tile_px": 224,
        "latent_factor": 8,
        "latent_channels": 4,
        # z_model = (z_vae - shift) * scale, per channel
        "latent_shift": [float(v) for v in mean],
        "latent_scale": [float(1.0 / v) for v in std],
        "default_steps": 16,
        **info,
    }
    (out / "cytosyn_tiny.json").write_text(json.dumps(cfg, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("data/training"))
    ap.add_argument(
        "--out", type=Path, default=Path("src/napari_cytosyn/models/weights/cytosyn-tiny")
    )
    ap.add_argument("--runs", type=Path, default=Path("runs"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--vae-minutes", type=float, default=20.0)
    ap.add_argument("--unet-minutes", type=float, default=40.0)
    ap.add_argument("--vae-steps", type=int, default=0, help="fixed step count (overrides minutes)")
    ap.add_argument(
        "--unet-steps", type=int, default=0, help="fixed step count (overrides minutes)"
    )
    ap.add_argument("--vae-batch", type=int, default=8)
    ap.add_argument("--vae-crop", type=int, default=64)
    ap.add_argument("--vae-lr", type=float, default=1e-3)
    ap.add_argument("--grad-weight", type=float, default=1.0)
    ap.add_argument("--fft-weight", type=float, default=0.1)
    ap.add_argument("--kl-weight", type=float, default=1e-6)
    ap.add_argument(
        "--gan-frac", type=float, default=0.0, help="last fraction of VAE training with GAN"
    )
    ap.add_argument("--gan-weight", type=float, default=0.05)
    ap.add_argument("--decoder-minutes", type=float, default=0.0, help="decoder-only fine-tune")
    ap.add_argument("--decoder-crop", type=int, default=128)
    ap.add_argument("--decoder-lr", type=float, default=2e-4)
    ap.add_argument("--jitters", type=int, default=2, help="stain variants per encoded view")
    ap.add_argument("--unet-batch", type=int, default=16)
    ap.add_argument("--unet-lr", type=float, default=5e-4)
    ap.add_argument("--ema", type=float, default=0.995)
    ap.add_argument("--save-minutes", type=float, default=10.0)
    ap.add_argument("--vae-from", type=Path, default=None, help="reuse a trained VAE folder")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    args.runs.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    images = load_images(args.data)
    log(f"{len(images)} images, {sum(i.shape[0] * i.shape[1] for i in images) / 1e6:.3f} MP")
    t_all = time.time()
    if args.vae_from:
        vae = AutoencoderKL.from_pretrained(args.vae_from, torch_dtype=torch.float32).eval()
        vae_steps = 0
    else:
        vae, vae_steps = train_vae(args, images, rng, args.out)
    vae_min = (time.time() - t_all) / 60
    if args.unet_minutes == 0 and not args.unet_steps:  # decoder-only run
        finetune_decoder(args, vae, images, rng, args.out)
        return
    vae.requires_grad_(False)
    t_enc = time.time()
    latents = encode_variants(vae, images, rng, args.jitters)
    allz = torch.cat([z.reshape(4, -1) for z in latents], 1)
    mean, std = allz.mean(1), allz.std(1)
    log(
        f"{len(latents)} latent maps in {time.time() - t_enc:.0f} s; "
        f"mean {mean.tolist()} std {std.tolist()}"
    )
    info = {
        "training": {
            "seed": args.seed,
            "vae_steps": vae_steps,
            "vae_minutes": round(vae_min, 1),
            "data": [p.name for p in sorted(args.data.glob("*_0.5mpp.png"))],
            "command": "python scripts/train_embedded.py "
            + " ".join(
                f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None
            ),
        }
    }
    write_model_config(args.out, mean, std, info)
    t_u = time.time()
    _, unet_steps = train_unet(args, latents, mean, std, vae, rng, args.out, args.runs)
    info["training"].update(
        unet_steps=unet_steps,
        unet_minutes=round((time.time() - t_u) / 60, 1),
        total_minutes=round((time.time() - t_all) / 60, 1),
    )
    if args.decoder_minutes > 0:
        t_d = time.time()
        info["training"]["decoder_steps"] = finetune_decoder(args, vae, images, rng, args.out)
        info["training"]["decoder_minutes"] = round((time.time() - t_d) / 60, 1)
    info["training"]["total_minutes"] = round((time.time() - t_all) / 60, 1)
    write_model_config(args.out, mean, std, info)
    log(f"all done in {(time.time() - t_all) / 60:.1f} min")


if __name__ == "__main__":
    main()
