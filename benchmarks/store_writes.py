"""Chunk writes and reads of a slide store: by hand (``SlideStore``) against zarr's own API.

``SlideStore`` writes each chunk file itself (zstd, a temporary file fsynced and renamed), then
records ``size << 32 | crc32`` of the exact bytes in the completion map (another fsynced file),
and checks size and CRC on every read. The alternative the issue asks about writes the chunk
through zarr (``array[y0:y1, x0:x1] = rgb``, same zstd codec, plus a CRC-32C codec). Timed per
512 x 512 RGB chunk of the H&E-like sample pattern, side by side in one run:

- ``store_write_ms`` / ``store_read_ms``: ``SlideStore.write_chunk`` / ``read_chunk`` (verified);
- ``zarr_write_ms`` / ``zarr_read_ms``: zarr ``__setitem__`` / ``__getitem__`` of one chunk;
- ``zarr_fsync_write_ms``: the zarr write plus an ``fsync`` of the chunk file, the least the
  store's guarantee (a recorded chunk is on disk) would cost through zarr, still without a
  record of the bytes (zarr does not return them).

    python benchmarks/store_writes.py [--chunks 64]

Last line: ``RESULT {...}`` with those medians in ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _median_ms(fn, items) -> float:
    times = []
    for item in items:
        t0 = time.perf_counter()
        fn(item)
        times.append((time.perf_counter() - t0) * 1e3)
    return round(statistics.median(times), 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chunks", type=int, default=64, help="chunks written and read each way")
    args = ap.parse_args()
    import zarr
    from zarr.codecs import BytesCodec, Crc32cCodec, ZstdCodec

    from napari_cytosyn.slide.sample import sample_tissue
    from napari_cytosyn.slide.store import SlideStore

    c, n = 512, int(args.chunks)
    side = int(np.ceil(np.sqrt(n)))
    shape = (side * c, side * c)
    keys = [(i // side, i % side) for i in range(n)]
    tiles = {k: sample_tissue(k[0] * c, k[1] * c, c, c, *shape) for k in keys}
    with tempfile.TemporaryDirectory() as tmp:
        store = SlideStore.create(Path(tmp) / "s", "bench", [shape], c, {})
        arr = zarr.create_array(
            str(Path(tmp) / "z"), shape=(*shape, 3), chunks=(c, c, 3), dtype="uint8",
            fill_value=255, serializer=BytesCodec(),
            compressors=[ZstdCodec(level=0), Crc32cCodec()],
        )  # fmt: skip

        def zarr_write(k, fsync=False):
            arr[k[0] * c : (k[0] + 1) * c, k[1] * c : (k[1] + 1) * c] = tiles[k]
            if fsync:
                fd = os.open(Path(tmp) / "z" / "c" / str(k[0]) / str(k[1]) / "0", os.O_RDONLY)
                os.fsync(fd)
                os.close(fd)

        result = {
            "chunks": n,
            "store_write_ms": _median_ms(lambda k: store.write_chunk(0, *k, tiles[k]), keys),
            "zarr_write_ms": _median_ms(zarr_write, keys),
            "zarr_fsync_write_ms": _median_ms(lambda k: zarr_write(k, fsync=True), keys),
            "store_read_ms": _median_ms(lambda k: store.read_chunk(0, *k), keys),
            "zarr_read_ms": _median_ms(
                lambda k: arr[k[0] * c : (k[0] + 1) * c, k[1] * c : (k[1] + 1) * c], keys
            ),
        }
        assert all(np.array_equal(store.read_chunk(0, *k), tiles[k]) for k in keys)
        store.close()
    for key, value in result.items():
        print(f"{key:22s} {value}")
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
