"""Tile-copy export of an inpainted slide: the source's untouched compressed tiles as they are.

For a composite (or real slide) whose real file is a tiled TIFF with 8-bit RGB levels in JPEG,
deflate, LZW or no compression, every level keeps the source's tile grid, compression, colour
space, subsampling and JPEG tables: a tile no edit touches is the source's compressed bytes,
copied (readers decode exactly the source's pixels); a touched tile is re-encoded from the
composite with the source page's codec (with a JPEG source, real pixels inside touched tiles
change by one JPEG round trip). The output has the SVS layout of :mod:`~.tiff`;
:func:`copy_plan` says why a slide cannot be tile-copied.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_cytosyn import chunk_grid
from napari_cytosyn.export._stream import (
    ProgressCounter,
    ProgressFn,
    atomic_output,
    bounded_map,
    default_workers,
    read_block,
    source_reader,
)
from napari_cytosyn.export._svs import (
    level_description,
    svs_description,
    thumbnail_of,
    thumbnail_px,
    write_label_and_macro,
    write_thumbnail,
)
from napari_cytosyn.export._tiles import resolution_kwargs
from napari_cytosyn.pixel_size import PixelSize
from napari_cytosyn.slide.kinds import export_mask_levels
from napari_cytosyn.slide.real import slide_stem

#: TIFF compression tags whose tiles can be re-encoded here -> tifffile's compression names.
_CODECS: dict[int, str | None] = {1: None, 5: "lzw", 7: "jpeg", 8: "zlib", 32946: "zlib"}


class TileCopyError(ValueError):
    """The slide cannot be exported by copying its tiles (the message says why)."""


@dataclass(frozen=True)
class LevelPage:
    """One source TIFF page that holds a slide level, with what its tiles need to be copied."""

    shape: tuple[int, int]
    tile: tuple[int, int]
    compression: int
    photometric: int
    subsampling: tuple[int, int] | None
    predictor: int
    jpegtables: bytes | None
    offsets: tuple[int, ...]
    bytecounts: tuple[int, ...]


def copy_plan(slide: Any) -> tuple[Path, list[LevelPage]]:
    """(source TIFF, one page per slide level) for a tile copy, or ``TileCopyError`` why not."""
    import tifffile

    real = getattr(slide, "real", slide)
    path = Path(real.path)
    if not path.is_file():
        raise TileCopyError(f"{path.name} is not a TIFF file; tile copy needs a tiled TIFF source")
    try:
        tf = tifffile.TiffFile(str(path))
    except Exception as exc:
        raise TileCopyError(f"{path.name} is not a TIFF file ({exc}); use deflate") from exc
    with tf:
        # pyramid levels as tifffile sees them (SubIFDs included), then every top-level page
        # (tifffile groups only power-of-two generic pyramids into levels)
        candidates = [level.keyframe for level in (tf.series[0].levels if tf.series else [])]
        candidates += [page for page in tf.pages if page.is_tiled]
        by_shape = {}
        for page in candidates:
            by_shape.setdefault((int(page.imagelength), int(page.imagewidth)), page)
        pages = []
        for k, shape in enumerate(real.level_shapes):
            page = by_shape.get(tuple(shape))
            if page is None:
                raise TileCopyError(f"{path.name}: no TIFF page holds level {k} {tuple(shape)}")
            _check_page(path, k, page)
            pages.append(
                LevelPage(
                    shape=(int(page.imagelength), int(page.imagewidth)),
                    tile=(int(page.tilelength), int(page.tilewidth)),
                    compression=int(page.compression),
                    photometric=int(page.photometric),
                    subsampling=tuple(page.subsampling) if page.photometric == 6 else None,
                    predictor=int(page.predictor),
                    jpegtables=page.jpegtables,
                    offsets=tuple(int(o) for o in page.dataoffsets),
                    bytecounts=tuple(int(b) for b in page.databytecounts),
                )
            )
    return path, pages


def _check_page(path: Path, k: int, page: Any) -> None:
    problems = []
    if not page.is_tiled:
        problems.append("not tiled")
    if page.dtype != np.uint8 or page.samplesperpixel != 3 or page.planarconfig != 1:
        problems.append("not 8-bit interleaved RGB")
    if int(page.compression) not in _CODECS:
        problems.append(f"compression {page.compression!s} cannot be re-encoded here")
    if int(page.photometric) not in (2, 6):
        problems.append(f"photometric {page.photometric!s}")
    if problems:
        raise TileCopyError(
            f"{path.name} level {k}: {', '.join(problems)}; tile copy is not possible, "
            "export with compression='deflate' (lossless) instead"
        )


def _encoder(page: LevelPage, quality: int) -> Callable[[np.ndarray], bytes]:
    """tifffile's encoder for tiles of ``page`` (the codec, predictor and colour space it uses)."""
    import tifffile

    if page.compression == 1:
        return lambda tile: np.ascontiguousarray(tile).tobytes()
    compress = tifffile.TIFF.COMPRESSORS[page.compression]
    if page.compression == 7:
        args = _jpeg_args(page, quality)
        if page.subsampling is not None:
            args["subsampling"] = page.subsampling
        return lambda tile: compress(tile, **args)
    if page.predictor > 1:
        predict = tifffile.TIFF.PREDICTORS[page.predictor]
        return lambda tile: compress(predict(np.array(tile), axis=-2))
    return lambda tile: compress(tile)


def touched_tiles(mask_level: Any, tile: tuple[int, int]) -> np.ndarray:
    """``(ny, nx)`` bool: which tiles of a ``(y, x)`` mask level hold any synthetic pixel."""
    import dask.array as da

    mask = da.asarray(mask_level).rechunk(tile)
    return mask.map_blocks(
        lambda b: np.array([[bool(np.any(b))]]), chunks=(1, 1), dtype=bool
    ).compute()


def _level_tiles(
    fh: Any,
    lock: threading.Lock,
    page: LevelPage,
    level: Any,
    touched: np.ndarray,
    quality: int,
    workers: int,
    cancel: Any,
    tick: Callable[[int], None],
    counts: dict[str, int],
) -> Iterator[bytes]:
    """Row-major compressed tiles of one level: copied bytes, or re-encoded composite pixels."""
    encode = _encoder(page, quality)
    th, tw = page.tile
    nx = touched.shape[1]

    def job(item: tuple[int, tuple[int, int, int, int]]) -> bytes:
        i, (y0, y1, x0, x1) = item
        if not touched[i // nx, i % nx]:
            if page.bytecounts[i] == 0:
                return b""
            with lock:
                fh.seek(page.offsets[i])
                return fh.read(page.bytecounts[i])
        block = np.zeros((th, tw, 3), np.uint8)
        block[: y1 - y0, : x1 - x0] = read_block(level, y0, y1, x0, x1)
        return encode(block)

    grid = list(enumerate(chunk_grid.tiles(page.shape, page.tile)))
    for i, data in enumerate(bounded_map(job, grid, workers, cancel=cancel)):
        counts["reencoded" if touched[i // nx, i % nx] else "copied"] += 1
        tick(1)
        yield data


def write_tiff_copy(
    path: str | os.PathLike,
    slide: Any,
    *,
    provenance: dict[str, Any] | None = None,
    name: str | None = None,
    label_lines: Sequence[str] = ("napari-cytosyn",),
    quality: int = 90,
    overwrite: bool = False,
    workers: int | None = None,
    progress: ProgressFn | None = None,
    cancel: Any = None,
) -> dict[str, int]:
    """Write ``slide`` (a composite, or a real TIFF slide) to ``path`` by copying source tiles;
    a mask goes beside the file (:mod:`~.sidecars`). Returns ``{"copied", "reencoded"}`` tile
    counts."""
    import tifffile

    from napari_cytosyn.export.sidecars import check_sidecars, write_mask_sidecars

    source, pages = copy_plan(slide)
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be in 1..100, got {quality}")
    levels = list(slide.levels)
    masks = export_mask_levels(slide, len(levels))
    shapes = [p.shape for p in pages]
    mpp_xy = PixelSize.from_any(slide.mpp)
    workers = default_workers(workers)
    if masks is not None:
        check_sidecars(path, overwrite)
    touched = [
        touched_tiles(masks[k], p.tile)
        if slide.kind == "composite"  # a reopened export's mask is carried, its tiles copied
        else np.zeros(chunk_grid.grid_shape(p.shape, p.tile), bool)
        for k, p in enumerate(pages)
    ]
    n_tiles = sum(t.size for t in touched)
    t = pages[0].tile[0]
    mask_tiles = sum(len(chunk_grid.tiles(s, (t, t))) for s in shapes) if masks else 0
    tick = ProgressCounter(progress, n_tiles + mask_tiles)
    counts = {"copied": 0, "reencoded": 0}

    first = pages[0]
    codec = _CODECS[first.compression]
    description = svs_description(
        shapes[0], first.tile[0], codec, quality, mpp_xy, name or slide_stem(Path(path)),
        getattr(slide, "objective_power", None), provenance,
    )  # fmt: skip
    thumb = thumbnail_of(source_reader(levels[-1]), shapes[-1], thumbnail_px(shapes))
    lock = threading.Lock()
    with (
        atomic_output(path, overwrite) as tmp,
        open(source, "rb") as fh,
        tifffile.TiffWriter(tmp, bigtiff=True) as tif,
    ):
        for k, page in enumerate(pages):
            tif.write(
                _level_tiles(
                    fh, lock, page, levels[k], touched[k], quality, workers, cancel, tick,
                    counts,
                ),
                **_page_kwargs(page, quality),
                description=description
                if k == 0
                else level_description(shapes[0], page.shape, page.tile[0], codec, quality),
                **resolution_kwargs(mpp_xy, shapes[0], page.shape),
            )  # fmt: skip
            if k == 0:
                write_thumbnail(tif, thumb, shapes[0], mpp_xy)
        write_label_and_macro(tif, thumb, label_lines)
    if masks is not None:
        write_mask_sidecars(
            path, masks, shapes, mpp_xy, first.tile[0], overwrite, workers, cancel, tick
        )
    return counts


def _page_kwargs(page: LevelPage, quality: int) -> dict[str, Any]:
    """tifffile ``write`` arguments that reproduce the source page's tags for its tile bytes."""
    codec = _CODECS[page.compression]
    kwargs: dict[str, Any] = {
        "shape": (*page.shape, 3),
        "dtype": np.uint8,
        "tile": page.tile,
        "photometric": "rgb",
        "compression": codec,
        "predictor": page.predictor if page.predictor > 1 else None,
        "metadata": None,
        "software": "napari-cytosyn",
    }
    if page.compression == 7:
        kwargs["compressionargs"] = _jpeg_args(page, quality)
        if page.subsampling is not None:
            kwargs["subsampling"] = page.subsampling
        if page.jpegtables is not None:
            kwargs["jpegtables"] = page.jpegtables
    return kwargs


def _jpeg_args(page: LevelPage, quality: int) -> dict[str, Any]:
    """JPEG quality and the source page's colour space (YCbCr when its photometric is 6)."""
    return {"level": int(quality), "outcolorspace": "YCBCR" if page.photometric == 6 else "RGB"}
