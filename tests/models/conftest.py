"""Tiny random models with the structure of the real ones, saved in their repositories' layout.

Nothing is downloaded: every test runs with ``HF_HUB_OFFLINE=1`` against folders built here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

REFERENCE = Path(__file__).parent / "reference"

CYTOSYN_PIPELINE = '''"""Stand-in for a repository's custom pipeline (trust_remote_code path)."""
from diffusers import DiffusionPipeline


class TinyCytoSynPipeline(DiffusionPipeline):
    def __init__(self, transformer, vae, scheduler):
        super().__init__()
        self.register_modules(transformer=transformer, vae=vae, scheduler=scheduler)

    def __call__(self, *args, **kwargs):
        raise NotImplementedError("napari-cytosyn samples through its own tiled samplers")
'''

# A custom component file, as repositories ship them next to their weights.
CUSTOM_TRANSFORMER = '''from napari_cytosyn.models.sit import SiTTransformer


class RepoSiT(SiTTransformer):
    """The repository's own transformer class (here: same structure as the published SiT)."""
'''


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    torch.manual_seed(0)


def tiny_vae(latent_channels: int, scaling: float, shift: float | None):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=scaling,
        shift_factor=shift,
    ).eval()


def _write_index(folder: Path, index: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))


def tiny_sit(**overrides):
    """A reduced-width SiT with REPA-E's key names, random weights and set latent statistics."""
    from napari_cytosyn.models.sit import SiTTransformer

    config = dict(sample_size=28, hidden_size=32, depth=2, num_heads=2, num_classes=0, cond_dim=16)
    sit = SiTTransformer(**{**config, **overrides})
    with torch.no_grad():  # random weights everywhere (zero-init would make a trivial model)
        for p in sit.parameters():
            p.normal_(0.0, 0.05)
        sit.bn.running_mean.copy_(torch.tensor([0.5, -0.2, 0.1, 0.0]))
        sit.bn.running_var.copy_(torch.tensor([4.0, 1.0, 0.25, 1.0]))
        sit.bn.num_batches_tracked.fill_(1000)
    return sit.eval()


def build_cytosyn(
    folder: Path, *, remote_code: bool, cond_dim: int | None = 16, learn_sigma: bool = True
) -> Path:
    """CytoSyn layout: SiT-*/2 transformer (REPA-E batch-norm stats), SD-VAE f8d4, scheduler."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    sit = tiny_sit(cond_dim=cond_dim, learn_sigma=learn_sigma)
    vae = tiny_vae(4, 0.18215, None)
    sit.save_pretrained(folder / "transformer")
    vae.save_pretrained(folder / "vae")
    FlowMatchEulerDiscreteScheduler().save_pretrained(folder / "scheduler")
    if remote_code:
        (folder / "pipeline.py").write_text(CYTOSYN_PIPELINE)
        (folder / "transformer" / "repo_sit.py").write_text(CUSTOM_TRANSFORMER)
        transformer = ["repo_sit", "RepoSiT"]
        name = "TinyCytoSynPipeline"
    else:
        transformer = ["napari_cytosyn.models.sit", "SiTTransformer"]
        name = "DiffusionPipeline"
    _write_index(
        folder,
        {
            "_class_name": name,
            "transformer": transformer,
            "vae": ["diffusers", "AutoencoderKL"],
            "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        },
    )
    return folder


def pixcell_config(tokens: int, sample_size: int, uni_dim: int) -> dict:
    """The published PixCell transformer config.json (reference manifest) at reduced width."""
    name = "pixcell_transformer_1024.json" if tokens > 1 else "pixcell_transformer_256.json"
    ref = json.loads((REFERENCE / name).read_text())["config_json"]
    return {
        **ref["values"],
        # legacy PixArt keys the published config.json most likely carries (not init args)
        "double_self_attention": False,
        "num_vector_embeds": None,
        "only_cross_attention": False,
        "use_linear_projection": False,
        "num_attention_heads": 2,
        "attention_head_dim": 8,
        "cross_attention_dim": 16,
        "num_layers": 2,
        "caption_channels": uni_dim,
        "caption_num_tokens": tokens,
        "sample_size": sample_size,
    }


def build_pixcell(
    folder: Path,
    *,
    tokens: int,
    sample_size: int = 32,
    uni_dim: int = 24,
    vae_weights: bool = True,
) -> Path:
    """PixCell layout: transformer/ (published key names, reduced width), vae/ (16 channels;
    ``vae_weights=False``: config.json only, as in the published repositories), scheduler/."""
    from diffusers import DPMSolverMultistepScheduler
    from safetensors.torch import save_file

    from napari_cytosyn.models.pixcell_layout import build_pixcell_transformer

    config = pixcell_config(tokens, sample_size, uni_dim)
    transformer = build_pixcell_transformer(config)
    with torch.no_grad():
        for p in transformer.parameters():
            p.normal_(0.0, 0.05)
        transformer.caption_projection.uncond_embedding.normal_(0.0, uni_dim**-0.5)
        if tokens > 1:
            transformer.y_pos_embed.y_pos_embed.normal_(0.0, 0.1)
    out = folder / "transformer"
    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    state = {k: v.contiguous() for k, v in transformer.state_dict().items()}
    save_file(state, out / "diffusion_pytorch_model.safetensors")
    vae = tiny_vae(16, 1.5305, 0.0609)
    vae.save_pretrained(folder / "vae")
    if not vae_weights:
        (folder / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    DPMSolverMultistepScheduler(
        beta_schedule="linear", beta_start=0.0001, beta_end=0.02, prediction_type="epsilon"
    ).save_pretrained(folder / "scheduler")
    _write_index(
        folder,
        {
            "_class_name": "PixCellPipeline",
            "_diffusers_version": "0.32.2",
            "scheduler": ["diffusers", "DPMSolverMultistepScheduler"],
            "transformer": ["pixcell_transformer_2d", "PixCellTransformer2DModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        },
    )
    (out / "pixcell_transformer_2d.py").write_text("raise RuntimeError('never imported')\n")
    return folder


def tiny_unet(**extra):
    """The generic folder's UNet2DModel (4 latent channels, 16 latents); ``extra`` config."""
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=8,
        **extra,
    )


def build_generic(folder: Path, *, scheduler: str = "ddpm", prediction: str = "epsilon") -> Path:
    """Unconditional latent diffusion: UNet2DModel + AutoencoderKL + DDPM or flow scheduler."""
    from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler

    tiny_unet().save_pretrained(folder / "unet")
    tiny_vae(4, 0.5, None).save_pretrained(folder / "vae")
    if scheduler == "flow":
        FlowMatchEulerDiscreteScheduler().save_pretrained(folder / "scheduler")
        sched = "FlowMatchEulerDiscreteScheduler"
    else:
        DDPMScheduler(prediction_type=prediction).save_pretrained(folder / "scheduler")
        sched = "DDPMScheduler"
    _write_index(
        folder,
        {
            "_class_name": "DiffusionPipeline",
            "unet": ["diffusers", "UNet2DModel"],
            "vae": ["diffusers", "AutoencoderKL"],
            "scheduler": ["diffusers", sched],
            "mpp": 0.5,
        },
    )
    return folder


@pytest.fixture(scope="session")
def cytosyn_native(tmp_path_factory) -> Path:
    return build_cytosyn(tmp_path_factory.mktemp("cytosyn_native"), remote_code=False)


@pytest.fixture(scope="session")
def cytosyn_remote(tmp_path_factory) -> Path:
    return build_cytosyn(tmp_path_factory.mktemp("cytosyn_remote"), remote_code=True)


@pytest.fixture(scope="session")
def pixcell_256(tmp_path_factory) -> Path:
    return build_pixcell(tmp_path_factory.mktemp("pixcell256"), tokens=1, sample_size=32)


@pytest.fixture(scope="session")
def pixcell_1024(tmp_path_factory) -> Path:
    # PixCell-1024's 4 x 4 UNI grid, at a tiny 128 px tile to stay fast.
    return build_pixcell(tmp_path_factory.mktemp("pixcell1024"), tokens=16, sample_size=16)


@pytest.fixture(scope="session")
def generic_ddpm(tmp_path_factory) -> Path:
    return build_generic(tmp_path_factory.mktemp("generic_ddpm"))
