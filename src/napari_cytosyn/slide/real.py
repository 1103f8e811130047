"""Real whole-slide images: one `Slide` over OpenSlide, tifffile and OME-Zarr backends.

`open_slide(path)` picks the backend from the file itself: OpenSlide for SVS, NDPI, MRXS, SCN,
BIF, VMS/VMU and generic tiled TIFF with one IFD a level; tifffile for OME-TIFF (SubIFD
pyramids) and TIFFs OpenSlide does not recognise; zarr for OME-Zarr (NGFF 0.4 and 0.5).
Backends serve in-bounds regions as (h, w, 3) uint8; `Slide` makes lazy dask levels of them,
chunked by whole multiples of the file's tiles, whose slices read only the pixels they need.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_cytosyn.pixel_size import PixelSize
from napari_cytosyn.slide._backend import SlideBackend, SlideReadError

if TYPE_CHECKING:
    import dask.array

__all__ = [
    "OPENSLIDE_SUFFIXES",
    "SLIDE_SUFFIXES",
    "TIFF_SUFFIXES",
    "ZARR_SUFFIXES",
    "Slide",
    "SlideReadError",
    "open_slide",
]

#: File name endings OpenSlide's vendor backends are tried for.
OPENSLIDE_SUFFIXES = (".svs", ".ndpi", ".mrxs", ".scn", ".bif", ".vms", ".vmu", ".svslide")
#: TIFF endings; OME-TIFF and TIFFs OpenSlide does not recognise go through tifffile.
TIFF_SUFFIXES = (".ome.tif", ".ome.tiff", ".tif", ".tiff")
#: OME-Zarr directory endings.
ZARR_SUFFIXES = (".ome.zarr", ".zarr")
#: Every ending `open_slide` claims.
SLIDE_SUFFIXES = OPENSLIDE_SUFFIXES + TIFF_SUFFIXES + ZARR_SUFFIXES

#: Chunks of the dask levels are whole multiples of the file's tiles within these bounds (px).
MIN_CHUNK_PX = 256
MAX_CHUNK_PX = 1024


def chunk_px(tile_px: int | None) -> int:
    """Chunk edge for a level whose tiles are ``tile_px`` wide: the largest multiple of the tile
    that fits in ``MAX_CHUNK_PX`` (at least one tile, clamped to [MIN_CHUNK_PX, MAX_CHUNK_PX])."""
    if not tile_px or tile_px <= 0:
        return 512
    if tile_px >= MAX_CHUNK_PX:
        return MAX_CHUNK_PX
    return max(MIN_CHUNK_PX, (MAX_CHUNK_PX // tile_px) * tile_px)


class _LevelSource:
    """Array-like view of one level for `dask.array.from_array`: dask fuses a slice of a chunk
    into ``source[...]``, so a region read asks the backend for its own pixels only."""

    def __init__(
        self,
        read: Callable[[int, int, int, int], np.ndarray],
        shape: tuple[int, int],
        path: Path,
        level: int,
    ):
        self._read = read
        self.shape = (shape[0], shape[1], 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3
        self._path = path
        self._level = level

    def __reduce__(self) -> tuple[Any, ...]:
        # File handles do not pickle: a dask worker reopens the slide (once per process).
        return (_reopened_level_source, (str(self._path), self._level))

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        key = key + (slice(None),) * (3 - len(key))
        ys, xs, cs = key
        unit_steps = isinstance(ys, slice) and isinstance(xs, slice) and ys.step in (None, 1)
        if unit_steps and xs.step in (None, 1):
            y0, y1, _ = ys.indices(self.shape[0])
            x0, x1, _ = xs.indices(self.shape[1])
            h, w = max(0, y1 - y0), max(0, x1 - x0)
            block = self._read(y0, x0, h, w) if h and w else np.empty((h, w, 3), np.uint8)
            return block if isinstance(cs, slice) and cs == slice(None) else block[:, :, cs]
        # Anything else (steps, integers, fancy indices): read the bounding box, index in memory.
        yr = np.arange(self.shape[0])[ys]
        xr = np.arange(self.shape[1])[xs]
        if np.size(yr) == 0 or np.size(xr) == 0:
            # Shape of an empty selection, without allocating the level.
            virtual = np.lib.stride_tricks.as_strided(
                np.empty(1, np.uint8), shape=self.shape, strides=(0, 0, 0)
            )
            return np.array(virtual[ys, xs, cs])
        y0, y1 = int(np.min(yr)), int(np.max(yr)) + 1
        x0, x1 = int(np.min(xr)), int(np.max(xr)) + 1
        block = self._read(y0, x0, y1 - y0, x1 - x0)
        return block[_shift(ys, y0), _shift(xs, x0), cs]


@functools.lru_cache(maxsize=8)
def _reopened(path: str) -> Slide:
    return open_slide(path)


def _reopened_level_source(path: str, level: int) -> _LevelSource:
    return _reopened(path)._sources[level]


def _shift(index: Any, offset: int) -> Any:
    """Re-express an index into a full axis as an index into the axis' [offset:] part."""
    if isinstance(index, slice):
        start, stop, step = index.indices(2**62)
        if step < 0:
            return np.arange(start, stop, step) - offset
        return slice(start - offset, stop - offset, step)
    return np.asarray(index) - offset


class Slide:
    """A real whole-slide image, opened read-only, with lazy dask levels (``kind`` ``"real"``).

    Attributes:
        path, name: the file or OME-Zarr folder; its name without the slide ending.
        format: backend and vendor, e.g. ``"openslide:aperio"``, ``"ome-tiff"``, ``"ome-zarr:0.4"``.
        levels, level_shapes: dask arrays (y, x, 3) uint8, finest first; their (h, w).
        downsamples: level-0 px per level px (mean of y and x; not always a power of 2).
        mpp: level-0 ``PixelSize``, or None when the file does not say.
        objective_power: nominal objective magnification, or None.
        properties: vendor and file properties as strings.
    """

    kind = "real"

    def __init__(self, path: str | os.PathLike, backend: SlideBackend):
        import dask.array as da

        self.path = Path(path)
        self.name = slide_stem(self.path)
        self._backend = backend
        self.format = backend.format
        self.level_shapes = [(int(h), int(w)) for h, w in backend.level_shapes]
        h0, w0 = self.level_shapes[0]
        self.downsamples = [((h0 / h) + (w0 / w)) / 2.0 for h, w in self.level_shapes]
        self.mpp = PixelSize.from_any(backend.mpp)
        self.objective_power = backend.objective_power
        self.properties = dict(backend.properties)
        self.levels: list[dask.array.Array] = []
        self._sources: list[_LevelSource] = []
        for level, (shape, tile) in enumerate(
            zip(self.level_shapes, backend.tile_shapes, strict=True)
        ):
            th, tw = tile if tile else (None, None)
            source = _LevelSource(self._reader(level), shape, self.path, level)
            self._sources.append(source)
            self.levels.append(
                da.from_array(
                    source,
                    chunks=(chunk_px(th), chunk_px(tw), 3),
                    name=f"slide-{self.name}-{id(self):x}-level{level}",
                    asarray=False,
                    inline_array=True,
                    meta=np.empty((0, 0, 0), np.uint8),
                )
            )

    def _reader(self, level: int) -> Callable[[int, int, int, int], np.ndarray]:
        backend, path = self._backend, self.path

        def read(y: int, x: int, h: int, w: int) -> np.ndarray:
            try:
                return backend.read(level, y, x, h, w)
            except SlideReadError:
                raise
            except Exception as exc:  # decoder errors surface here, not at open time
                raise SlideReadError(
                    f"{path}: reading level {level} region y={y} x={x} h={h} w={w} failed: "
                    f"{type(exc).__name__}: {exc}. The file may be corrupt or truncated."
                ) from exc

        return read

    @property
    def n_levels(self) -> int:
        return len(self.level_shapes)

    def read_region(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        """``(h, w, 3)`` uint8 at ``(y, x)`` of ``level`` (no dask); pixels outside the level
        are white (255), like empty glass."""
        if not 0 <= level < self.n_levels:
            raise IndexError(f"{self.path}: level {level} out of range 0..{self.n_levels - 1}")
        if h < 0 or w < 0:
            raise ValueError(f"read_region size must be >= 0, got h={h} w={w}")
        lh, lw = self.level_shapes[level]
        y0, x0 = max(0, y), max(0, x)
        y1, x1 = min(lh, y + h), min(lw, x + w)
        if y0 == y and x0 == x and y1 == y + h and x1 == x + w:
            return self._reader(level)(y, x, h, w) if h and w else np.empty((h, w, 3), np.uint8)
        out = np.full((h, w, 3), 255, np.uint8)
        if y1 > y0 and x1 > x0:
            out[y0 - y : y1 - y, x0 - x : x1 - x] = self._reader(level)(y0, x0, y1 - y0, x1 - x0)
        return out

    def best_level_for_downsample(self, downsample: float) -> int:
        """The finest level whose downsample is <= ``downsample`` (level 0 if none is)."""
        best = 0
        for level, ds in enumerate(self.downsamples):
            if ds <= downsample * (1 + 1e-6):
                best = level
        return best

    def thumbnail(self, max_px: int = 1024) -> np.ndarray:
        """``(h, w, 3)`` uint8, longer side <= ``max_px`` (``chunk_grid.thumbnail``)."""
        from napari_cytosyn.chunk_grid import thumbnail

        return thumbnail(self.read_region, self.level_shapes, max_px)

    def metadata(self) -> dict[str, Any]:
        """JSON-able description: path, name, format, levels, mpp (or None), properties."""
        return {
            "path": str(self.path),
            "name": self.name,
            "format": self.format,
            "level_shapes": [list(s) for s in self.level_shapes],
            "downsamples": list(self.downsamples),
            "mpp": self.mpp.to_list() if self.mpp is not None else None,
            "mpp_known": self.mpp is not None,
            "objective_power": self.objective_power,
            "properties": dict(self.properties),
        }

    def provenance(self, checksum_source: bool = True) -> dict[str, Any]:
        """Provenance of a copy: the file's name, path and SHA-256 (unless not
        ``checksum_source``)."""
        from napari_cytosyn.slide.provenance import build_provenance

        return build_provenance(
            source_path=self.path,
            source_name=self.path.name,
            checksum_source=checksum_source,
            extra={"synthetic": None},
        )

    def synthetic_mask(self, level: int) -> dask.array.Array:
        """``(h, w)`` bool: the mask an export of this plugin carries
        (:attr:`stored_mask_levels`), else all False."""
        import dask.array as da

        lv = self.levels[level]
        stored = self.stored_mask_levels
        if stored and level < len(stored) and tuple(stored[level].shape) == lv.shape[:2]:
            return stored[level] != 0
        return da.zeros(lv.shape[:2], dtype=bool, chunks=lv.chunks[:2])

    @functools.cached_property
    def stored_mask_levels(self) -> list[dask.array.Array] | None:
        """The synthetic mask an export of this plugin holds (``(h_k, w_k)`` uint8 levels:
        ``labels/synthetic`` of an OME-Zarr, the mask TIFF beside a TIFF), else ``None``."""
        if self.path.is_dir():
            return _zarr_mask_levels(self.path)
        sidecar = mask_sidecar(self.path)
        return _tiff_mask_levels(sidecar) if sidecar.is_file() else None

    def finished_levels(
        self, render_missing: bool = False, progress: Any = None, cancel: Any = None
    ) -> list[dask.array.Array]:
        """The levels as they are (a file has no unfinished pixels)."""
        return list(self.levels)

    def close(self) -> None:
        """Close the underlying file handles; the dask levels stop working afterwards."""
        self._backend.close()

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickles by path (handles cannot travel); unpickling reopens the file.
        return (open_slide, (str(self.path),))

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        mpp = str(self.mpp) if self.mpp else "mpp unknown"
        return (
            f"Slide({str(self.path)!r}, format={self.format!r}, level_shapes={self.level_shapes}, "
            f"{mpp})"
        )


def mask_sidecar(path: str | os.PathLike) -> Path:
    """The synthetic-mask TIFF written beside the TIFF export ``path``
    (``case.ome.tif`` -> ``case.synthetic-mask.tif``)."""
    path = Path(path)
    return path.with_name(f"{slide_stem(path)}.synthetic-mask.tif")


def _zarr_mask_levels(path: Path) -> list[Any] | None:
    import dask.array as da
    import zarr

    try:
        group = zarr.open_group(str(path / "labels" / "synthetic"), mode="r")
    except Exception:  # no labels group: an export without a mask, or not ours
        return None
    levels = []
    for k in range(64):
        if str(k) not in group:
            break
        arr = da.from_zarr(group[str(k)])
        while arr.ndim > 2:  # (c, y, x) or (t, c, z, y, x) with size-1 leading axes
            arr = arr[0]
        levels.append(arr.astype("uint8"))
    return levels or None


def _tiff_mask_levels(path: Path) -> list[Any]:
    import dask.array as da
    import tifffile
    import zarr

    group = zarr.open(tifffile.imread(path, aszarr=True), mode="r")
    if isinstance(group, zarr.Array):
        return [da.from_zarr(group)]
    return [da.from_zarr(group[str(k)]) for k in range(len(group))]


def slide_stem(path: Path) -> str:
    """The file name without its slide ending (``case1.ome.tiff`` -> ``case1``)."""
    name = path.name.rstrip("/")
    low = name.lower()
    for suffix in sorted(SLIDE_SUFFIXES, key=len, reverse=True):
        if low.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def _is_zarr_dir(path: Path) -> bool:
    return path.is_dir() and any(
        (path / f).exists() for f in ("zarr.json", ".zgroup", ".zattrs", ".zarray")
    )


def open_slide(path: str | os.PathLike) -> Slide:
    """Open a real whole-slide image (a slide file or an OME-Zarr folder) read-only.

    Raises ``FileNotFoundError``, or ``SlideReadError`` for a file this package does not read
    (unsupported format, folder that is not OME-Zarr, corrupt or truncated, not RGB uint8).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such slide file or directory")
    low = path.name.lower()
    if path.is_dir():
        if _is_zarr_dir(path):
            from napari_cytosyn.slide._omezarr import OmeZarrBackend

            return Slide(path, OmeZarrBackend(path))
        raise SlideReadError(
            f"{path}: is a directory but not an OME-Zarr image (no zarr.json, .zgroup or .zattrs); "
            "give a slide file or an OME-Zarr directory"
        )
    if low.endswith(ZARR_SUFFIXES):
        raise SlideReadError(f"{path}: a .zarr path must be a directory (an OME-Zarr image)")
    _check_readable(path)
    if _has_tiff_magic(path):
        from napari_cytosyn.slide._tiff import open_tiff_backend

        return Slide(path, open_tiff_backend(path))
    if low.endswith(TIFF_SUFFIXES):
        raise SlideReadError(f"{path}: named like a TIFF but does not start with a TIFF header")
    from napari_cytosyn.slide._openslide import OpenSlideBackend, detect_vendor

    if low.endswith(OPENSLIDE_SUFFIXES) or detect_vendor(path) is not None:
        return Slide(path, OpenSlideBackend(path))
    raise SlideReadError(
        f"{path}: unsupported slide format (supported: {', '.join(SLIDE_SUFFIXES)}; "
        "OME-Zarr directories)"
    )


def _check_readable(path: Path) -> None:
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except OSError as exc:
        raise SlideReadError(f"{path}: cannot be read: {exc}") from exc
    if path.stat().st_size == 0:
        raise SlideReadError(f"{path}: file is empty")


def _has_tiff_magic(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(4)
    return head[:2] in (b"II", b"MM") and head[2:4] in (b"*\x00", b"\x00*", b"+\x00", b"\x00+")
