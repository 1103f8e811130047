"""Named models, their metadata, and the dispatch from a name to a backend loader.

Names:
- ``cytosyn-tiny``: the embedded demonstration model (ships in the wheel, works offline);
- ``cytosyn-tiny-cells``: the embedded mask-conditioned model of the segmentation test kit;
- ``cytosyn-tiny-40x``: the same model with its 40x decoder (0.25 um/px, for 40x slides);
- ``cytosyn``: Owkin/Bioptimus CytoSyn (``Owkin-Bioptimus/CytoSyn``, gated, non-commercial);
- ``pixcell-256``, ``pixcell-1024``: Stony Brook PixCell (``StonyBrook-CVLab/PixCell-*``);
- ``diffusers:<hub id or folder>``: any unconditional latent diffusion folder.

Any registered name also takes an explicit source, ``cytosyn:/data/CytoSyn`` or
``pixcell-256:/mnt/models/PixCell-256``, to use a local copy or a mirror of the repository.
Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .hub import UnknownModelError


@dataclass(frozen=True)
class ModelInfo:
    """What a user should know about a model before using it: its ``backend`` loader, default hub
    ``source`` (``None``: embedded), ``licence``/``gated``/``access_url``, training ``mpp``, native
    ``tile_px``, ``latent_channels``, reference ``conditioning`` (``None``: unconditional), and
    ``defaults``: the authors' recommended ``sampler``, ``steps``, ``guidance`` (and
    ``guidance_conditioned``/``guidance_interval`` with a reference), which the CLI uses when the
    user passes none.
    """

    name: str
    backend: str
    description: str
    licence: str
    conditioning: str | None
    source: str | None = None
    gated: bool = False
    mpp: float = 0.5
    tile_px: int = 224
    latent_channels: int = 4
    access_url: str | None = None
    conditioning_access: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def notice(self) -> str:
        """One paragraph on licence and access, to show before the model is used."""
        parts = [f"{self.name}: {self.description}", f"Licence: {self.licence}."]
        if self.gated:
            parts.append(
                f"Gated on Hugging Face: request access at {self.access_url} with your account "
                "and log in (`hf auth login`) or set HF_TOKEN before the first download."
            )
        if self.conditioning and self.conditioning_access:
            parts.append(
                f"Reference conditioning uses {self.conditioning}: {self.conditioning_access}"
            )
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able metadata (for provenance and the GUI)."""
        return asdict(self)


_EMBEDDED_LICENCE = "BSD-3-Clause (trained by napari-cytosyn on BSD-licensed sample images)"
_DESCRIPTOR = "tissue descriptor (stain, nuclear density and size, texture)"
_UNI2_ACCESS = (
    "gated, CC-BY-NC-ND 4.0; request access at https://huggingface.co/MahmoodLab/UNI2-h "
    "and `pip install timm`."
)
#: PixCell's tools/sample_*.py: DPM-Solver++ 2M, 20 steps, guidance 2.
_PIXCELL_DEFAULTS = {
    "sampler": "dpmpp_2m",
    "steps": 20,
    "guidance": 1.0,
    "guidance_conditioned": 2.0,
}

_TINY = ModelInfo(
    name="cytosyn-tiny",
    backend="embedded",
    licence=_EMBEDDED_LICENCE,
    conditioning=_DESCRIPTOR,
    description="small demonstration model shipped with the plugin; works offline. "
    "It is not a foundation model and its tissue is only plausible at low zoom. "
    "Conditioned on a fixed descriptor of a reference patch (or unconditional).",
    # 8 uniform Euler steps: of the 8-call samplers measured, as close as any to the 12 steps its
    # decoders were tuned on (docs/models.md, Speed); with a reference, guidance 3 while t >= 0.3
    # (the last two of 8 steps unguided): twins follow their reference's nuclear density and
    # size better than at 2 on the whole interval on every layout measured (user-guide/twin.md)
    defaults={
        "sampler": "euler",
        "steps": 8,
        "guidance": 1.0,
        "guidance_conditioned": 3.0,
        "guidance_interval": (0.3, 1.0),
    },
)
_PIXCELL_256 = ModelInfo(
    name="pixcell-256",
    backend="pixcell",
    source="StonyBrook-CVLab/PixCell-256",
    licence="as stated on the model card (check before use)",
    tile_px=256,
    latent_channels=16,
    conditioning="UNI2-h (MahmoodLab/UNI2-h, 1 token per 256 px tile, via timm)",
    description="PixArt-Sigma DiT-XL/2 with the SD3.5 VAE, conditioned on UNI2-h "
    "embeddings (Stony Brook CVLab).",
    access_url="https://huggingface.co/StonyBrook-CVLab/PixCell-256",
    conditioning_access=_UNI2_ACCESS,
    defaults=_PIXCELL_DEFAULTS,
)

_REGISTRY: dict[str, ModelInfo] = {
    info.name: info
    for info in (
        _TINY,
        ModelInfo(
            name="cytosyn-tiny-cells",
            backend="embedded-cells",
            licence=_EMBEDDED_LICENCE,
            conditioning="nucleus mask (cond={'mask': (B, 1, H_px, W_px)}), classifier-free",
            description="mask-conditioned demonstration model of the segmentation test kit: "
            "nuclei where a layout says; shares cytosyn-tiny's autoencoder; works offline. "
            "Trained on pseudo-labels of a classical segmenter on two images.",
            defaults={"steps": 12, "guidance": 1.0, "guidance_conditioned": 2.0},
        ),
        # the same denoiser as cytosyn-tiny (same recommended sampler and steps)
        replace(
            _TINY,
            name="cytosyn-tiny-40x",
            mpp=0.25,
            tile_px=448,
            # its quality keys were measured at guidance 2 (docs/models.md); 3 was not
            defaults={**_TINY.defaults, "guidance_conditioned": 2.0, "guidance_interval": (0, 1)},
            description="cytosyn-tiny with its 40x decoder: the same latents decoded to "
            "0.25 um/px, so 40x slides are inpainted without upsampling; works offline.",
        ),
        ModelInfo(
            name="cytosyn",
            backend="cytosyn",
            source="Owkin-Bioptimus/CytoSyn",
            licence="CC-BY-NC-ND 4.0, non-commercial academic research only (see the model card)",
            gated=True,
            conditioning="H0-mini (bioptimus/H0-mini, ViT-B/14, via timm)",
            description="REPA-E SiT-XL/2 latent diffusion model with an SD-VAE f8d4, trained on "
            "~40M TCGA H&E tiles at 0.5 um/px (Owkin & Bioptimus).",
            access_url="https://huggingface.co/Owkin-Bioptimus/CytoSyn",
            conditioning_access="gated, CC-BY-NC-ND 4.0; request access at "
            "https://huggingface.co/bioptimus/H0-mini and `pip install timm`.",
            # REPA-E's evaluation sampler (SDE, 250 steps); public CytoSyn callers: 250 steps,
            # guidance 1.0, or 2.5 on t in [0, 0.75] with H0-mini (reference/samplers.json)
            defaults={
                "sampler": "euler_maruyama",
                "steps": 250,
                "guidance": 1.0,
                "guidance_conditioned": 2.5,
                "guidance_interval": (0.0, 0.75),
            },
        ),
        _PIXCELL_256,
        replace(
            _PIXCELL_256,
            name="pixcell-1024",
            source="StonyBrook-CVLab/PixCell-1024",
            tile_px=1024,
            conditioning="UNI2-h (MahmoodLab/UNI2-h, a 4x4 grid of 256 px crops, via timm)",
            description="PixCell at 1024 px: PixArt-Sigma DiT-XL/2, SD3.5 VAE, 16 UNI2-h tokens.",
            access_url="https://huggingface.co/StonyBrook-CVLab/PixCell-1024",
        ),
        # guidance over the mask and UNI together (see docs/models.md)
        replace(
            _PIXCELL_256,
            name="pixcell-256-cell-controlnet",
            source="StonyBrook-CVLab/PixCell-256-Cell-ControlNet",
            licence="Apache-2.0 (model card)",
            conditioning="cell mask (cond={'mask': (B, 1, H_px, W_px)}) through a ControlNet, "
            "and UNI2-h (cond['uni'], 1 token per 256 px tile, via timm)",
            description="PixCell-256 with a ControlNet that places cells where a binary mask says "
            "(Stony Brook CVLab); the ControlNet is built natively, no repository code runs.",
            access_url="https://huggingface.co/StonyBrook-CVLab/PixCell-256-Cell-ControlNet",
            conditioning_access=f"UNI2-h is {_UNI2_ACCESS}",
        ),
    )
}


def available() -> list[ModelInfo]:
    """Registered models, default first. ``diffusers:<source>`` loads any other folder."""
    return list(_REGISTRY.values())


def parse_name(name: str) -> tuple[ModelInfo, str | None]:
    """``name`` or ``name:source`` -> (registry entry, explicit source or ``None``).

    ``diffusers:<source>`` returns a generic entry (metadata read from the folder on load).
    """
    if not isinstance(name, str) or not name:
        raise UnknownModelError(f"model name must be a non-empty string, got {name!r}")
    key, sep, source = name.partition(":")
    # A Windows path like C:\models has a one-letter "key"; such names are not registry names.
    if sep and len(key) == 1:
        key, sep, source = name, "", ""
    if key == "diffusers":
        if not source:
            raise UnknownModelError("'diffusers:' needs a hub id or a folder after the colon")
        return (
            ModelInfo(
                name=name,
                backend="diffusers",
                source=source,
                licence="see the model's own card/licence",
                tile_px=0,
                latent_channels=0,
                conditioning=None,
                description=f"generic diffusers latent diffusion model from {source}",
                access_url=None if "/" not in source else f"https://huggingface.co/{source}",
            ),
            source,
        )
    if key not in _REGISTRY:
        names = ", ".join([*_REGISTRY, "diffusers:<hub id or folder>"])
        raise UnknownModelError(f"unknown model {name!r}; available: {names}")
    if sep and not source:
        raise UnknownModelError(f"{key + ':'!r} needs a hub id or a folder after the colon")
    if sep and _REGISTRY[key].source is None:
        raise UnknownModelError(f"{key} is embedded in the package and takes no source")
    return _REGISTRY[key], (source or None)


def get_info(name: str) -> ModelInfo:
    """Registry entry for ``name`` (also accepts ``name:source``)."""
    return parse_name(name)[0]


def recommended(name: str) -> dict[str, Any]:
    """A copy of the recommended settings of ``name`` (:attr:`ModelInfo.defaults`); ``{}`` for a
    name the registry does not know (``py:`` factories)."""
    try:
        return dict(get_info(name).defaults)
    except UnknownModelError:
        return {}
