"""Train the embedded default model ``cytosyn-tiny`` on CPU: an f8/4-channel AutoencoderKL, then a
rectified-flow UNet on its latents (224 px tiles = 28 x 28 latents at 0.5 um/px).

Run ``scripts/fetch_training_data.py`` first. Typical use (about 75 minutes on 2 CPU cores)::

    python scripts/train_embedded.py --data data/training \
        --out src/napari_cytosyn/models/weights/cytosyn-tiny --vae-minutes 30 --unet-minutes 40

``--vae-steps`` / ``--unet-steps`` fix the number of optimisation steps instead of a time
budget; with them and ``--seed`` a run is reproducible (the step counts a time-budgeted run
reached are written to ``cytosyn_tiny.json``). Checkpoints of both stages are written to
``--out`` every ``--save-minutes``, so an early model is usable while training goes on.

Version 2 stages (each resumable with ``--resume``, checkpoints in ``--runs``): ``--conditional``
(descriptor-conditioned UNet fine-tune, optional distillation), ``--decoders`` (decoders on the
frozen encoder's latents of real crops), ``--gen-decoders`` (decoders fine-tuned on the latents
the sampler of ``--gen-model`` produces, with an adversarial loss: the sharp-texture stage) and
``--assemble`` (the shipped folder, with the commands recorded in ``cytosyn_tiny.json``).
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

from napari_cytosyn.models.tiny_nets import X2Decoder, descriptor_mlp
from napari_cytosyn.models.tissue_descriptor import FEATURES, describe

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


def vae_batch(images, rng, batch: int, crop: int, jitter: bool = True) -> torch.Tensor:
    """Random augmented crops ``(B, 3, crop, crop)`` in [-1, 1], avoiding the holdout block
    (``jitter`` False: flips and rotations only, the real colours)."""
    out = []
    while len(out) < batch:
        i = int(rng.integers(len(images)))
        im = images[i]
        h, w = im.shape[:2]
        y, x = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
        if i == 0 and y + crop > h - HOLDOUT_PX and x + crop > w - HOLDOUT_PX:
            continue
        c = dihedral(im[y : y + crop, x : x + crop], int(rng.integers(8)))
        out.append(stain_jitter(c, rng) if jitter else c)
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


def fft_l1_windowed(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """:func:`fft_l1` of Hann-windowed images: the crop's borders add no spurious axis lines to
    the spectrum, so matching it does not teach the decoder to draw grid lines."""
    h, w = a.shape[-2:]
    win = torch.hann_window(h, periodic=False)[:, None] * torch.hann_window(w, periodic=False)
    return fft_l1(a * win, b * win)


def gaussian_blur(x: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """Separable Gaussian blur (reflect padding) of ``(B, C, H, W)``: the low-pass of the
    generated-latent decoder loss (unlike a 4 x 4 average pool it has no block-periodic null
    space for the decoder to fill with stripes)."""
    r = int(3 * sigma)
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=x.dtype) / sigma) ** 2)
    k = (k / k.sum()).to(x.device)
    c = x.shape[1]
    x = F.pad(x, (r, r, r, r), mode="reflect")
    x = F.conv2d(x, k.reshape(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.reshape(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a - b) / 2.0).pow(2).mean().item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))


def stain_moments_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 between the per-image means and sds of haematoxylin and eosin optical density
    (``rgb2hed``) of ``(B, 3, H, W)`` in [-1, 1]: the colour statistics of a crop, without its
    pixel positions (the generated pairs share the layout, not the detail)."""
    from skimage.color import hed_from_rgb

    m = torch.as_tensor(hed_from_rgb[:, :2], dtype=a.dtype)

    def moments(x):
        od = torch.log(((x + 1) / 2).clamp(1e-6, 1)) / math.log(1e-6)
        he = torch.einsum("bchw,cd->bdhw", od, m).clamp_min(0)
        return torch.cat([he.mean((2, 3)), he.std((2, 3))], 1)

    return (moments(a) - moments(b)).abs().mean()


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


# ---------------------------------------------------------------- conditional UNet (v2)


@torch.no_grad()
def encode_crops(
    vae, images, rng, jitters: int, per_variant: int, shift, scale, crop_lat: int, views: int = 8
):
    """Latent crops and the descriptors of their pixels, over all augmented variants.

    Every image is taken in its first ``views`` of the 8 dihedral variants x 2 half-latent
    shifts x ``jitters`` stain variants (the first unjittered), encoded once (posterior mean,
    model scaling ``(z - shift) * scale``), and ``per_variant`` random ``crop_lat``-latent
    crops are cut with the raw :func:`describe` of the same pixels. Returns ``(N, 4, c, c)``
    and ``(N, D)``.
    """
    zs, ds = [], []
    px = crop_lat * 8
    for im in images:
        for k in range(views):
            base = dihedral(im, k)
            for sy, sx in ((0, 0), (4, 4)):
                for j in range(jitters):
                    v = base[sy:, sx:]
                    v = stain_jitter(v, rng) if j else v
                    h, w = (v.shape[0] // 8) * 8, (v.shape[1] // 8) * 8
                    v = np.ascontiguousarray(v[:h, :w])
                    x = torch.from_numpy(v).permute(2, 0, 1)[None] * 2 - 1
                    z = (vae.encode(x).latent_dist.mean[0] - shift[:, None, None]) * scale[
                        :, None, None
                    ]
                    u8 = np.round(v * 255).astype(np.uint8)
                    for _ in range(per_variant):
                        y = int(rng.integers(z.shape[1] - crop_lat + 1))
                        x0 = int(rng.integers(z.shape[2] - crop_lat + 1))
                        zs.append(z[:, y : y + crop_lat, x0 : x0 + crop_lat].clone())
                        ds.append(describe(u8[8 * y : 8 * y + px, 8 * x0 : 8 * x0 + px]))
    return torch.stack(zs), torch.from_numpy(np.stack(ds)).float()


def cond_vector(desc: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``[desc, 1]`` where ``keep`` else all zeros (the null condition)."""
    c = torch.cat([desc, torch.ones(desc.shape[0], 1)], 1)
    return c * keep[:, None].float()


def _ckpt_state(rng, gen) -> dict:
    return {"np_rng": rng.bit_generator.state, "torch_gen": gen.get_state()}


def train_conditional(args, cache_z, cache_d, unet, mlp, rng, out: Path, runs: Path, ckpt: Path):
    """Fine-tune ``unet`` (+ the zero-initialised descriptor head ``mlp``) on descriptor-labelled
    latent crops, with classifier-free dropout ``--cond-drop``; then, when ``--distill-minutes``
    is set, distil the result into a few-step student (progressive distillation, Salimans & Ho
    2022, on the rectified-flow ODE): for a random interval ``[t_a, t_b]`` of a 4- or 6-step
    uniform grid, the student's single Euler step from ``z_{t_a}`` regresses the teacher's
    ``12 / n`` Euler steps over the same interval. Checkpoints (``ckpt``) make both stages
    resumable; returns the step counts.
    """
    gen = torch.Generator().manual_seed(args.seed + 3)
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    ema_mlp = copy.deepcopy(mlp).eval().requires_grad_(False)
    params = [*unet.parameters(), *mlp.parameters()]
    opt = torch.optim.AdamW(params, lr=args.unet_lr, weight_decay=0.0)
    state = {"stage": "cond", "step": 0, "elapsed": 0.0, "steps": {"cond": 0, "distill": 0}}
    teacher = teacher_mlp = None
    if ckpt.is_file() and args.resume:
        sd = torch.load(ckpt, weights_only=False)
        state = sd["state"]
        if state["stage"] == "distill":
            teacher = copy.deepcopy(unet).eval().requires_grad_(False)
            teacher_mlp = copy.deepcopy(mlp).eval().requires_grad_(False)
            teacher.load_state_dict(sd["teacher"])
            teacher_mlp.load_state_dict(sd["teacher_mlp"])
            opt = torch.optim.AdamW(params, lr=args.distill_lr, weight_decay=0.0)
        unet.load_state_dict(sd["unet"])
        mlp.load_state_dict(sd["mlp"])
        ema.load_state_dict(sd["ema"])
        ema_mlp.load_state_dict(sd["ema_mlp"])
        opt.load_state_dict(sd["opt"])
        rng.bit_generator.state = sd["rng"]["np_rng"]
        gen.set_state(sd["rng"]["torch_gen"])
        log(f"resumed {state['stage']} at step {state['step']} ({state['elapsed'] / 60:.1f} min)")

    def save(final: bool = False) -> None:
        sd = {
            "state": state,
            "unet": unet.state_dict(),
            "mlp": mlp.state_dict(),
            "ema": ema.state_dict(),
            "ema_mlp": ema_mlp.state_dict(),
            "opt": opt.state_dict(),
            "rng": _ckpt_state(rng, gen),
        }
        if teacher is not None:
            sd["teacher"] = teacher.state_dict()
            sd["teacher_mlp"] = teacher_mlp.state_dict()
        torch.save(sd, ckpt.with_suffix(".tmp"))
        ckpt.with_suffix(".tmp").replace(ckpt)
        save_half(ema, out / "unet")
        save_cond_head(ema_mlp, out / "cond")
        log(f"checkpoint {state['stage']} step {state['step']}{' (final)' if final else ''}")

    n = cache_z.shape[0]
    losses, last_save = [], time.time()
    for stage, minutes in (("cond", args.cond_minutes), ("distill", args.distill_minutes)):
        if stage == "cond" and state["stage"] == "distill":
            continue
        if minutes <= 0:
            continue
        if stage == "distill" and state["stage"] == "cond":
            teacher = copy.deepcopy(ema).eval().requires_grad_(False)
            teacher_mlp = copy.deepcopy(ema_mlp).eval().requires_grad_(False)
            unet.load_state_dict(ema.state_dict())
            mlp.load_state_dict(ema_mlp.state_dict())
            opt = torch.optim.AdamW(params, lr=args.distill_lr, weight_decay=0.0)
            state.update(stage="distill", step=0, elapsed=0.0)
        base_lr = args.unet_lr if stage == "cond" else args.distill_lr
        t_start = time.time() - state["elapsed"]
        budget = minutes * 60.0
        while True:
            state["elapsed"] = time.time() - t_start
            frac = state["elapsed"] / budget
            if args.unet_steps:
                frac = state["step"] / args.unet_steps
            if frac >= 1.0:
                break
            lr = (
                base_lr
                * min(1.0, (state["step"] + 1) / 50)
                * (0.5 + 0.5 * math.cos(math.pi * frac))
            )
            for g in opt.param_groups:
                g["lr"] = lr
            idx = torch.from_numpy(rng.integers(n, size=args.unet_batch))
            z0 = cache_z[idx]
            keep = torch.rand(z0.shape[0], generator=gen) >= args.cond_drop
            c = cond_vector(cache_d[idx], keep)
            eps = torch.randn(z0.shape, generator=gen)
            if stage == "cond":
                t = torch.sigmoid(torch.randn(z0.shape[0], generator=gen))  # logit-normal (SD3)
                tt = t[:, None, None, None]
                zt = (1 - tt) * z0 + tt * eps
                v = unet(zt, t * TIMESTEP_SCALE, class_labels=mlp(c)).sample
                loss = F.mse_loss(v, eps - z0)
            else:
                grids = torch.tensor([4, 6])[torch.randint(2, (z0.shape[0],), generator=gen)]
                i = (torch.rand(z0.shape[0], generator=gen) * grids).floor()
                ta, tb = 1 - i / grids, 1 - (i + 1) / grids
                zt = (1 - ta[:, None, None, None]) * z0 + ta[:, None, None, None] * eps
                with torch.no_grad():
                    emb = teacher_mlp(c)
                    zz, sub = zt.clone(), (12 // grids).float()
                    for s in range(3):  # 3 sub-steps for the 4-grid, 2 for the 6-grid
                        live = (s < sub).float()[:, None, None, None]
                        t_s = ta + (tb - ta) * s / sub
                        t_n = ta + (tb - ta) * torch.minimum(torch.tensor(s + 1.0), sub) / sub
                        vt = teacher(zz, t_s * TIMESTEP_SCALE, class_labels=emb).sample
                        zz = zz + live * (t_n - t_s)[:, None, None, None] * vt
                    target = (zz - zt) / (tb - ta)[:, None, None, None]
                v = unet(zt, ta * TIMESTEP_SCALE, class_labels=mlp(c)).sample
                loss = F.mse_loss(v, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            state["step"] += 1
            state["steps"][stage] = state["step"]
            decay = min(args.ema, (1 + state["step"]) / (10 + state["step"]))
            with torch.no_grad():
                for pe, p in zip([*ema.parameters(), *ema_mlp.parameters()], params, strict=True):
                    pe.lerp_(p, 1 - decay)
            losses.append(loss.item())
            if state["step"] % 25 == 0:
                log(f"{stage} step {state['step']} loss {np.mean(losses[-25:]):.4f} lr {lr:.2e}")
            if time.time() - last_save > args.save_minutes * 60:
                save()
                last_save = time.time()
        save(final=True)
    return state["steps"]


def save_cond_head(mlp, path: Path) -> None:
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().half().contiguous() for k, v in mlp.state_dict().items()}
    save_file(sd, path / "descriptor_mlp.safetensors")


def run_conditional(args, images, rng) -> None:
    """v2 path: frozen v1 VAE and latent scaling, conditional fine-tune (+ distillation)."""
    t_all = time.time()
    src_cfg = json.loads((args.scaling_from / "cytosyn_tiny.json").read_text())
    shift = torch.tensor(src_cfg["latent_shift"])
    scale = torch.tensor(src_cfg["latent_scale"])
    vae = AutoencoderKL.from_pretrained(args.vae_from, torch_dtype=torch.float32).eval()
    vae.requires_grad_(False)
    crop_lat = args.tile_px // 8
    cache = args.runs / "cond_cache.pt"
    if cache.is_file():
        cz, cd = torch.load(cache)
    else:
        t0 = time.time()
        cz, cd = encode_crops(
            vae,
            images,
            rng,
            args.jitters,
            args.crops_per_variant,
            shift,
            scale,
            crop_lat,
            args.views,
        )
        torch.save((cz, cd), cache)
        log(f"{cz.shape[0]} descriptor-labelled crops in {time.time() - t0:.0f} s")
    d_mean, d_std = cd.mean(0), cd.std(0).clamp_min(1e-6)
    cdn = (cd - d_mean) / d_std
    if args.unet_from:
        unet = UNet2DModel.from_pretrained(
            args.unet_from, torch_dtype=torch.float32, class_embed_type="identity"
        )
    else:
        torch.manual_seed(args.seed + 1)
        unet = UNet2DModel(
            **{
                **UNET_CONFIG,
                "sample_size": crop_lat,
                "class_embed_type": "identity",
                **args.unet_override,
            }
        )
    unet.train()
    torch.manual_seed(args.seed + 4)
    emb_dim = unet.config.block_out_channels[0] * 4
    mlp = descriptor_mlp(len(FEATURES), emb_dim)
    log(
        f"UNet params {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M, "
        f"head {sum(p.numel() for p in mlp.parameters()) / 1e3:.0f} k"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    steps = train_conditional(
        args, cz, cdn, unet, mlp, rng, args.out, args.runs, args.runs / "cond_ckpt.pt"
    )
    cfg = {k: v for k, v in src_cfg.items() if k not in ("training", "descriptor", "default_steps")}
    cfg.update(
        name="cytosyn-tiny",
        version=2,
        tile_px=args.tile_px,
        default_steps=args.default_steps,
        descriptor={
            "features": list(FEATURES),
            "mpp": 0.5,
            "mean": [float(v) for v in d_mean],
            "std": [float(v) for v in d_std],
            "cond_drop": args.cond_drop,
        },
    )
    prev = src_cfg.get("training", {})
    cfg["training"] = {
        **{
            k: prev[k]
            for k in ("vae_steps", "vae_minutes", "decoder_steps", "decoder_minutes")
            if k in prev
        },
        "seed": args.seed,
        "data": [p.name for p in sorted(args.data.glob("*_0.5mpp.png"))],
        "cond_crops": int(cz.shape[0]),
        "cond_steps": steps["cond"],
        "distill_steps": steps["distill"],
        "unet_command": "python scripts/train_embedded.py "
        + " ".join(
            f"--{k.replace('_', '-')} {v}"
            for k, v in vars(args).items()
            if v is not None and k not in ("unet_override",)
        ),
        "unet_minutes": round((time.time() - t_all) / 60, 1),
    }
    (args.out / "cytosyn_tiny.json").write_text(json.dumps(cfg, indent=2))
    log(f"conditional stage done in {(time.time() - t_all) / 60:.1f} min")


# ---------------------------------------------------------------- decoders (v2)


def h_od(x: torch.Tensor) -> torch.Tensor:
    """Haematoxylin optical density (``rgb2hed``'s first channel) of ``(B, 3, H, W)`` in
    [-1, 1] -> ``(B, 1, H, W)``, differentiable."""
    from skimage.color import hed_from_rgb

    m = torch.as_tensor(hed_from_rgb[:, :1], dtype=x.dtype)
    od = torch.log(((x + 1) / 2).clamp(1e-6, 1)) / math.log(1e-6)
    return torch.einsum("bchw,cd->bdhw", od, m).clamp_min(0)


def hf_energy_l1(a: torch.Tensor, b: torch.Tensor, scales=(1, 2, 4)) -> torch.Tensor:
    """L1 between the per-image log variances of the Laplacian of haematoxylin (the realism
    classifier's and the sharpness ratio's texture measure) of ``a`` and ``b``, at full
    resolution and on 2 x 2 and 4 x 4 averages (``scales``): asks for the real energy in each
    frequency band, neither less (blur) nor more (over-sharp grain); the coarser bands keep the
    chromatin texture while the finest one loses its excess."""
    lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=a.dtype)
    ha, hb = h_od(a), h_od(b)

    def log_var(h, s):
        h = F.avg_pool2d(h, s) if s > 1 else h
        return torch.log(F.conv2d(h, lap.reshape(1, 1, 3, 3)).var((1, 2, 3)) + 1e-8)

    return sum((log_var(ha, s) - log_var(hb, s)).abs().mean() for s in scales) / len(scales)


def h_laplacian_var(rgb: torch.Tensor) -> float:
    """Variance of the Laplacian of the haematoxylin channel of ``(B, 3, H, W)`` in [-1, 1]."""
    from scipy import ndimage as ndi

    out = []
    for im in ((rgb.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy():
        out.append(ndi.laplace(rgb2hed(im)[..., 0]).var())
    return float(np.mean(out))


def x2_batch(im40: np.ndarray, rng, batch: int, crop: int, jitter: bool = True) -> torch.Tensor:
    """Augmented ``crop`` px crops of the 0.25 um/px image in [-1, 1], avoiding its holdout."""
    out = []
    h, w = im40.shape[:2]
    hold = 2 * HOLDOUT_PX
    while len(out) < batch:
        y, x = int(rng.integers(h - crop + 1)), int(rng.integers(w - crop + 1))
        if y + crop > h - hold and x + crop > w - hold:
            continue
        c = dihedral(im40[y : y + crop, x : x + crop], int(rng.integers(8)))
        out.append(stain_jitter(c, rng) if jitter else c)
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2) * 2.0 - 1.0


def train_decoder_v2(args, vae, images, rng, out: Path, runs: Path, scale: int) -> dict:
    """Fine-tune a decoder on the frozen encoder's latents; ``scale`` 1 (20x) or 2 (40x).

    Loss: L1 + ``--grad-weight`` x gradient L1 + ``--fft-weight`` x log-FFT-amplitude L1 and, in
    the last ``--gan-frac`` of the budget, ``--gan-weight`` x a hinge PatchGAN term. The decoder
    sees posterior samples during training. 20x: crops of both 0.5 um/px images; 40x: the
    :class:`X2Decoder` (initialised from ``vae``'s decoder) decodes latents of the 2 x 2 average of
    0.25 um/px crops of the natively 40x image and is compared with those crops. Holdout PSNR and
    the haematoxylin Laplacian-variance ratio (decoded / real) are logged; the state before the
    GAN phase is kept as ``*_pregan``. Resumable from ``runs/dec{scale}_ckpt.pt``.
    """
    tag = f"dec{scale}x"
    ckpt = runs / f"{tag}_ckpt.pt"
    gen = torch.Generator().manual_seed(args.seed + 10 * scale)
    torch.manual_seed(args.seed + 10 * scale)
    if scale == 1:
        net = copy.deepcopy(vae)
        net.encoder.requires_grad_(False)
        net.quant_conv.requires_grad_(False)
        params = [*net.decoder.parameters(), *net.post_quant_conv.parameters()]
        decode = lambda z: net.decode(z).sample  # noqa: E731
        im0 = images[0]
        hold = torch.from_numpy(im0[-HOLDOUT_PX:, -HOLDOUT_PX:].copy()).permute(2, 0, 1)[None]
        crop = args.decoder_crop
    else:
        net = X2Decoder.from_vae(vae)
        params = list(net.parameters())
        decode = net
        im40 = imread(args.data / "tiatoolbox_target_0.25mpp.png")[..., :3]
        im40 = im40.astype(np.float32) / 255.0
        hold = torch.from_numpy(im40[-2 * HOLDOUT_PX :, -2 * HOLDOUT_PX :].copy())
        hold = hold.permute(2, 0, 1)[None]
        crop = 2 * args.decoder_crop
    hold = hold * 2 - 1
    hold_in = F.avg_pool2d(hold, scale) if scale > 1 else hold
    for p in params:
        p.requires_grad_(True)
    disc = PatchDiscriminator()
    opt = torch.optim.AdamW(params, lr=args.decoder_lr, weight_decay=0.0)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=args.decoder_lr, betas=(0.5, 0.9))
    state = {"step": 0, "elapsed": 0.0, "pregan_saved": False}
    if ckpt.is_file() and args.resume:
        sd = torch.load(ckpt, weights_only=False)
        state = sd["state"]
        net.load_state_dict(sd["net"])
        disc.load_state_dict(sd["disc"])
        opt.load_state_dict(sd["opt"])
        opt_d.load_state_dict(sd["opt_d"])
        rng.bit_generator.state = sd["np_rng"]
        gen.set_state(sd["torch_gen"])
        log(f"resumed {tag} at step {state['step']}")

    def save_net(name: str) -> None:
        if scale == 1:
            save_half(net, out / name)
        else:
            from safetensors.torch import save_file

            (out / name).mkdir(parents=True, exist_ok=True)
            sd = {k: v.detach().half().contiguous() for k, v in net.state_dict().items()}
            save_file(sd, out / name / "x2_decoder.safetensors")
            (out / name / "config.json").write_text(json.dumps(net.vae_config, indent=2))

    def save_ckpt() -> None:
        sd = {
            "state": state,
            "net": net.state_dict(),
            "disc": disc.state_dict(),
            "opt": opt.state_dict(),
            "opt_d": opt_d.state_dict(),
            "np_rng": rng.bit_generator.state,
            "torch_gen": gen.get_state(),
        }
        torch.save(sd, ckpt.with_suffix(".tmp"))
        ckpt.with_suffix(".tmp").replace(ckpt)

    @torch.no_grad()
    def evaluate() -> tuple[float, float]:
        rec = decode(vae.encode(hold_in).latent_dist.mean).clamp(-1, 1)
        return psnr(rec, hold), h_laplacian_var(rec) / h_laplacian_var(hold)

    hp, sr = evaluate()
    log(f"{tag} start holdout_psnr {hp:.2f} sharpness_ratio {sr:.3f}")
    name = "vae" if scale == 1 else "vae_x2"
    budget = args.decoder_minutes * 60.0
    t_start, last_save = time.time() - state["elapsed"], time.time()
    while True:
        state["elapsed"] = time.time() - t_start
        frac = state["step"] / args.vae_steps if args.vae_steps else state["elapsed"] / budget
        if frac >= 1.0:
            break
        use_gan = frac >= 1.0 - args.gan_frac
        if use_gan and not state["pregan_saved"]:
            save_net(name + "_pregan")
            state["pregan_saved"] = True
        lr = args.decoder_lr * min(1.0, (state["step"] + 1) / 50)
        lr *= 0.3 + 0.7 * 0.5 * (1 + math.cos(math.pi * frac))
        for g in opt.param_groups:
            g["lr"] = lr
        if scale == 1:
            x = vae_batch(images, rng, args.vae_batch, crop)
            x_in = x
        else:
            x = x2_batch(im40, rng, args.vae_batch, crop)
            x_in = F.avg_pool2d(x, 2)
        with torch.no_grad():
            post = vae.encode(x_in).latent_dist
            z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = decode(z)
        loss = (
            (rec - x).abs().mean()
            + args.grad_weight * gradient_l1(rec, x)
            + args.fft_weight * fft_l1(rec, x)
        )
        if use_gan:
            loss = loss - args.gan_weight * disc(rec).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if use_gan:
            d_loss = F.relu(1 - disc(x)).mean() + F.relu(1 + disc(rec.detach())).mean()
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
        state["step"] += 1
        if state["step"] % 25 == 0:
            hp, sr = evaluate()
            log(
                f"{tag} step {state['step']} loss {loss.item():.4f} gan {int(use_gan)} "
                f"lr {lr:.2e} holdout_psnr {hp:.2f} sharpness_ratio {sr:.3f}"
            )
        if time.time() - last_save > args.save_minutes * 60:
            save_ckpt()
            save_net(name)
            last_save = time.time()
    save_ckpt()
    save_net(name)
    hp, sr = evaluate()
    log(f"{tag} done: {state['step']} steps, holdout_psnr {hp:.2f} sharpness_ratio {sr:.3f}")
    return {"steps": state["step"], "holdout_psnr": round(hp, 2), "sharpness_ratio": round(sr, 3)}


def run_decoders(args, images, rng) -> None:
    """v2 decoders on the frozen encoder: a sharper 20x decoder, then the 40x decoder from it."""
    vae = AutoencoderKL.from_pretrained(args.vae_from, torch_dtype=torch.float32).eval()
    vae.requires_grad_(False)
    args.out.mkdir(parents=True, exist_ok=True)
    info = {}
    if "20x" in args.decoders:
        info["dec20x"] = train_decoder_v2(args, vae, images, rng, args.out, args.runs, 1)
        vae = AutoencoderKL.from_pretrained(args.out / "vae", torch_dtype=torch.float32).eval()
        vae.requires_grad_(False)
    if "40x" in args.decoders:
        info["dec40x"] = train_decoder_v2(args, vae, images, rng, args.out, args.runs, 2)
    info["command"] = "python scripts/train_embedded.py " + " ".join(
        f"--{k.replace('_', '-')} {v}"
        for k, v in vars(args).items()
        if v is not None and k != "unet_override"
    )
    (args.out / "decoders.json").write_text(json.dumps(info, indent=2))


# ---------------------------------------------------------------- decoders on generated latents


def gen_pairs(args, scale: int, images, rng) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z_final, x)`` pairs: the latents the shipped sampler produces, with the real layout.

    A real crop ``x`` (20x: 224 px of the 0.5 um/px images; 40x: 448 px of the 0.25 um/px image,
    encoded through its 2 x 2 average) is encoded (posterior mean, model scaling), noised to a
    random ``t0`` in ``[--gen-t-min, --gen-t-max]`` and run back to 0 by the model of
    ``--gen-model`` (plain Euler on its ``--default-steps`` grid, conditioned on ``x``'s own
    descriptor for half of the batches, unconditional otherwise). Returns the model-scale
    ``z_final`` ``(N, 4, h, w)`` float32 and ``x`` ``(N, 3, H, W)`` uint8; cached in ``--runs``.
    """
    from napari_cytosyn.models.embedded import load_embedded
    from napari_cytosyn.sampling import time_grid

    cache = args.runs / f"gen_pairs_{scale}x.pt"
    if cache.is_file():
        zs, xs = torch.load(cache)
        log(f"{zs.shape[0]} cached generated-latent pairs ({scale}x)")
        return zs, xs
    model = load_embedded(device="cpu", path=args.gen_model, scale="20x" if scale == 1 else "40x")
    gen = torch.Generator().manual_seed(args.seed + 100 * scale)
    if scale == 2:
        im40 = imread(args.data / "tiatoolbox_target_0.25mpp.png")[..., :3]
        im40 = im40.astype(np.float32) / 255.0
    grid = time_grid(args.default_steps)
    zs, xs, t_start, bs = [], [], time.time(), 8
    n = args.gen_pairs if scale == 1 else max(bs, args.gen_pairs // 2)
    for b0 in range(0, n, bs):
        if scale == 1:
            x = vae_batch(images, rng, bs, args.tile_px)
        else:
            x = x2_batch(im40, rng, bs, 2 * args.tile_px)
        z0 = model.encode(x)
        cond = model.embed(x) if model.uncond is not None and (b0 // bs) % 2 == 0 else None
        t0 = float(rng.uniform(args.gen_t_min, args.gen_t_max))
        eps = torch.randn(z0.shape, generator=gen)
        z = (1 - t0) * z0 + t0 * eps
        times = [t0, *(g for g in grid if g < t0)]
        for t, tn in itertools.pairwise(times):
            x0 = model.denoise(z, torch.full((bs,), t), cond=cond)
            z = x0 + (tn / t) * (z - x0)
        zs.append(z.float())
        xs.append(((x + 1) * 127.5).round().clamp(0, 255).byte())
    zs, xs = torch.cat(zs), torch.cat(xs)
    torch.save((zs, xs), cache)
    log(f"{zs.shape[0]} generated-latent pairs ({scale}x) in {time.time() - t_start:.0f} s")
    return zs, xs


def train_decoder_gen(args, images, rng, scale: int) -> dict:
    """Fine-tune the shipped decoder (``--gen-model``; ``scale`` 1: ``vae/``, 2: ``vae_x2/``) on
    the latents the sampler actually produces (:func:`gen_pairs`).

    The pairs share the layout, not the fine detail (the sampler re-draws it), so the pixel
    losses are the ones that do not ask for the impossible: L1 of Gaussian-blurred images
    (sigma 2 px, ``--lowpass-weight``), a full-resolution L1 (``--l1-weight``), the
    log-FFT-amplitude L1 of Hann-windowed crops (``--fft-weight``, phase-free: asks for the
    real texture energy, not its positions) and
    a hinge PatchGAN term, which is what draws chromatin and crisp borders. The PatchGAN term
    starts after ``--gan-start`` discriminator-only steps, with the adaptive weight of the
    LDM/VQGAN autoencoders: ``--gan-weight`` x the ratio of the reconstruction and adversarial
    gradient norms at the decoder's last layer. ``--teacher-weight`` adds an L1 between the
    Gaussian low-passes (sigma ``--teacher-sigma`` px) of the output and of the starting
    decoder's output on the same latents: it keeps the nuclei where and as large as the
    starting decoder drew them (the adversarial term alone shrank them at 40x) while the
    detail finer than sigma is free to sharpen. ``--stain-weight`` adds
    :func:`stain_moments_l1` (each crop's H and E optical-density mean and sd against its real
    crop's). ``--hf-weight`` adds :func:`hf_energy_l1` (each crop's haematoxylin Laplacian
    energy against its real crop's). ``--real-frac`` of each batch are latents of real crops
    (the encoder's posterior mean, with a 2-latent-pixel margin cut off after encoding) paired
    with those crops, whose layout and detail the latent does hold: the decoder keeps
    reconstructing real tissue while it adapts to the sampler's latents. The encoder is
    untouched. 1/16 of the pairs
    are held out: their haematoxylin Laplacian-variance ratio (decoded / real) and low-pass
    PSNR are logged.
    Resumable from ``runs/gdec{scale}x_ckpt.pt``; outputs ``--out/vae`` or ``--out/vae_x2``,
    and a copy of every save in ``--out/saves/`` (to pick one by the quality benchmark).
    """
    from safetensors.torch import load_file, save_file

    zs, xs = gen_pairs(args, scale, images, rng)
    src_cfg = json.loads((args.gen_model / "cytosyn_tiny.json").read_text())
    shift = torch.tensor(src_cfg["latent_shift"]).reshape(1, -1, 1, 1)
    lscale = torch.tensor(src_cfg["latent_scale"]).reshape(1, -1, 1, 1)
    n_hold = max(2, zs.shape[0] // 16)
    hz, hx = zs[-n_hold:], xs[-n_hold:].float() / 127.5 - 1
    zs, xs = zs[:-n_hold], xs[:-n_hold]
    tag = f"gdec{scale}x"
    ckpt = args.runs / f"{tag}_ckpt.pt"
    gen = torch.Generator().manual_seed(args.seed + 20 * scale)
    torch.manual_seed(args.seed + 20 * scale)
    vae = AutoencoderKL.from_pretrained(args.gen_model / "vae", torch_dtype=torch.float32)
    if scale == 1:
        net = vae
        net.encoder.requires_grad_(False)
        net.quant_conv.requires_grad_(False)
        params = [*net.decoder.parameters(), *net.post_quant_conv.parameters()]
        decode_vae = lambda z: net.decode(z).sample  # noqa: E731
    else:
        x2_dir = args.gen_model / "vae_x2"
        net = X2Decoder(json.loads((x2_dir / "config.json").read_text()))
        net.load_state_dict(
            {k: v.float() for k, v in load_file(x2_dir / "x2_decoder.safetensors").items()}
        )
        params = list(net.parameters())
        decode_vae = net
    decode = lambda z: decode_vae(z / lscale + shift)  # noqa: E731
    n_real = round(args.real_frac * args.vae_batch)
    if n_real:
        enc = AutoencoderKL.from_pretrained(args.gen_model / "vae", torch_dtype=torch.float32)
        enc.requires_grad_(False)
        if scale == 2:
            im40 = imread(args.data / "tiatoolbox_target_0.25mpp.png")[..., :3]
            im40 = im40.astype(np.float32) / 255.0

    def real_pairs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` (model-scale latent, crop) pairs of real tissue, crop_lat latents wide."""
        m, size = 2, (crop_lat + 4) * f
        x = vae_batch(images, rng, n, size) if scale == 1 else x2_batch(im40, rng, n, size)
        with torch.no_grad():
            z = enc.encode(F.avg_pool2d(x, scale) if scale > 1 else x).latent_dist.mean
        z = (z - shift) * lscale
        return z[..., m:-m, m:-m], x[..., m * f : -m * f, m * f : -m * f]

    teacher = None
    if args.teacher_weight:  # a frozen copy of the starting decoder
        t_net = copy.deepcopy(net).requires_grad_(False)
        teacher = (lambda z: t_net.decode(z).sample) if scale == 1 else t_net
    for p in params:
        p.requires_grad_(True)
    last = net.decoder.conv_out.weight  # where the adaptive GAN weight balances the gradients
    disc = PatchDiscriminator()
    opt = torch.optim.AdamW(params, lr=args.decoder_lr, weight_decay=0.0)
    opt_d = torch.optim.AdamW(disc.parameters(), lr=args.decoder_lr, betas=(0.5, 0.9))
    state = {"step": 0, "elapsed": 0.0}
    if ckpt.is_file() and args.resume:
        sd = torch.load(ckpt, weights_only=False)
        state = sd["state"]
        net.load_state_dict(sd["net"])
        disc.load_state_dict(sd["disc"])
        opt.load_state_dict(sd["opt"])
        opt_d.load_state_dict(sd["opt_d"])
        rng.bit_generator.state = sd["np_rng"]
        gen.set_state(sd["torch_gen"])
        log(f"resumed {tag} at step {state['step']}")
    name = "vae" if scale == 1 else "vae_x2"
    out = args.out

    def save_net() -> None:
        for d in (out / name, out / "saves" / f"{name}_{state['step']:05d}"):
            if scale == 1:
                save_half(net, d)
            else:
                d.mkdir(parents=True, exist_ok=True)
                sd = {k: v.detach().half().contiguous() for k, v in net.state_dict().items()}
                save_file(sd, d / "x2_decoder.safetensors")
                (d / "config.json").write_text(json.dumps(net.vae_config, indent=2))

    def save_ckpt() -> None:
        sd = {
            "state": state,
            "net": net.state_dict(),
            "disc": disc.state_dict(),
            "opt": opt.state_dict(),
            "opt_d": opt_d.state_dict(),
            "np_rng": rng.bit_generator.state,
            "torch_gen": gen.get_state(),
        }
        torch.save(sd, ckpt.with_suffix(".tmp"))
        ckpt.with_suffix(".tmp").replace(ckpt)

    @torch.no_grad()
    def evaluate() -> tuple[float, float]:
        rec = torch.cat([decode(hz[i : i + 4]) for i in range(0, n_hold, 4)]).clamp(-1, 1)
        lp = psnr(F.avg_pool2d(rec, 4), F.avg_pool2d(hx, 4))
        return lp, h_laplacian_var(rec) / h_laplacian_var(hx)

    lp, sr = evaluate()
    log(f"{tag} start: {zs.shape[0]} pairs, lowpass_psnr {lp:.2f} sharpness_ratio {sr:.3f}")
    f = 8 * scale
    crop_lat = args.decoder_crop // 8
    budget = args.decoder_minutes * 60.0
    t_start, last_save = time.time() - state["elapsed"], time.time()
    lat = zs.shape[-1]
    while True:
        state["elapsed"] = time.time() - t_start
        frac = state["step"] / args.vae_steps if args.vae_steps else state["elapsed"] / budget
        if frac >= 1.0:
            break
        lr = args.decoder_lr * min(1.0, (state["step"] + 1) / 50)
        lr *= 0.3 + 0.7 * 0.5 * (1 + math.cos(math.pi * frac))
        for g in opt.param_groups:
            g["lr"] = lr
        zb, xb = [], []
        for i in rng.integers(zs.shape[0], size=args.vae_batch):
            y, x = (int(v) for v in rng.integers(lat - crop_lat + 1, size=2))
            zb.append(zs[i, :, y : y + crop_lat, x : x + crop_lat])
            xb.append(xs[i, :, y * f : (y + crop_lat) * f, x * f : (x + crop_lat) * f])
        z = torch.stack(zb)
        x = torch.stack(xb).float() / 127.5 - 1
        if n_real:
            zr, xr = real_pairs(n_real)
            z, x = torch.cat([z[n_real:], zr]), torch.cat([x[n_real:], xr])
        rec = decode(z)
        rec_loss = (
            args.lowpass_weight * (gaussian_blur(rec) - gaussian_blur(x)).abs().mean()
            + args.l1_weight * (rec - x).abs().mean()
            + args.fft_weight * fft_l1_windowed(rec, x)
            + args.grad_weight * gradient_l1(rec, x)
            + args.stain_weight * stain_moments_l1(rec, x)
            + args.hf_weight * hf_energy_l1(rec, x)
        )
        if teacher is not None:
            with torch.no_grad():
                ref = gaussian_blur(teacher(z / lscale + shift), args.teacher_sigma)
            rec_loss = rec_loss + args.teacher_weight * (
                (gaussian_blur(rec, args.teacher_sigma) - ref).abs().mean()
            )
        g_loss = -disc(rec).mean()
        w_gan = 0.0
        if state["step"] >= args.gan_start:  # adaptive weight (Esser et al. 2021, LDM)
            g_rec = torch.autograd.grad(rec_loss, last, retain_graph=True)[0]
            g_gan = torch.autograd.grad(g_loss, last, retain_graph=True)[0]
            w_gan = args.gan_weight * float((g_rec.norm() / (g_gan.norm() + 1e-4)).clamp(0.0, 1e4))
        loss = rec_loss + w_gan * g_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        d_loss = F.relu(1 - disc(x)).mean() + F.relu(1 + disc(rec.detach())).mean()
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        state["step"] += 1
        if state["step"] % 25 == 0:
            lp, sr = evaluate()
            log(
                f"{tag} step {state['step']} rec {rec_loss.item():.4f} d {d_loss.item():.3f} "
                f"w_gan {w_gan:.3f} lr {lr:.2e} lowpass_psnr {lp:.2f} sharpness_ratio {sr:.3f}"
            )
        if time.time() - last_save > args.save_minutes * 60:
            save_ckpt()
            save_net()
            last_save = time.time()
    save_ckpt()
    save_net()
    lp, sr = evaluate()
    log(f"{tag} done: {state['step']} steps, lowpass_psnr {lp:.2f} sharpness_ratio {sr:.3f}")
    return {"steps": state["step"], "lowpass_psnr": round(lp, 2), "sharpness_ratio": round(sr, 3)}


def run_gen_decoders(args, images, rng) -> None:
    """``--gen-decoders``: the 20x and/or 40x decoder fine-tuned on generated latents."""
    args.out.mkdir(parents=True, exist_ok=True)
    info_path = args.out / "gen_decoders.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    for s in ("20x", "40x"):
        if s in args.gen_decoders:
            info[f"dec{s}"] = train_decoder_gen(args, images, rng, 1 if s == "20x" else 2)
            info[f"command_{s}"] = "python scripts/train_embedded.py " + " ".join(
                f"--{k.replace('_', '-')} {v}"
                for k, v in vars(args).items()
                if v not in (None, False, "", []) and k != "unet_override"
            )
            info_path.write_text(json.dumps(info, indent=2))


def sample_decoded(model, cond: torch.Tensor, seed: int, steps: int) -> torch.Tensor:
    """Tiles of ``model`` conditioned on ``cond`` ``(N, D)`` (plain Euler on the ``steps`` grid,
    seeded noise, batches of 4), decoded and clamped: ``(N, 3, H, W)`` in [-1, 1]."""
    from napari_cytosyn.sampling import time_grid

    lat = model.tile_px // model.latent_factor
    out = []
    for b0 in range(0, cond.shape[0], 4):
        c = cond[b0 : b0 + 4]
        z = torch.randn(c.shape[0], 4, lat, lat, generator=torch.Generator().manual_seed(seed + b0))
        for t, tn in itertools.pairwise(time_grid(steps)):
            x0 = model.denoise(z, torch.full((c.shape[0],), t), cond=c)
            z = x0 + (tn / t) * (z - x0)
        out.append(model.decode(z).clamp(-1, 1))
    return torch.cat(out)


def mean_od(x: torch.Tensor) -> torch.Tensor:
    """Mean haematoxylin, eosin and DAB optical density (``rgb2hed``) of ``(B, 3, H, W)`` in
    [-1, 1] -> ``(3,)`` float64."""
    from skimage.color import hed_from_rgb

    od = torch.log(((x.double() + 1) / 2).clamp(1e-6, 1)) / math.log(1e-6)
    m = torch.as_tensor(hed_from_rgb, dtype=torch.float64)
    return torch.einsum("bchw,cd->bdhw", od, m).clamp_min(0).mean((0, 2, 3))


def od_matching_offset(syn: torch.Tensor, real: torch.Tensor, iters: int = 6) -> torch.Tensor:
    """The RGB offset ``b`` (``(3,)`` float64, [-1, 1] units) for which ``syn + b`` (clamped)
    has the mean H, E and DAB optical density of ``real``: Newton's method with a
    finite-difference Jacobian (3 unknowns, 3 equations)."""
    target, b, eps = mean_od(real), torch.zeros(3, dtype=torch.float64), 1e-3
    shifted = lambda v: (syn + v.to(syn.dtype)[None, :, None, None]).clamp(-1, 1)  # noqa: E731
    for _ in range(iters):
        f = mean_od(shifted(b)) - target
        jac = torch.stack(
            [(mean_od(shifted(b + eps * e)) - target - f) / eps for e in torch.eye(3)]
        )
        b = b - torch.linalg.solve(jac.T, f)
    return b


def run_colour_match(args, images, rng) -> None:
    """``--colour-match``: shift the output colour of the ``--gen-model`` decoders so that its
    sampled tiles have the stain of the real crops they are conditioned on.

    For each scale, ``--colour-tiles`` real crops (20x: 224 px of the 0.5 um/px images; 40x:
    448 px of the 0.25 um/px image; outside the holdout) condition as many sampled tiles; the
    RGB offset that gives the sampled tiles the real crops' mean H, E and DAB optical density
    (:func:`od_matching_offset`) is added to the bias of the decoder's last convolution, an
    exact change of the output colour that leaves every normalisation input (and so the frozen
    GroupNorm statistics) unchanged. The folder is copied to ``--out`` first when they differ;
    ``cytosyn_tiny.json`` records the offsets (summed over repeated runs).
    """
    import shutil

    from safetensors.torch import load_file, save_file

    from napari_cytosyn.models.embedded import load_embedded

    if args.out.resolve() != args.gen_model.resolve():
        shutil.copytree(args.gen_model, args.out, dirs_exist_ok=True)
    cfg_path = args.out / "cytosyn_tiny.json"
    cfg = json.loads(cfg_path.read_text())
    im40 = imread(args.data / "tiatoolbox_target_0.25mpp.png")[..., :3].astype(np.float32) / 255
    n = max(1, args.colour_tiles // 4)
    for s in args.colour_match.split(","):
        model = load_embedded(device="cpu", path=args.out, scale=s)
        if s == "20x":
            real = torch.cat([vae_batch(images, rng, 4, args.tile_px, False) for _ in range(n)])
        else:
            real = torch.cat([x2_batch(im40, rng, 4, 2 * args.tile_px, False) for _ in range(n)])
        syn = sample_decoded(model, model.embed(real), args.seed + 7000, args.default_steps)
        offset = od_matching_offset(syn, real)
        f = args.out / (
            "vae/diffusion_pytorch_model.safetensors"
            if s == "20x"
            else "vae_x2/x2_decoder.safetensors"
        )
        sd = load_file(f)
        bias = sd["decoder.conv_out.bias"]
        sd["decoder.conv_out.bias"] = (bias.double() + offset).to(bias.dtype).contiguous()
        save_file(sd, f, metadata={"format": "pt"})
        total = cfg["training"].setdefault("colour_offset", {}).get(s, [0.0, 0.0, 0.0])
        cfg["training"]["colour_offset"][s] = [
            round(float(a + b), 5) for a, b in zip(total, offset, strict=True)
        ]
        log(
            f"colour match {s}: {real.shape[0]} tiles, mean H/E/DAB OD real "
            f"{mean_od(real).tolist()} sampled {mean_od(syn).tolist()}; RGB offset "
            f"{offset.tolist()} ([-1, 1])"
        )
    cfg_path.write_text(json.dumps(cfg, indent=2))


# ---------------------------------------------------------------- assembling v2


def assemble(args) -> None:
    """Put the shipped folder together from the stage outputs (``--assemble``).

    - ``vae/``: the encoder of ``--vae-from`` unchanged, the decoder a linear interpolation of
      two fine-tuned decoders (``--decoder-a`` before, ``--decoder-b`` after the adversarial
      phase; weight ``--decoder-alpha`` on b): a trade between held-out PSNR and sharpness;
    - ``vae_x2/``: the 40x decoder, interpolated the same way between ``--x2-a`` and ``--x2-b``
      with ``--x2-alpha``;
    - ``unet/`` and ``cond/``: the EMA weights of the conditional stage (``--cond-from``; its
      checkpoint is used when the run has not finished);
    - ``cytosyn_tiny.json``: latent scaling of ``--vae-from``'s folder, the descriptor
      statistics of the conditional stage's crop cache, the training record.
    """
    from safetensors.torch import load_file, save_file

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    src_cfg = json.loads((args.vae_from.parent / "cytosyn_tiny.json").read_text())
    base = AutoencoderKL.from_pretrained(args.vae_from, torch_dtype=torch.float32)
    sa = AutoencoderKL.from_pretrained(args.decoder_a, torch_dtype=torch.float32).state_dict()
    sb = AutoencoderKL.from_pretrained(args.decoder_b, torch_dtype=torch.float32).state_dict()
    sd = base.state_dict()
    w = args.decoder_alpha
    for k in sd:
        if k.startswith(("decoder.", "post_quant_conv.")):
            sd[k] = (1 - w) * sa[k] + w * sb[k]
        else:  # the frozen encoder: bit-identical to v1
            assert torch.equal(sa[k], sd[k]) and torch.equal(sb[k], sd[k]), k
    base.load_state_dict(sd)
    save_half(base, out / "vae")
    if args.x2_a:
        xa = load_file(args.x2_a / "x2_decoder.safetensors")
        xb = load_file((args.x2_b or args.x2_a) / "x2_decoder.safetensors")
        w2 = args.x2_alpha
        mixed = {k: ((1 - w2) * xa[k].float() + w2 * xb[k].float()).half().contiguous() for k in xa}
        (out / "vae_x2").mkdir(parents=True, exist_ok=True)
        save_file(mixed, out / "vae_x2" / "x2_decoder.safetensors")
        cfg_x2 = (args.x2_a / "config.json").read_text()
        (out / "vae_x2" / "config.json").write_text(cfg_x2)
    cz, cd = torch.load(args.cond_from.parent / "cond_cache.pt")
    import shutil

    for part in ("unet", "cond"):
        shutil.copytree(args.cond_from / part, out / part, dirs_exist_ok=True)
    ck = torch.load(args.cond_from.parent / "cond_ckpt.pt", weights_only=False)["state"]
    cfg = {k: v for k, v in src_cfg.items() if k not in ("training", "default_steps")}
    prev = src_cfg.get("training", {})
    cfg.update(
        name="cytosyn-tiny",
        version=2,
        default_steps=args.default_steps,
        descriptor={
            "features": list(FEATURES),
            "mpp": 0.5,
            "mean": [float(v) for v in cd.mean(0)],
            "std": [float(v) for v in cd.std(0).clamp_min(1e-6)],
            "cond_drop": args.cond_drop,
        },
        training={
            "seed": args.seed,
            "v1": {k: prev[k] for k in ("vae_steps", "unet_steps", "commands") if k in prev},
            "cond_crops": int(cz.shape[0]),
            "cond_steps": ck["steps"]["cond"],
            "cond_minutes": round(ck["elapsed"] / 60, 1) if ck["stage"] == "cond" else None,
            "decoder_alpha": w,
            "x2_alpha": args.x2_alpha if args.x2_a else None,
            "commands": args.record,
        },
    )
    for name in ("decoders.json", "gen_decoders.json"):
        f = args.decoder_b.parent / name
        if f.is_file():
            cfg["training"][name.removesuffix(".json")] = json.loads(f.read_text())
    (out / "cytosyn_tiny.json").write_text(json.dumps(cfg, indent=2))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    log(f"assembled {out}: {size / 1e6:.1f} MB")


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
    ap.add_argument(
        "--conditional",
        action="store_true",
        help="v2: descriptor-conditioned UNet on the frozen --vae-from latents",
    )
    ap.add_argument("--unet-from", type=Path, default=None, help="initial UNet (conditional)")
    ap.add_argument(
        "--scaling-from", type=Path, default=None, help="folder whose latent scaling is kept"
    )
    ap.add_argument("--cond-minutes", type=float, default=40.0)
    ap.add_argument("--distill-minutes", type=float, default=0.0)
    ap.add_argument("--cond-drop", type=float, default=0.15)
    ap.add_argument("--distill-lr", type=float, default=1e-4)
    ap.add_argument("--crops-per-variant", type=int, default=60)
    ap.add_argument(
        "--views", type=int, default=8, help="dihedral views per image (conditional stage)"
    )
    ap.add_argument("--tile-px", type=int, default=224)
    ap.add_argument("--default-steps", type=int, default=8)
    ap.add_argument("--resume", action="store_true", help="continue from the runs/ checkpoint")
    ap.add_argument(
        "--tiny", action="store_true", help="a tiny network (tests of this script only)"
    )
    ap.add_argument(
        "--decoders",
        default="",
        help="v2: fine-tune decoders on the frozen --vae-from encoder: '20x', '40x' or '20x,40x'",
    )
    ap.add_argument("--assemble", action="store_true", help="v2: build the shipped folder")
    ap.add_argument("--decoder-a", type=Path)
    ap.add_argument("--decoder-b", type=Path)
    ap.add_argument("--decoder-alpha", type=float, default=0.5)
    ap.add_argument("--x2-a", type=Path)
    ap.add_argument("--x2-b", type=Path)
    ap.add_argument("--x2-alpha", type=float, default=0.5)
    ap.add_argument("--cond-from", type=Path, help="--out folder of the conditional stage")
    ap.add_argument(
        "--record", action="append", default=[], help="command lines to record (assemble)"
    )
    ap.add_argument(
        "--gen-decoders",
        default="",
        help="v2: fine-tune the --gen-model decoders on its generated latents: '20x', '40x', both",
    )
    ap.add_argument("--gen-model", type=Path, help="weights folder whose sampler makes the latents")
    ap.add_argument("--gen-pairs", type=int, default=512, help="generated 20x pairs (40x: half)")
    ap.add_argument("--gen-t-min", type=float, default=0.3)
    ap.add_argument("--gen-t-max", type=float, default=0.8)
    ap.add_argument("--lowpass-weight", type=float, default=1.0)
    ap.add_argument("--l1-weight", type=float, default=0.1)
    ap.add_argument(
        "--gan-start", type=int, default=50, help="--gen-decoders: discriminator-only steps"
    )
    ap.add_argument(
        "--teacher-weight", type=float, default=0.0, help="--gen-decoders: low-pass L1 to the start"
    )
    ap.add_argument("--teacher-sigma", type=float, default=3.0)
    ap.add_argument("--stain-weight", type=float, default=0.0, help="--gen-decoders: H&E moment L1")
    ap.add_argument(
        "--hf-weight", type=float, default=0.0, help="--gen-decoders: H Laplacian-energy L1"
    )
    ap.add_argument(
        "--real-frac", type=float, default=0.0, help="--gen-decoders: real-crop share of a batch"
    )
    ap.add_argument(
        "--colour-match",
        default="",
        help="shift the --gen-model decoders' output colour to the real mean: '20x', '40x', both",
    )
    ap.add_argument("--colour-tiles", type=int, default=32, help="--colour-match: tiles per scale")
    args = ap.parse_args()
    args.unet_override = (
        dict(block_out_channels=(32, 32, 32), attention_head_dim=8, norm_num_groups=8)
        if args.tiny
        else {}
    )

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    args.runs.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    images = load_images(args.data)
    log(f"{len(images)} images, {sum(i.shape[0] * i.shape[1] for i in images) / 1e6:.3f} MP")
    if args.assemble:
        assemble(args)
        return
    if args.colour_match:
        if args.gen_model is None:
            raise SystemExit("--colour-match needs --gen-model (the weights folder to shift)")
        run_colour_match(args, images, rng)
        return
    if args.gen_decoders:
        if args.gen_model is None:
            raise SystemExit("--gen-decoders needs --gen-model (the weights folder to sample)")
        run_gen_decoders(args, images, rng)
        return
    if args.decoders:
        if args.vae_from is None:
            raise SystemExit("--decoders needs --vae-from (the frozen autoencoder)")
        run_decoders(args, images, rng)
        return
    if args.conditional:
        if args.vae_from is None:
            raise SystemExit("--conditional needs --vae-from (the frozen autoencoder)")
        args.scaling_from = args.scaling_from or args.vae_from.parent
        run_conditional(args, images, rng)
        return
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
