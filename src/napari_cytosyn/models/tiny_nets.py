"""Network parts of the embedded model ``cytosyn-tiny`` beyond the diffusers VAE and UNet.

- :func:`descriptor_mlp`: the conditioning head from the tissue descriptor to the UNet's time
  embedding (classifier-free null condition = all zeros = no change);
- :class:`X2Decoder`: the 40x decoder, the 20x decoder's layers plus one more 2x upsampling stage,
  decoding the same latents to 0.25 um/px;
- :class:`X2VAE`: a VAE-like object for :class:`~.latent.LatentDiffusion` at 40x: ``encode``
  averages 2 x 2 pixels (0.25 -> 0.5 um/px) and runs the frozen 20x encoder, ``decode`` runs
  :class:`X2Decoder`, so the model works at 0.25 um/px with a latent factor of 16.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.upsampling import Upsample2D


def descriptor_mlp(n_features: int, emb_dim: int) -> torch.nn.Sequential:
    """The conditioning head: ``[descriptor, 1] -> (emb_dim,)`` added to the time embedding.

    No biases and a zero-initialised last layer: the all-zero input (the null condition of
    classifier-free guidance) maps to exactly zero, i.e. to the unconditional network.
    """
    mlp = torch.nn.Sequential(
        torch.nn.Linear(n_features + 1, emb_dim, bias=False),
        torch.nn.SiLU(),
        torch.nn.Linear(emb_dim, emb_dim, bias=False),
    )
    torch.nn.init.zeros_(mlp[2].weight)
    return mlp


class X2Decoder(torch.nn.Module):
    """``post_quant_conv`` + diffusers ``Decoder`` with one extra 2x stage before the output.

    The extra stage is a nearest 2x upsampling with a 3 x 3 convolution and one ResNet block at
    the decoder's first width. :meth:`from_vae` copies a trained 20x decoder and initialises the
    extra stage to plain nearest upsampling (identity convolution, zero residual), so training
    starts from "the 20x decoder, upsampled".
    """

    def __init__(self, vae_config: dict):
        super().__init__()
        from diffusers import AutoencoderKL

        cfg = {k: v for k, v in vae_config.items() if not k.startswith("_")}
        template = AutoencoderKL(**cfg)
        self.post_quant_conv = template.post_quant_conv
        self.decoder = template.decoder
        ch = cfg["block_out_channels"][0]
        groups = cfg.get("norm_num_groups", 32)
        self.up = Upsample2D(ch, use_conv=True, out_channels=ch)
        self.res = ResnetBlock2D(in_channels=ch, out_channels=ch, temb_channels=None, groups=groups)
        self.vae_config = cfg

    @classmethod
    def from_vae(cls, vae) -> X2Decoder:
        net = cls(dict(vae.config))
        net.post_quant_conv.load_state_dict(vae.post_quant_conv.state_dict())
        net.decoder.load_state_dict(vae.decoder.state_dict())
        with torch.no_grad():
            w = net.up.conv.weight
            w.zero_()
            for c in range(w.shape[0]):
                w[c, c, 1, 1] = 1.0
            net.up.conv.bias.zero_()
            net.res.conv2.weight.zero_()
            net.res.conv2.bias.zero_()
        return net

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        d = self.decoder
        x = d.conv_in(self.post_quant_conv(z))
        x = d.mid_block(x, None)
        for block in d.up_blocks:
            x = block(x, None)
        x = self.res(self.up(x), None)
        return d.conv_out(d.conv_act(d.conv_norm_out(x)))


class X2VAE(torch.nn.Module):
    """The 20x VAE's encoder behind a 2 x 2 average pool, with :class:`X2Decoder` as decoder.

    ``encode(x)`` takes 0.25 um/px pixels (``(B, 3, H, W)``, H and W multiples of 16) and returns
    the frozen 20x encoder's posterior on their 0.5 um/px average; ``decode(z).sample`` gives
    ``(B, 3, 16 h, 16 w)`` at 0.25 um/px.
    """

    def __init__(self, vae, x2: X2Decoder):
        super().__init__()
        self.base = vae
        self.x2 = x2
        self.config = copy.copy(vae.config)

    def encode(self, x: torch.Tensor):
        return self.base.encode(F.avg_pool2d(x, 2))

    def decode(self, z: torch.Tensor) -> DecoderOutput:
        return DecoderOutput(sample=self.x2(z))


def load_frozen_pair(vae_dir, unet_dir, device: str, dtype, what: str):
    """The shipped ``AutoencoderKL`` (``vae_dir``) and ``UNet2DModel`` (``unet_dir``) of an
    embedded model, offline (``local_files_only``, safetensors), in eval mode without gradients.

    ``dtype`` ``None`` means float32; ``what`` names the model in the error for a bad device.
    Returns ``(vae, unet, device, dtype)`` with the resolved torch device and dtype.
    """
    from diffusers import AutoencoderKL, UNet2DModel

    dtype = torch.float32 if dtype is None else dtype
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"invalid device {device!r} for {what}: {err}") from err
    opts = dict(
        local_files_only=True, use_safetensors=True, torch_dtype=dtype, low_cpu_mem_usage=False
    )
    vae = AutoencoderKL.from_pretrained(vae_dir, **opts).to(dev).eval().requires_grad_(False)
    unet = UNet2DModel.from_pretrained(unet_dir, **opts).to(dev).eval().requires_grad_(False)
    return vae, unet, dev, dtype


#: File of a decoder's frozen GroupNorm statistics, next to its weights (``vae/``, ``vae_x2/``).
NORM_STATS_NAME = "decoder_norm_stats.safetensors"


class FrozenGroupNorm(torch.nn.Module):
    """A ``GroupNorm`` with fixed per-group statistics: a per-channel affine map, so the layer is
    local (a pixel's output does not depend on the rest of the crop).

    ``mean``, ``var``: ``(num_groups,)`` statistics of the layer's input, estimated once.
    """

    def __init__(self, norm: torch.nn.GroupNorm, mean: torch.Tensor, var: torch.Tensor):
        super().__init__()
        per_group = norm.num_channels // norm.num_groups

        def f64(t: torch.Tensor) -> torch.Tensor:  # on the CPU: MPS has no float64
            return t.detach().to("cpu", torch.float64)

        scale = torch.rsqrt(f64(var) + norm.eps).repeat_interleave(per_group)
        shift = -f64(mean).repeat_interleave(per_group) * scale
        if norm.affine:
            scale, shift = scale * f64(norm.weight), shift * f64(norm.weight)
            shift = shift + f64(norm.bias)
        like = norm.weight if norm.affine else mean  # the layer's device and dtype
        self.register_buffer("scale", scale.to(like.device, like.dtype).view(1, -1, 1, 1))
        self.register_buffer("shift", shift.to(like.device, like.dtype).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift.to(x.dtype), x, self.scale.to(x.dtype))


class _LocalResnet(torch.nn.Module):
    """A decoder ``ResnetBlock2D`` (no time embedding, no resampling, output scale 1) whose
    norms are :class:`FrozenGroupNorm`, run with in-place activations and residual sum: the same
    operations in the same order as diffusers' forward (bit-identical output) without its three
    extra full-size tensors and its division by 1 (float32 CPU decode ~15 % less time)."""

    def __init__(self, block: ResnetBlock2D):
        super().__init__()
        self.norm1, self.conv1, self.norm2, self.conv2 = (
            block.norm1,
            block.conv1,
            block.norm2,
            block.conv2,
        )
        self.shortcut = block.conv_shortcut

    def forward(self, x: torch.Tensor, temb=None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x), inplace=True))
        h = self.conv2(F.silu(self.norm2(h), inplace=True))
        return h.add_(x if self.shortcut is None else self.shortcut(x))


def _plain_frozen_resnet(mod) -> bool:
    """Whether ``mod`` is a ResNet block that :class:`_LocalResnet` runs exactly."""
    return (
        isinstance(mod, ResnetBlock2D)
        and mod.time_emb_proj is None
        and mod.upsample is None
        and mod.downsample is None
        and mod.output_scale_factor == 1.0
        and isinstance(mod.norm1, FrozenGroupNorm)
        and isinstance(mod.norm2, FrozenGroupNorm)
    )


def decoder_norms(vae) -> dict[str, torch.nn.GroupNorm]:
    """The ``GroupNorm`` layers that decoding runs, by module name in ``vae`` (an
    ``AutoencoderKL``: ``decoder.*``; an :class:`X2VAE`: ``x2.*``)."""
    prefix = "x2." if isinstance(vae, X2VAE) else "decoder."
    return {
        name: mod
        for name, mod in vae.named_modules()
        if name.startswith(prefix) and isinstance(mod, torch.nn.GroupNorm)
    }


def frozen_norm_vae(vae, stats: dict[str, torch.Tensor]):
    """A copy of ``vae`` whose decoding GroupNorms use fixed statistics (:class:`FrozenGroupNorm`),
    channels-last (~15 % faster float32 convolutions on CPU here; same pixels), its ResNet blocks
    run as :class:`_LocalResnet` (same pixels).

    ``stats``: ``"<module name>.mean"`` and ``"<module name>.var"`` ``(num_groups,)`` for every
    layer of :func:`decoder_norms` and nothing else (as in :data:`NORM_STATS_NAME`).
    """
    norms = decoder_norms(vae)
    want = {f"{name}.{s}" for name in norms for s in ("mean", "var")}
    if set(stats) != want:
        raise ValueError(
            f"decoder GroupNorm statistics do not fit this decoder: missing "
            f"{sorted(want - set(stats))[:4]}, unknown {sorted(set(stats) - want)[:4]}"
        )
    frozen = copy.deepcopy(vae)
    for name, norm in norms.items():
        mean, var = stats[f"{name}.mean"], stats[f"{name}.var"]
        if mean.shape != (norm.num_groups,) or var.shape != (norm.num_groups,):
            raise ValueError(f"statistics of {name} must have shape ({norm.num_groups},)")
        parent_name, _, child = name.rpartition(".")
        setattr(frozen.get_submodule(parent_name), child, FrozenGroupNorm(norm, mean, var))
    prefix = next(iter(norms)).split(".")[0] + "."
    for name, mod in list(frozen.named_modules()):
        if name.startswith(prefix) and _plain_frozen_resnet(mod):
            parent_name, _, child = name.rpartition(".")
            setattr(frozen.get_submodule(parent_name), child, _LocalResnet(mod))
    return frozen.to(memory_format=torch.channels_last).eval().requires_grad_(False)
