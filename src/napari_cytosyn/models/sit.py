"""A Scalable Interpolant Transformer (SiT, Ma et al. 2024) as used by REPA / REPA-E and CytoSyn.

Written from the published architecture (SiT/DiT papers, the REPA and REPA-E repositories),
not copied from them:

- the latent ``(B, C, h, w)`` is cut into ``patch_size`` x ``patch_size`` patches by a strided
  convolution and given fixed 2-D sine-cosine position embeddings (computed for the actual grid,
  so windows of any multiple of ``patch_size`` work; at the training size this equals the fixed
  table of the original);
- time ``t`` in ``[0, 1]`` (``1`` = noise, the REPA linear path ``x_t = (1 - t) x + t eps``) is fed
  *unscaled* into a 256-frequency sinusoidal embedding and a two-layer MLP;
- an optional reference embedding (CytoSyn: an H0-mini feature vector) goes through a linear
  projection and is added to the time embedding; a learned null vector stands in for "no
  reference" (classifier-free guidance);
- ``depth`` transformer blocks with adaLN-Zero modulation (shift/scale/gate for attention and MLP,
  from ``SiLU -> Linear(hidden, 6 * hidden)`` of the conditioning vector), tanh-GELU MLP, and a
  final adaLN layer plus linear projection back to patches;
- the network predicts the velocity ``d x_t / d t = eps - x``; with ``learn_sigma`` the output
  has twice the channels and only the first half is the velocity (original SiT layout);
- REPA-E normalises latents with a non-affine batch-norm over VAE latents; its running statistics
  are kept here as ``latent_norm`` so a checkpoint carries its own latent scaling.

Verified only against same-structure random models; no real CytoSyn weights were available.
"""

from __future__ import annotations

import math

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.nn import functional as F


def sincos_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """``(N,)`` positions -> ``(N, dim)`` sine/cosine features (MAE convention: sin first)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    angles = positions.to(torch.float64)[:, None] * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(grid_h: int, grid_w: int, dim: int) -> torch.Tensor:
    """``(grid_h * grid_w, dim)`` fixed 2-D position table, row-major; first half encodes x."""
    ys, xs = torch.meshgrid(
        torch.arange(grid_h, dtype=torch.float64),
        torch.arange(grid_w, dtype=torch.float64),
        indexing="ij",
    )
    return torch.cat([sincos_1d(xs.reshape(-1), dim // 2), sincos_1d(ys.reshape(-1), dim // 2)], 1)


def time_features(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """``(B,)`` times -> ``(B, dim)`` sinusoidal features (cos first, GLIDE convention)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.float()[:, None] * freqs[None]
    return torch.cat([args.cos(), args.sin()], dim=-1)


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qk_norm: bool):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.LayerNorm(dim // heads) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(dim // heads) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(self.q_norm(q), self.k_norm(k), v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class SiTBlock(nn.Module):
    """Transformer block with adaLN-Zero conditioning."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, qk_norm: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = _Attention(dim, heads, qk_norm)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        sh_a, sc_a, g_a, sh_m, sc_m, g_m = self.adaLN_modulation(c).chunk(6, dim=-1)
        x = x + g_a[:, None] * self.attn(_modulate(self.norm1(x), sh_a, sc_a))
        return x + g_m[:, None] * self.mlp(_modulate(self.norm2(x), sh_m, sc_m))


class SiTTransformer(ModelMixin, ConfigMixin):
    """SiT velocity network; ``forward(x, t, cond=None) -> velocity`` ``(B, C, h, w)``.

    Parameters
    ----------
    sample_size: latent side at training (CytoSyn: 224 px / 8 = 28).
    patch_size: 2 for SiT-*/2.
    in_channels: latent channels (4 for SD-VAE f8d4).
    hidden_size, depth, num_heads, mlp_ratio: SiT-XL/2 is 1152, 28, 16, 4.0.
    cond_dim: width of the reference embedding (H0-mini: 768); ``None`` for unconditional.
    learn_sigma: output ``2 * in_channels`` channels, the first half being the velocity.
    qk_norm: layer-norm on queries and keys (a REPA option).
    """

    @register_to_config
    def __init__(
        self,
        sample_size: int = 28,
        patch_size: int = 2,
        in_channels: int = 4,
        hidden_size: int = 1152,
        depth: int = 28,
        num_heads: int = 16,
        mlp_ratio: float = 4.0,
        cond_dim: int | None = 768,
        learn_sigma: bool = False,
        qk_norm: bool = False,
        frequency_embedding_size: int = 256,
    ):
        super().__init__()
        self.x_embedder = nn.Conv2d(in_channels, hidden_size, patch_size, stride=patch_size)
        self.t_embedder = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size),
            nn.SiLU(),
            nn.Linear(hidden_size, hidden_size),
        )
        if cond_dim is not None:
            self.cond_embedder = nn.Linear(cond_dim, hidden_size)
            self.null_cond = nn.Parameter(torch.zeros(hidden_size))
        self.blocks = nn.ModuleList(
            SiTBlock(hidden_size, num_heads, mlp_ratio, qk_norm) for _ in range(depth)
        )
        out_channels = in_channels * (2 if learn_sigma else 1)
        self.final_norm = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.final_adaLN = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))
        self.final_linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.latent_norm = nn.BatchNorm2d(in_channels, affine=False)
        self._pos_cache: dict[tuple[int, int], torch.Tensor] = {}

    def _pos_embed(self, gh: int, gw: int, like: torch.Tensor) -> torch.Tensor:
        table = self._pos_cache.get((gh, gw))
        if table is None:
            table = sincos_2d(gh, gw, self.config.hidden_size).float()
            self._pos_cache[(gh, gw)] = table
        return table.to(like.device, like.dtype)[None]

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None):
        """Velocity for latents ``x`` ``(B, C, h, w)`` at times ``t`` ``(B,)`` in [0, 1].

        ``cond``: ``(B, cond_dim)`` reference embeddings or ``None`` (the null embedding).
        ``h`` and ``w`` must be multiples of ``patch_size``.
        """
        p = self.config.patch_size
        b, c, h, w = x.shape
        if h % p or w % p:
            raise ValueError(f"latent size {h}x{w} is not a multiple of the patch size {p}")
        tokens = self.x_embedder(x).flatten(2).transpose(1, 2)
        tokens = tokens + self._pos_embed(h // p, w // p, tokens)
        temb_in = time_features(t.reshape(-1).expand(b), self.config.frequency_embedding_size)
        cvec = self.t_embedder(temb_in.to(tokens.dtype))
        if self.config.cond_dim is not None:
            if cond is None:
                cvec = cvec + self.null_cond.to(cvec.dtype)[None]
            else:
                cvec = cvec + self.cond_embedder(cond.to(cvec.dtype).reshape(b, -1))
        elif cond is not None:
            raise ValueError("this SiT was built without reference conditioning (cond_dim=None)")
        for block in self.blocks:
            tokens = block(tokens, cvec)
        shift, scale = self.final_adaLN(cvec).chunk(2, dim=-1)
        out = self.final_linear(_modulate(self.final_norm(tokens), shift, scale))
        oc = out.shape[-1] // (p * p)
        out = out.reshape(b, h // p, w // p, p, p, oc).permute(0, 5, 1, 3, 2, 4)
        out = out.reshape(b, oc, h, w)
        return out[:, :c] if self.config.learn_sigma else out

    def latent_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel ``(mean, std)`` of VAE latents recorded by the REPA-E batch-norm.

        ``std = sqrt(running_var)`` without the batch-norm epsilon, as REPA-E's sampling script
        scales latents by ``running_var.rsqrt()``.
        """
        mean = self.latent_norm.running_mean.detach().float().cpu()
        std = self.latent_norm.running_var.detach().float().cpu().sqrt()
        return mean, std


def sit_flops_per_forward(
    tokens: int, hidden: int, depth: int, mlp_ratio: float = 4.0, patch_out: int = 16
) -> float:
    """Analytic multiply-add FLOPs (x2) of one SiT forward on one window of ``tokens`` tokens.

    Counts the matrix products that dominate (qkv, attention scores and values, projection, MLP,
    adaLN modulation, final projection); layer-norms and elementwise terms are ignored (< 1%).
    """
    d = hidden
    per_block = (
        2 * tokens * d * 3 * d  # qkv
        + 2 * 2 * tokens * tokens * d  # scores and weighted values
        + 2 * tokens * d * d  # output projection
        + 2 * 2 * tokens * d * int(d * mlp_ratio)  # MLP
        + 2 * d * 6 * d  # adaLN (per sample)
    )
    return float(depth * per_block + 2 * tokens * d * patch_out + 2 * d * 2 * d)
