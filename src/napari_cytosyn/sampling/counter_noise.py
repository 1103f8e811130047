"""Counter-based noise: every random number is a pure function of (seed, stream, cell).

No global RNG: a cell's noise comes from numpy's Philox generator keyed by a BLAKE2b hash of
``(seed, stream, cell)``, so any cell is reproducible alone, on any machine, in any order (numpy
keeps ``standard_normal`` of a bit generator stable). Noise fields are assembled from fixed cells
on a latent lattice anchored at the slide origin, so overlapping regions share their noise.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch

from napari_cytosyn.chunk_grid import pieces

#: Side of a noise cell in latents (256 px for f8 autoencoders).
NOISE_CELL_LATENT = 32


def _key(seed: int, stream: str, cell: Sequence[int]) -> np.ndarray:
    payload = f"{int(seed)}|{stream}|{','.join(str(int(c)) for c in cell)}".encode()
    digest = hashlib.blake2b(payload, digest_size=16).digest()
    return np.frombuffer(digest, dtype="<u8").copy()


def noise(seed: int, stream: str, cell: Sequence[int], shape: Sequence[int]) -> torch.Tensor:
    """Standard normal float32 tensor of ``shape`` for ``(seed, stream, cell)``.

    ``stream`` names what the noise is for (``"init"``, ``"step17"``, ...); ``cell`` is any tuple
    of integers (e.g. a lattice cell ``(cy, cx)``). Same arguments -> same bits, everywhere.
    """
    gen = np.random.Generator(np.random.Philox(key=_key(seed, stream, cell)))
    arr = gen.standard_normal(tuple(int(s) for s in shape), dtype=np.float64)
    return torch.from_numpy(arr.astype(np.float32))


def uniform(seed: int, stream: str, cell: Sequence[int], n: int) -> np.ndarray:
    """``n`` float64 uniforms in [0, 1) for ``(seed, stream, cell)`` (counter-based)."""
    gen = np.random.Generator(np.random.Philox(key=_key(seed, stream, cell)))
    return gen.random(int(n))


def noise_field(
    seed: int,
    stream: str,
    y_lat: int,
    x_lat: int,
    h_lat: int,
    w_lat: int,
    channels: int,
) -> torch.Tensor:
    """Standard normal field ``(channels, h_lat, w_lat)`` float32 at absolute latent position.

    The field is defined on the whole (infinite) latent plane cell by cell; this returns the
    window ``[y_lat, y_lat + h_lat) x [x_lat, x_lat + w_lat)`` of it. Negative coordinates work.
    """
    if h_lat < 0 or w_lat < 0:
        raise ValueError(f"noise_field needs a non-negative size, got {h_lat}x{w_lat}")
    out = torch.empty((channels, h_lat, w_lat), dtype=torch.float32)
    if h_lat == 0 or w_lat == 0:
        return out
    c = NOISE_CELL_LATENT
    for p in pieces(None, c, y_lat, x_lat, h_lat, w_lat):
        block = noise(seed, stream, (p.cy, p.cx), (channels, c, c))
        out[(slice(None), *p.out)] = block[(slice(None), *p.chunk)]
    return out
