"""OME-Zarr (NGFF 0.4 on zarr v2, or 0.5 on zarr v3) writer for RGB pyramids and synthetic masks.

Layout of ``slide.ome.zarr``::

    .zattrs / zarr.json     multiscales (axes c, y, x; micrometer), omero (RGB), napari_cytosyn
    0, 1, ...               uint8 (3, y, x) levels, chunks (3, chunk_px, chunk_px)
    labels/synthetic/0...   uint8 (1, y, x) mask levels (1 = synthetic), image-label metadata

Coordinate transforms: level ``k`` with downsample ``d`` has ``scale = mpp * d`` and
``translation = mpp * (d - 1) / 2``, so pixel centres of every level sit where the centre of the
level-0 block they average sits (box downsampling). Level 0 has no translation.

Writing streams one block of chunks at a time from the source levels (dask, zarr or numpy), so
peak memory is a few blocks per worker thread whatever the slide size. Levels the caller does
not give are built from the level just written (read back from the output), never from a
full-resolution copy in memory.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from napari_cytosyn.export._stream import (
    ProgressFn,
    aligned_block_px,
    atomic_output,
    bounded_map,
    downsample,
    level_downsamples,
    pyramid_shapes,
    read_block,
    tile_grid,
    validate_levels,
    validate_masks,
)
from napari_cytosyn.export.provenance import PROVENANCE_KEY, jsonable

NgffVersion = Literal["0.4", "0.5"]
MASK_LABEL = "synthetic"
_RGB = (("red", "FF0000"), ("green", "00FF00"), ("blue", "0000FF"))


def normalise_mpp(mpp: float | Sequence[float] | None) -> tuple[float, float] | None:
    """``mpp`` as ``(x_um, y_um)``; a single number means square pixels; ``None`` stays ``None``."""
    if mpp is None:
        return None
    if isinstance(mpp, int | float):
        mpp = (float(mpp), float(mpp))
    mx, my = (float(v) for v in mpp)
    if not (mx > 0 and my > 0 and math.isfinite(mx) and math.isfinite(my)):
        raise ValueError(f"mpp must be positive microns per pixel, got {mpp!r}")
    return mx, my


def multiscale_metadata(
    shapes: Sequence[Sequence[int]],
    mpp: tuple[float, float] | None,
    name: str,
    version: NgffVersion,
    paths: Sequence[str] | None = None,
) -> dict[str, Any]:
    """One NGFF ``multiscales`` entry for (c, y, x) levels of the given (y, x) shapes."""
    space = {"type": "space", "unit": "micrometer"} if mpp is not None else {"type": "space"}
    axes = [{"name": "c", "type": "channel"}, {"name": "y", **space}, {"name": "x", **space}]
    my, mx = (mpp[1], mpp[0]) if mpp is not None else (1.0, 1.0)
    datasets = []
    for i, (dy, dx) in enumerate(level_downsamples(shapes)):
        transforms: list[dict[str, Any]] = [{"type": "scale", "scale": [1.0, my * dy, mx * dx]}]
        if i > 0:
            shift = [0.0, my * (dy - 1) / 2, mx * (dx - 1) / 2]
            transforms.append({"type": "translation", "translation": shift})
        datasets.append(
            {"path": paths[i] if paths else str(i), "coordinateTransformations": transforms}
        )
    entry: dict[str, Any] = {
        "name": name,
        "axes": axes,
        "datasets": datasets,
        "type": "mean" if len(shapes) > 1 else None,
        "metadata": {"method": "2x2 box mean (images), 2x2 max (masks)"},
    }
    if entry["type"] is None:
        del entry["type"]
    if version == "0.4":
        entry = {"version": "0.4", **entry}
    return entry


def omero_metadata(name: str, version: NgffVersion) -> dict[str, Any]:
    """``omero`` rendering metadata for 8-bit RGB (red, green, blue channels, window 0-255)."""
    channels = [
        {
            "label": label,
            "color": color,
            "active": True,
            "coefficient": 1.0,
            "family": "linear",
            "inverted": False,
            "window": {"start": 0, "end": 255, "min": 0, "max": 255},
        }
        for label, color in _RGB
    ]
    meta: dict[str, Any] = {
        "name": name,
        "channels": channels,
        "rdefs": {"model": "color", "defaultT": 0, "defaultZ": 0},
    }
    if version == "0.4":
        meta["version"] = "0.4"
    return meta


def image_label_metadata(version: NgffVersion) -> dict[str, Any]:
    """``image-label`` metadata of the synthetic mask: value 1 = synthetic (magenta)."""
    meta: dict[str, Any] = {
        "colors": [{"label-value": 1, "rgba": [255, 0, 255, 128]}],
        "properties": [{"label-value": 1, "class": MASK_LABEL}],
        "source": {"image": "../../"},
    }
    if version == "0.4":
        meta["version"] = "0.4"
    return meta


def _set_ome_attrs(group: Any, version: NgffVersion, ome: dict[str, Any], **extra: Any) -> None:
    attrs = dict(ome) if version == "0.4" else {"ome": {"version": "0.5", **ome}}
    attrs.update(extra)
    group.attrs.update(jsonable(attrs))


# Blosc-zstd level 1: on H&E tiles levels 3-5 cost 6-10x the CPU for < 3 % smaller chunks.
BLOSC = {"cname": "zstd", "clevel": 1}


def _compressor(zarr_format: int) -> Any:
    if zarr_format == 2:
        from numcodecs import Blosc

        return Blosc(**BLOSC, shuffle=Blosc.SHUFFLE)
    from zarr.codecs import BloscCodec

    return BloscCodec(**BLOSC, shuffle="shuffle")


class ChunkFiles:
    """Writes whole chunks of a new, local uint8 zarr array as files, bypassing zarr's API.

    Each chunk is Blosc-encoded (the array's own codec, as a standard Blosc frame) and written
    to the file named by the array's chunk key encoding. Zarr's per-call overhead otherwise
    costs as much as the compression; the output is the same bytes zarr would write, and the
    tests read it back through zarr, ome-zarr-py and our reader.
    """

    def __init__(self, array: Any) -> None:
        from numcodecs import Blosc

        self.array = array
        self.root = Path(array.store.root) / array.path
        self.chunks = tuple(int(c) for c in array.chunks)
        self.codec = Blosc(**BLOSC, shuffle=Blosc.SHUFFLE)

    @staticmethod
    def supports(array: Any) -> bool:
        """True for arrays in a local directory store (where chunk files can be written)."""
        return getattr(array.store, "root", None) is not None and array.dtype == np.uint8

    def write(self, y0: int, x0: int, block_cyx: np.ndarray) -> None:
        """Write ``block_cyx`` (c, h, w) at ``(y0, x0)``; both chunk-aligned, whole chunks."""
        c, cy, cx = self.chunks
        _, h, w = block_cyx.shape
        for by in range(0, h, cy):
            for bx in range(0, w, cx):
                piece = block_cyx[:, by : by + cy, bx : bx + cx]
                if piece.shape[1:] != (cy, cx):  # edge chunk: zarr stores it padded
                    full = np.zeros((c, cy, cx), np.uint8)
                    full[:, : piece.shape[1], : piece.shape[2]] = piece
                    piece = full
                key = self.array.metadata.encode_chunk_key((0, (y0 + by) // cy, (x0 + bx) // cx))
                path = self.root / key
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(self.codec.encode(np.ascontiguousarray(piece)))


def create_level_array(
    group: Any, path: str, shape: Sequence[int], chunks: Sequence[int], zarr_format: int
) -> Any:
    """A uint8 (c, y, x) array in ``group`` with NGFF-conformant chunk keys for the format."""
    kwargs: dict[str, Any] = {
        "name": path,
        "shape": tuple(int(s) for s in shape),
        "chunks": tuple(int(c) for c in chunks),
        "dtype": "uint8",
        "fill_value": 0,
        "compressors": [_compressor(zarr_format)],
    }
    if zarr_format == 2:
        kwargs["chunk_key_encoding"] = {"name": "v2", "separator": "/"}
    else:
        kwargs["dimension_names"] = ("c", "y", "x")
    return group.create_array(**kwargs)


def _chunk_count(shapes: Sequence[Sequence[int]], chunk_px: int) -> int:
    return sum(math.ceil(h / chunk_px) * math.ceil(w / chunk_px) for h, w in shapes)


def _reader_from_source(level: Any) -> Callable[[int, int, int, int], np.ndarray]:
    def read(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        block = read_block(level, y0, y1, x0, x1)
        return block if block.ndim == 3 else block[..., None]

    return read


def _reader_from_coarser(
    prev: Any, shape: Sequence[int], factor: tuple[int, int], reduce: str
) -> Callable[[int, int, int, int], np.ndarray]:
    """Read a block of a level by reducing the (already written, (c, y, x)) previous level."""
    fy, fx = factor
    ph, pw = prev.shape[1], prev.shape[2]

    def read(y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        src = np.asarray(prev[:, y0 * fy : min(y1 * fy, ph), x0 * fx : min(x1 * fx, pw)])
        out = downsample(np.moveaxis(src, 0, -1), (fy, fx), reduce)
        return _fit(out, y1 - y0, x1 - x0)

    return read


def _fit(block: np.ndarray, h: int, w: int) -> np.ndarray:
    """Crop or edge-pad ``block`` to ``(h, w)`` (vendor levels round sizes their own way)."""
    block = block[:h, :w]
    if block.shape[0] < h or block.shape[1] < w:
        pad = [(0, h - block.shape[0]), (0, w - block.shape[1])] + [(0, 0)] * (block.ndim - 2)
        block = np.pad(block, pad, mode="edge")
    return block


def _level_factor(big: Sequence[int], small: Sequence[int]) -> tuple[int, int]:
    return max(1, round(big[0] / small[0])), max(1, round(big[1] / small[1]))


def _write_level(
    dst: Any,
    read: Callable[[int, int, int, int], np.ndarray],
    block_px: tuple[int, int],
    chunk_px: int,
    workers: int,
    cancel: Any,
    tick: Callable[[int], None],
) -> None:
    h, w = dst.shape[1], dst.shape[2]
    files = ChunkFiles(dst) if ChunkFiles.supports(dst) else None

    def job(tile: tuple[int, int, int, int]) -> int:
        y0, y1, x0, x1 = tile
        data = read(y0, y1, x0, x1)
        if data.dtype != np.uint8:
            data = data.astype(np.uint8)
        if files is not None:
            files.write(y0, x0, np.moveaxis(data, -1, 0))
        else:
            dst[:, y0:y1, x0:x1] = np.moveaxis(data, -1, 0)
        return math.ceil((y1 - y0) / chunk_px) * math.ceil((x1 - x0) / chunk_px)

    for n in bounded_map(job, tile_grid((h, w), block_px), workers, cancel=cancel):
        tick(n)


def write_ome_zarr(
    path: str | os.PathLike,
    levels: Sequence[Any],
    *,
    mpp: float | Sequence[float] | None = None,
    mask_levels: Sequence[Any] | None = None,
    provenance: dict[str, Any] | None = None,
    name: str | None = None,
    version: NgffVersion = "0.4",
    chunk_px: int = 512,
    min_level_px: int | None = None,
    overwrite: bool = False,
    workers: int | None = None,
    progress: ProgressFn | None = None,
    cancel: Any = None,
) -> Path:
    """Write an RGB pyramid (and optional synthetic mask) as an OME-Zarr image.

    Parameters
    ----------
    path: output folder, conventionally ``*.ome.zarr``. Written to a temporary sibling and
        renamed at the end; an existing path is refused unless ``overwrite``.
    levels: the pyramid, finest first: arrays (dask, zarr, numpy) of shape ``(y, x, 3)`` uint8.
        With one level, 2x levels are built from the written output down to ``min_level_px``.
    mpp: microns per pixel of level 0, ``x_um`` or ``(x_um, y_um)``; ``None`` writes pixel units.
    mask_levels: ``(y, x)`` bool/uint8 arrays, 1 where pixels are synthetic; either one per image
        level or only the finest (coarser ones are 2x2-max reduced). Written as
        ``labels/synthetic``.
    provenance: dict from :func:`~napari_cytosyn.export.provenance.build_provenance`, stored as
        the group attribute ``napari_cytosyn``.
    version: ``"0.4"`` (zarr v2, default, widest reader support) or ``"0.5"`` (zarr v3).
    chunk_px: chunk edge of the output arrays (chunks are ``(3, chunk_px, chunk_px)``).
    workers: threads reading/compressing blocks (default ``min(4, cpu_count)``).
    progress: ``progress(done, total)`` in output chunks; ``cancel``: ``.is_set()`` aborts
        (raising ``Cancelled``) and leaves no output behind.

    Returns the final path.
    """
    import zarr

    if version not in ("0.4", "0.5"):
        raise ValueError(f"NGFF version must be '0.4' or '0.5', got {version!r}")
    validate_levels(levels)
    mpp_xy = normalise_mpp(mpp)
    chunk_px = int(chunk_px)
    if chunk_px < 16:
        raise ValueError(f"chunk_px must be >= 16, got {chunk_px}")
    given = [tuple(int(s) for s in lv.shape[:2]) for lv in levels]
    shapes = given if len(given) > 1 else pyramid_shapes(given[0], min_level_px or chunk_px)
    if mask_levels is not None:
        validate_masks(mask_levels, shapes)
    zarr_format = 2 if version == "0.4" else 3
    workers = workers or min(4, os.cpu_count() or 1)
    name = name or Path(path).name.removesuffix(".zarr").removesuffix(".ome")

    total = _chunk_count(shapes, chunk_px) * (2 if mask_levels is not None else 1)
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    with atomic_output(path, overwrite) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=zarr_format)
        ome = {
            "multiscales": [multiscale_metadata(shapes, mpp_xy, name, version)],
            "omero": omero_metadata(name, version),
        }
        _set_ome_attrs(root, version, ome, **{PROVENANCE_KEY: provenance or {}})
        written: list[Any] = []
        for i, shape in enumerate(shapes):
            dst = create_level_array(
                root, str(i), (3, *shape), (3, chunk_px, chunk_px), zarr_format
            )
            if i < len(levels):
                read = _reader_from_source(levels[i])
                block = aligned_block_px(levels[i], chunk_px)
            else:
                factor = _level_factor(shapes[i - 1], shape)
                read = _reader_from_coarser(written[-1], shape, factor, "mean")
                block = (chunk_px, chunk_px)
            _write_level(dst, read, block, chunk_px, workers, cancel, tick)
            written.append(dst)
        if mask_levels is not None:
            _write_mask(
                root, mask_levels, shapes, version, zarr_format, chunk_px, workers, cancel, tick
            )
        if progress is not None and done != total:
            progress(total, total)
    return Path(path)


def _write_mask(
    root: Any,
    mask_levels: Sequence[Any],
    shapes: Sequence[Sequence[int]],
    version: NgffVersion,
    zarr_format: int,
    chunk_px: int,
    workers: int,
    cancel: Any,
    tick: Callable[[int], None],
) -> None:
    labels = root.create_group("labels")
    _set_ome_attrs(labels, version, {"labels": [MASK_LABEL]})
    group = labels.create_group(MASK_LABEL)
    meta = multiscale_metadata(shapes, None, MASK_LABEL, version)
    image_meta = root.attrs.asdict() if version == "0.4" else root.attrs["ome"]
    # the mask lives in the same physical space as the image: copy its axes and transforms
    img_ms = image_meta["multiscales"][0]
    meta["axes"] = img_ms["axes"]
    for ds, img_ds in zip(meta["datasets"], img_ms["datasets"], strict=True):
        ds["coordinateTransformations"] = img_ds["coordinateTransformations"]
    meta["type"] = "max" if len(shapes) > 1 else meta.get("type")
    if meta["type"] is None:
        del meta["type"]
    _set_ome_attrs(
        group,
        version,
        {"multiscales": [meta], "image-label": image_label_metadata(version)},
    )
    written: list[Any] = []
    for i, shape in enumerate(shapes):
        dst = create_level_array(group, str(i), (1, *shape), (1, chunk_px, chunk_px), zarr_format)
        if i < len(mask_levels):
            src = mask_levels[i]

            def read(y0: int, y1: int, x0: int, x1: int, src: Any = src) -> np.ndarray:
                return (read_block(src, y0, y1, x0, x1) != 0).astype(np.uint8)[..., None]

            block = aligned_block_px(src, chunk_px)
        else:
            factor = _level_factor(shapes[i - 1], shape)
            read = _reader_from_coarser(written[-1], shape, factor, "max")
            block = (chunk_px, chunk_px)
        _write_level(dst, read, block, chunk_px, workers, cancel, tick)
        written.append(dst)
