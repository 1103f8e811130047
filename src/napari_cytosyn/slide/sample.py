"""Sample slides for demos, tests and benchmarks: an H&E-like pattern as a pyramidal TIFF.

The pattern is a deterministic function of level-0 coordinates (pink stroma, purple nuclei on a
cell lattice, glass around an ellipse of tissue): any size is written tile by tile.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

__all__ = ["sample_tissue", "write_pyramidal_tiff", "write_sample_slide"]

_STROMA = np.array([236.0, 160.0, 200.0])
_NUCLEUS = np.array([110.0, 60.0, 150.0])
_GLASS = np.array([246.0, 244.0, 246.0])
_CELL_PX = 24


def _hash(a: np.ndarray, b: np.ndarray, salt: int) -> np.ndarray:
    """Cheap integer hash of two int64 grids into [0, 1) floats."""
    h = (a * 73856093) ^ (b * 19349663) ^ (salt * 83492791)
    h = (h ^ (h >> 13)) * 1274126177
    return ((h ^ (h >> 16)) & 0xFFFF).astype(np.float64) / 65536.0


def sample_tissue(
    y0: float,
    x0: float,
    h: int,
    w: int,
    height: int,
    width: int,
    downsample: float = 1.0,
    *,
    glass: bool = True,
) -> np.ndarray:
    """``(h, w, 3)`` uint8 of the pattern on a grid at level-0 ``(y0, x0)`` with
    ``downsample`` level-0 px per px, of a ``height x width`` slide (the tissue ellipse scales
    with it; glass outside it unless not ``glass``)."""
    yy = (y0 + (np.arange(h, dtype=np.float32) + 0.5) * downsample)[:, None]
    xx = (x0 + (np.arange(w, dtype=np.float32) + 0.5) * downsample)[None, :]
    # Per-cell random nucleus (centre, radius, presence), hashed on the small cell grid only.
    cy, cx = np.floor(yy / _CELL_PX).astype(np.int64), np.floor(xx / _CELL_PX).astype(np.int64)
    gy = np.arange(cy.min(), cy.max() + 1, dtype=np.int64)[:, None]
    gx = np.arange(cx.min(), cx.max() + 1, dtype=np.int64)[None, :]
    iy, ix = cy - gy[0, 0], cx - gx[0, 0]
    ny = ((gy + 0.25 + 0.5 * _hash(gy, gx, 1)) * _CELL_PX).astype(np.float32)[iy, ix]
    nx = ((gx + 0.25 + 0.5 * _hash(gy, gx, 2)) * _CELL_PX).astype(np.float32)[iy, ix]
    r2 = ((3.0 + 4.0 * _hash(gy, gx, 3)) ** 2 * (_hash(gy, gx, 4) < 0.6)).astype(np.float32)
    nucleus = ((yy - ny) ** 2 + (xx - nx) ** 2) < r2[iy, ix]
    wave = 0.5 + 0.5 * np.sin(xx / 310.0 + np.cos(yy / 270.0) * 2.0)
    rgb = _STROMA.astype(np.float32) - 25.0 * wave[..., None]
    rgb = np.where(nucleus[..., None], _NUCLEUS.astype(np.float32), rgb)
    if glass:
        tissue = ((yy / height - 0.5) / 0.46) ** 2 + ((xx / width - 0.5) / 0.46) ** 2 < 1.0
        rgb = np.where(tissue[..., None], rgb, _GLASS.astype(np.float32))
    grain = _GRAIN[
        np.floor(yy).astype(np.int64) % _GRAIN.shape[0],
        np.floor(xx).astype(np.int64) % _GRAIN.shape[1],
    ]
    return np.clip(rgb + grain[..., None], 0, 255).astype(np.uint8)


_GRAIN = ((_hash(np.arange(251)[:, None], np.arange(257)[None, :], 5) - 0.5) * 12).astype(
    np.float32
)


def write_pyramidal_tiff(
    path: str | os.PathLike,
    levels: Sequence[np.ndarray],
    *,
    mpp: tuple[float, float] | None = (0.5, 0.5),
    tile_px: int = 256,
    compression: str | None = "zlib",
    ome: bool = False,
    description: str | None = None,
) -> Path:
    """Write (H, W, 3) uint8 levels (finest first) as a tiled pyramidal TIFF; returns ``path``.

    ``mpp``: (x, y) um/px of level 0 as resolution tags (``None``: none); ``compression``: a
    tifffile name; ``ome``: an OME-TIFF with SubIFD levels, else a generic pyramid (one IFD a
    level, as OpenSlide's generic-tiff reads it) with ``description`` on level 0.
    """
    return _write(
        path, [(lv.shape, lv) for lv in levels], mpp, tile_px, compression, ome, description
    )


def write_sample_slide(
    path: str | os.PathLike,
    height: int,
    width: int,
    *,
    n_levels: int = 4,
    mpp: tuple[float, float] | None = (0.5, 0.5),
    tile_px: int = 256,
    compression: str | None = "jpeg",
    ome: bool = False,
) -> Path:
    """Write the sample pattern as a pyramidal TIFF of any size, tile by tile; level ``k`` is
    the pattern at downsample ``2**k`` (sizes floor-divided). Returns ``path``."""
    specs = []
    for k in range(n_levels):
        ds = 2**k
        shape = (height // ds, width // ds, 3)
        if min(shape[:2]) < 1:
            break
        specs.append((shape, _pattern_tiles(shape, tile_px, height, width, ds)))
    return _write(path, specs, mpp, tile_px, compression, ome, "napari-cytosyn sample slide")


def _pattern_tiles(
    shape: tuple[int, ...], tile_px: int, height: int, width: int, ds: int
) -> Iterator[np.ndarray]:
    # Tiles are cut from one periodic block per level (cheap for gigapixel sizes); the tissue
    # ellipse is then applied per tile, so the slide still has glass around its tissue.
    most = max(1, 2048 // tile_px)
    period_y = tile_px * min(most, -(-shape[0] // tile_px))
    period_x = tile_px * min(most, -(-shape[1] // tile_px))
    block = sample_tissue(0, 0, period_y, period_x, height, width, ds, glass=False)
    for ty in range(0, shape[0], tile_px):
        for tx in range(0, shape[1], tile_px):
            py, px = ty % period_y, tx % period_x
            tile = block[py : py + tile_px, px : px + tile_px]
            yy = ((np.arange(tile_px) + ty + 0.5) * ds / height - 0.5)[:, None] / 0.46
            xx = ((np.arange(tile_px) + tx + 0.5) * ds / width - 0.5)[None, :] / 0.46
            yield np.where((yy**2 + xx**2 < 1.0)[..., None], tile, _GLASS.astype(np.uint8))


def _write(path, specs, mpp, tile_px, compression, ome, description) -> Path:
    import tifffile

    path = Path(path)
    h0 = specs[0][0][0]
    kwargs = {"tile": (tile_px, tile_px), "photometric": "rgb", "compression": compression}
    if compression == "jpeg":
        kwargs["compressionargs"] = {"level": 90}
    with tifffile.TiffWriter(path, bigtiff=True, ome=ome) as tw:
        for index, (shape, data) in enumerate(specs):
            ds = h0 / shape[0]
            extra = {}
            if mpp is not None:
                extra = {
                    "resolution": (1e4 / (mpp[0] * ds), 1e4 / (mpp[1] * ds)),
                    "resolutionunit": "CENTIMETER",
                }
            if index == 0:
                if ome:
                    meta = {"axes": "YXS"}
                    if mpp is not None:
                        meta.update(PhysicalSizeX=mpp[0], PhysicalSizeY=mpp[1])
                    extra.update(subifds=len(specs) - 1, metadata=meta)
                else:
                    extra.update(metadata=None, description=description)
            else:
                extra.update(subfiletype=1)
                if not ome:
                    extra.update(metadata=None)
            tw.write(data, shape=shape, dtype=np.uint8, **kwargs, **extra)
    return path
