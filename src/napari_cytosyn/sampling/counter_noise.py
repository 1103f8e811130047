"""Counter-based noise: every random number is a pure function of (seed, stream, cell).

No global RNG is ever used. A cell's noise comes from numpy's Philox counter-based generator
keyed by a BLAKE2b hash of ``(seed, stream, cell)``, so any cell is reproducible on its own, on
any machine and in any order (for a given numpy version; numpy keeps ``standard_normal`` of a
given bit generator stable across platforms).

Noise *fields* are assembled from fixed-size cells on a lattice anchored at the slide origin,
in latent units, so two overlapping regions see the same noise where they overlap.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import torch

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
    cell_latent: int = NOISE_CELL_LATENT,
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
    c = cell_latent
    cy0, cy1 = y_lat // c, (y_lat + h_lat - 1) // c
    cx0, cx1 = x_lat // c, (x_lat + w_lat - 1) // c
    for cy in range(cy0, cy1 + 1):
        for cx in range(cx0, cx1 + 1):
            block = noise(seed, stream, (cy, cx), (channels, c, c))
            ya, yb = max(y_lat, cy * c), min(y_lat + h_lat, (cy + 1) * c)
            xa, xb = max(x_lat, cx * c), min(x_lat + w_lat, (cx + 1) * c)
            out[:, ya - y_lat : yb - y_lat, xa - x_lat : xb - x_lat] = block[
                :, ya - cy * c : yb - cy * c, xa - cx * c : xb - cx * c
            ]
    return out
