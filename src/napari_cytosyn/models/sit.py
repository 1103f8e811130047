"""A Scalable Interpolant Transformer (SiT, Ma et al. 2024) with REPA-E's parameter layout.

Written from the SiT/DiT papers (no upstream code copied) and checked key by key and shape by
shape against REPA-E's ``SiT-XL/2`` state dict (``tests/models/test_reference_layouts.py``), so a
REPA-E checkpoint loads with ``strict=True`` once ``projectors.*`` are dropped
(:func:`load_sit_state`). Conventions a reader needs:
- ``pos_embed``: fixed 2-D sine-cosine positions of the training grid (MAE convention, first
  half encodes x), a frozen parameter; other grids are computed;
- ``t_embedder``: time ``t`` in ``[0, 1]`` (1 = noise) fed *unscaled* into 256 frequencies;
- ``y_embedder.embedding_table`` ``(num_classes + 1, hidden)``: label ``num_classes`` is the null
  label of guidance; with ``cond_dim`` a ``projection`` maps reference features (H0-mini's 768-d
  class token) instead (names ours: CytoSyn's own layout is not public);
- the output is the velocity ``eps - x`` (with ``learn_sigma`` the first half of the channels);
- ``bn``: REPA-E's non-affine batch norm whose running stats are the latent statistics
  (``z_model = (z - mean) / sqrt(var)``), never applied inside ``forward``.
"""

from __future__ import annotations

import math
from pathlib import Path

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


class _PatchEmbed(nn.Module):
    def __init__(self, in_channels: int, hidden: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden, kernel_size=patch, stride=patch)


class _TimestepEmbedder(nn.Module):
    def __init__(self, hidden: int, frequencies: int):
        super().__init__()
        self.frequencies = frequencies
        self.mlp = nn.Sequential(
            nn.Linear(frequencies, hidden), nn.SiLU(), nn.Linear(hidden, hidden)
        )

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.mlp(time_features(t, self.frequencies).to(dtype))


class _LabelEmbedder(nn.Module):
    """Labels (REPA-E) and/or reference features (``projection``) -> conditioning vector."""

    def __init__(self, hidden: int, num_classes: int, null_row: bool, cond_dim: int | None):
        super().__init__()
        self.num_classes = num_classes
        rows = num_classes + int(null_row)
        self.embedding_table = nn.Embedding(rows, hidden) if rows else None
        self.projection = nn.Linear(cond_dim, hidden) if cond_dim is not None else None

    def forward(self, y: torch.Tensor | None, batch: int, like: torch.Tensor) -> torch.Tensor:
        if y is not None and y.is_floating_point():
            if self.projection is None:
                raise ValueError(
                    "this SiT takes class labels, not reference features (cond_dim is None)"
                )
            return self.projection(y.to(like.dtype).reshape(batch, -1))
        if self.embedding_table is None or (
            y is None and self.embedding_table.num_embeddings <= self.num_classes
        ):
            raise ValueError("this SiT has no null label (trained without label dropout)")
        if y is None:
            y = torch.full((batch,), self.num_classes, dtype=torch.long, device=like.device)
        return self.embedding_table(y.to(like.device).long().reshape(-1).expand(batch))


class _FinalLayer(nn.Module):
    def __init__(self, hidden: int, out: int):
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden, out)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        return self.linear(_modulate(self.norm_final(x), shift, scale))


class SiTTransformer(ModelMixin, ConfigMixin):
    """SiT velocity network; ``forward(x, t, y=None) -> velocity`` ``(B, C, h, w)``.

    ``sample_size``: latent side at training (CytoSyn: 28), sets ``pos_embed``; SiT-XL/2 is
    ``hidden_size`` 1152, ``depth`` 28, ``num_heads`` 16, ``patch_size`` 2. ``num_classes``:
    label rows (REPA-E ImageNet 1000; 0 with reference features only); ``class_dropout_prob`` > 0
    adds the null row; ``cond_dim``: reference feature width (H0-mini 768) or ``None``;
    ``learn_sigma``: twice the channels, the first half the velocity; ``qk_norm``: REPA's
    query/key norm; ``bn_*``: the latent batch norm (statistics only).
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
        num_classes: int = 1000,
        class_dropout_prob: float = 0.1,
        cond_dim: int | None = None,
        learn_sigma: bool = False,
        qk_norm: bool = False,
        frequency_embedding_size: int = 256,
        bn_eps: float = 1e-4,
        bn_momentum: float = 0.1,
    ):
        super().__init__()
        grid = sample_size // patch_size
        self.x_embedder = _PatchEmbed(in_channels, hidden_size, patch_size)
        self.t_embedder = _TimestepEmbedder(hidden_size, frequency_embedding_size)
        self.y_embedder = _LabelEmbedder(hidden_size, num_classes, class_dropout_prob > 0, cond_dim)
        self.pos_embed = nn.Parameter(
            sincos_2d(grid, grid, hidden_size).float()[None], requires_grad=False
        )
        self.blocks = nn.ModuleList(
            SiTBlock(hidden_size, num_heads, mlp_ratio, qk_norm) for _ in range(depth)
        )
        out_channels = in_channels * (2 if learn_sigma else 1)
        self.final_layer = _FinalLayer(hidden_size, patch_size * patch_size * out_channels)
        self.bn = nn.BatchNorm2d(in_channels, eps=bn_eps, momentum=bn_momentum, affine=False)
        self._pos_cache: dict[tuple[int, int], torch.Tensor] = {}

    def _positions(self, gh: int, gw: int, like: torch.Tensor) -> torch.Tensor:
        if gh * gw == self.pos_embed.shape[1] and gh == gw:
            return self.pos_embed.to(like.dtype)
        table = self._pos_cache.get((gh, gw))
        if table is None:
            table = sincos_2d(gh, gw, self.config.hidden_size).float()
            self._pos_cache[(gh, gw)] = table
        return table.to(like.device, like.dtype)[None]

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None):
        """Velocity for latents ``x`` ``(B, C, h, w)`` at times ``t`` ``(B,)`` in [0, 1].

        ``y``: ``(B,)`` long class labels (``num_classes`` = the null label), ``(B, cond_dim)``
        float reference features, or ``None`` for the null label. ``h`` and ``w`` must be
        multiples of ``patch_size``. Same contract as REPA-E's ``SiT.inference(x, t, y)``.
        """
        p = self.config.patch_size
        b, c, h, w = x.shape
        if h % p or w % p:
            raise ValueError(f"latent size {h}x{w} is not a multiple of the patch size {p}")
        tokens = self.x_embedder.proj(x).flatten(2).transpose(1, 2)
        tokens = tokens + self._positions(h // p, w // p, tokens)
        cvec = self.t_embedder(t.reshape(-1).expand(b), tokens.dtype)
        cvec = cvec + self.y_embedder(y, b, cvec)
        for block in self.blocks:
            tokens = block(tokens, cvec)
        out = self.final_layer(tokens, cvec)
        oc = out.shape[-1] // (p * p)
        out = out.reshape(b, h // p, w // p, p, p, oc).permute(0, 5, 1, 3, 2, 4)
        out = out.reshape(b, oc, h, w)
        return out[:, :c] if self.config.learn_sigma else out


class CheckpointMismatch(ValueError):
    """A checkpoint's keys or shapes do not fit the model; the message names them."""


#: Training-only parameters of REPA-E's SiT (the REPA alignment projector MLPs).
TRAINING_ONLY_PREFIXES = ("projectors.",)
#: Latent statistics: absent from REPA (sihyun-yu) checkpoints, whose stats live elsewhere.
LATENT_STAT_KEYS = ("bn.running_mean", "bn.running_var", "bn.num_batches_tracked")
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
#: File-name parts of latent-statistics files (REPA-E ``*-latents-stats``), never weights.
STATS_FILE_TAGS = ("latents-stats", "latents_stats", "latent_stats")


def unwrap_checkpoint(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The SiT weights of a checkpoint: the ``ema.*`` entries of a flattened REPA-E container
    (``{"ema": ..., "model": ..., "vae": ...}`` saved as one safetensors file) when present,
    without ``module.``/``_orig_mod.`` wrapper prefixes and training-only ``projectors.*``."""
    if any(k.startswith("ema.") for k in state):
        state = {k[4:]: v for k, v in state.items() if k.startswith("ema.")}
    out = {}
    for key, value in state.items():
        for prefix in _WRAPPER_PREFIXES:
            key = key.removeprefix(prefix)
        if not key.startswith(TRAINING_ONLY_PREFIXES):
            out[key] = value
    return out


def load_strict(
    module: nn.Module, state: dict[str, torch.Tensor], where: str, optional: tuple[str, ...] = ()
) -> list[str]:
    """``load_state_dict(strict=True)`` with errors that name every wrong key and shape.

    ``optional``: keys that may be missing (left at their initial value); returns those missing.
    """
    own = module.state_dict()
    missing = [k for k in own if k not in state and k not in optional]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = [
            f"{what} {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
            for what, keys in (("missing key(s)", missing), ("unexpected key(s)", unexpected))
            if keys
        ] + (["wrong shape(s) " + "; ".join(wrong[:8])] if wrong else [])
        raise CheckpointMismatch(f"{where}: the weights do not fit the model: {'; '.join(parts)}")
    absent = [k for k in optional if k in own and k not in state]
    module.load_state_dict({**{k: own[k] for k in absent}, **state}, strict=True, assign=False)
    return absent


def read_safetensors(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of the ``*.safetensors`` files in ``folder`` (sharded checkpoints merged),
    except latent-statistics files (``*latents-stats*``, ``*latents_stats*``)."""
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for path in sorted(Path(folder).glob("*.safetensors")):
        if not any(tag in path.name for tag in STATS_FILE_TAGS):
            state.update(load_file(path))
    return state


def to_dtype(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """``module`` in ``dtype``, in eval mode (no cast, and no diffusers warning, for float32)."""
    if dtype != torch.float32:
        module = module.to(dtype)
    return module.eval()


def load_sit(folder: Path, dtype: torch.dtype = torch.float32) -> tuple[SiTTransformer, bool]:
    """Build a :class:`SiTTransformer` from ``folder/config.json`` and load its safetensors
    strictly (REPA-E layout, see :func:`unwrap_checkpoint`).

    Returns ``(model, has_latent_stats)``: the second is ``False`` when the checkpoint carries no
    ``bn.*`` statistics (REPA checkpoints), so the caller must find them elsewhere.
    """
    from .hub import read_json

    config = {
        k: v for k, v in read_json(Path(folder) / "config.json").items() if not k.startswith("_")
    }
    model = SiTTransformer.from_config(config)
    state = unwrap_checkpoint(read_safetensors(folder))
    absent = load_strict(model, state, str(folder), optional=LATENT_STAT_KEYS)
    return to_dtype(model, dtype), not absent


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
