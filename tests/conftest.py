"""Shared fixtures: small real slide files written with tifffile and zarr, read back by the readers.

Every slide holds the same pyramid (`slide_levels`): an H&E-like pattern (pink stroma, purple
nuclei, white glass) of 1104 x 1536 px at level 0, with levels at downsample 1, 2 and 6 (6 is not a
power of two), area-averaged from level 0, stored losslessly: readers are checked pixel by pixel.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from napari_cytosyn.chunk_grid import downsample_area
from napari_cytosyn.slide.sample import sample_tissue, write_pyramidal_tiff

# ``autocast="auto"`` (the settings' default) would run the networks in bfloat16 on CPUs with
# native bfloat16 and in float32 elsewhere; the suite pins ``auto`` to ``off`` (subprocesses
# inherit it) so pixels do not depend on the machine. bfloat16 is tested explicitly.
os.environ.setdefault("NAPARI_CYTOSYN_AUTOCAST", "off")

#: Level-0 (height, width) px of the test slides.
SLIDE_HW = (1104, 1536)
#: Downsample of each level of the test slides.
SLIDE_DOWNSAMPLES = (1, 2, 6)
#: Tile edge of the test slides (px).
SLIDE_TILE_PX = 256


@pytest.fixture(scope="session")
def slide_levels() -> list[np.ndarray]:
    """The test pyramid: (H, W, 3) uint8 per level, level 0 of shape `SLIDE_HW`, finest first."""
    h, w = SLIDE_HW
    level0 = sample_tissue(0, 0, h, w, h, w)
    return [level0] + [downsample_area(level0, f) for f in SLIDE_DOWNSAMPLES[1:]]


@pytest.fixture(scope="session")
def generic_tiff_slide(tmp_path_factory, slide_levels) -> Path:
    """Generic tiled pyramidal TIFF (levels as separate IFDs, zlib, resolution tags for
    0.5 um/px) that OpenSlide reads with its generic-tiff backend."""
    path = tmp_path_factory.mktemp("slides") / "generic.tif"
    return write_pyramidal_tiff(
        path, slide_levels, mpp=(0.5, 0.5), tile_px=SLIDE_TILE_PX, compression="zlib"
    )


@pytest.fixture(scope="session")
def ome_tiff_slide(tmp_path_factory, slide_levels) -> Path:
    """OME-TIFF, reduced levels in SubIFDs (zlib, PhysicalSize 0.25 um), read by tifffile."""
    path = tmp_path_factory.mktemp("slides") / "pyramid.ome.tiff"
    return write_pyramidal_tiff(
        path, slide_levels, mpp=(0.25, 0.25), tile_px=SLIDE_TILE_PX, compression="zlib", ome=True
    )


def write_ome_zarr(
    path: Path,
    levels: Sequence[np.ndarray],
    *,
    version: str = "0.4",
    axes: str = "cyx",
    mpp: tuple[float, float] | None = (0.5, 0.5),
    unit: str | None = "micrometer",
    chunk_px: int = SLIDE_TILE_PX,
) -> Path:
    """Write (H, W, 3) uint8 levels as an OME-Zarr image (NGFF 0.4 on zarr v2, 0.5 on zarr v3).

    ``axes`` is the on-disk order of the axis names, e.g. "cyx", "yxc" or "tczyx" (t, z of size 1);
    ``mpp`` (x, y) becomes each level's scale (times its downsample); None writes unit scales.
    """
    import zarr

    zarr_format = 2 if version == "0.4" else 3
    root = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    axis_meta = []
    for name in axes:
        if name in "yx":
            axis_meta.append({"name": name, "type": "space"} | ({"unit": unit} if unit else {}))
        elif name == "c":
            axis_meta.append({"name": "c", "type": "channel"})
        elif name == "t":
            axis_meta.append({"name": "t", "type": "time"})
        else:
            axis_meta.append({"name": name, "type": "space"})
    datasets = []
    h0 = levels[0].shape[0]
    for index, level in enumerate(levels):
        ds = h0 / level.shape[0]
        data = level
        for name in "tz":  # size-1 axes
            if name in axes:
                data = data[..., None]
        current = ["y", "x", "c"] + [n for n in "tz" if n in axes]
        data = np.transpose(data, [current.index(n) for n in axes])
        chunks = tuple(chunk_px if n in "yx" else 1 for n in axes)
        names = {"dimension_names": list(axes)} if zarr_format == 3 else {}
        arr = root.create_array(
            str(index), shape=data.shape, dtype=np.uint8, chunks=chunks, **names
        )
        arr[...] = data
        scale = [1.0] * len(axes)
        if mpp is not None:
            scale[axes.index("x")] = mpp[0] * ds
            scale[axes.index("y")] = mpp[1] * ds
        datasets.append(
            {"path": str(index), "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        )
    multiscale = {"axes": axis_meta, "datasets": datasets, "name": path.name}
    if version == "0.4":
        root.attrs["multiscales"] = [multiscale | {"version": "0.4"}]
    else:
        root.attrs["ome"] = {"version": version, "multiscales": [multiscale]}
    return path


@pytest.fixture(scope="session")
def ome_zarr_v04_slide(tmp_path_factory, slide_levels) -> Path:
    """OME-Zarr NGFF 0.4 (zarr v2), axes c, y, x, 0.5 um/px."""
    path = tmp_path_factory.mktemp("slides") / "v04.ome.zarr"
    return write_ome_zarr(path, slide_levels, version="0.4", axes="cyx")


@pytest.fixture(scope="session")
def ome_zarr_v05_slide(tmp_path_factory, slide_levels) -> Path:
    """OME-Zarr NGFF 0.5 (zarr v3), axes t, c, z, y, x (t = z = 1), 0.5 um/px."""
    path = tmp_path_factory.mktemp("slides") / "v05.ome.zarr"
    return write_ome_zarr(path, slide_levels, version="0.5", axes="tczyx")


@pytest.fixture(scope="session")
def ome_zarr_writer() -> Callable[..., Path]:
    """`write_ome_zarr` for tests that need their own variant (axes, units, versions)."""
    return write_ome_zarr


def tiny_latent_diffusion(vae_levels: int, tile_px: int, net_hook=None):
    """A tiny random diffusers latent-diffusion model (AutoencoderKL + UNet2DModel, seed 0).

    ``vae_levels`` sets the latent factor ``2 ** (vae_levels - 1)``; ``net_hook(z)``, if given,
    sees every batch the network is called with.
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DModel

    from napari_cytosyn.models.latent import LatentDiffusion
    from napari_cytosyn.models.protocol import FlowInterpolant

    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * vae_levels,
        up_block_types=("UpDecoderBlock2D",) * vae_levels,
        block_out_channels=(8,) * vae_levels,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
    ).eval()
    unet = UNet2DModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
    ).eval()

    def net(z, t, cond):
        if net_hook is not None:
            net_hook(z)
        return unet(z, t * 999).sample

    return LatentDiffusion(
        name="tiny-random",
        vae=vae,
        net=net,
        interpolant=FlowInterpolant(),
        target="flow",
        tile_px=tile_px,
        latent_factor=2 ** (vae_levels - 1),
    )


@pytest.fixture(scope="session")
def tiny_diffusion() -> Callable[..., object]:
    """`tiny_latent_diffusion` (a builder: tests choose the latent factor and a batch hook)."""
    return tiny_latent_diffusion
