"""Progressive preview of a synthetic slide: early x0 estimates shown before chunks finish.

A chunk of a synthetic slide takes many model calls (every phase of its dependency cone); the
first finished pixels come seconds after a view is opened on a CPU. Lazy mode reports the x0
estimate of every model call (:func:`~napari_cytosyn.sampling.lazy.preview_scope`); this
module turns those latent estimates into pixels without the decoder, with a linear
latent -> RGB map fitted once per model from its own VAE (encode the shipped H&E sample, solve
least squares between each latent and the mean RGB of the pixels it covers), as latent previews
of image generators do. The estimate of a chunk improves with every call and is replaced by the
final pixels when the chunk lands.

Previews are held in memory only (:class:`ChunkPreviews`, one per slide's chunk cache), at
latent resolution, and drawn marked as provisional (the grey checker shows through): they are
never written to the store, so an export or a finished-chunk read can never take one.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import numpy as np

from napari_cytosyn.chunk_grid import pieces

from ._chunk_cache import checker

PREVIEW_MARK = 0.2  # share of the grey checker mixed into preview pixels: "not final"
_FIT_PX = 128  # side of the sample crops the latent -> RGB map is fitted on


class LatentToRGB:
    """A linear map from a model's (scaled) latents to RGB: ``rgb = [z, 1] @ weight``.

    ``weight``: ``(C + 1, 3)`` float64 (one row per latent channel, then the offset), RGB in
    0-255. Fitted by :func:`fit_latent_rgb`.
    """

    def __init__(self, weight: np.ndarray) -> None:
        weight = np.asarray(weight, dtype=np.float64)
        if weight.ndim != 2 or weight.shape[1] != 3 or weight.shape[0] < 2:
            raise ValueError(f"a latent -> RGB weight is (C + 1, 3), got {weight.shape}")
        self.weight = weight
        self.channels = weight.shape[0] - 1

    def __call__(self, z: np.ndarray) -> np.ndarray:
        """Latents ``(C, h, w)`` -> RGB ``(h, w, 3)`` float32 in 0-255 (clipped)."""
        z = np.asarray(z, dtype=np.float64)
        if z.ndim != 3 or z.shape[0] != self.channels:
            raise ValueError(f"expected latents ({self.channels}, h, w), got {z.shape}")
        rgb = np.tensordot(z, self.weight[:-1], axes=(0, 0)) + self.weight[-1]
        return np.clip(rgb, 0.0, 255.0).astype(np.float32)


def _fit_images() -> list[np.ndarray]:
    """RGB crops ``(h, w, 3)`` uint8 at 0.5 um/px to fit on: the shipped H&E sample (tissue)
    and the sample pattern's edge of tissue and glass (white)."""
    from napari_cytosyn.chunk_grid import downsample_area
    from napari_cytosyn.slide.sample import sample_tissue

    from ._sample_image import sample_image

    image = sample_image()
    rgb = image.rgb
    factor = max(1, round(0.5 / image.mpp))
    if factor > 1:
        h, w = rgb.shape[0] // factor * factor, rgb.shape[1] // factor * factor
        rgb = downsample_area(rgb[:h, :w], factor)
    s = _FIT_PX
    h, w = rgb.shape[:2]
    crops = [rgb[:s, :s], rgb[h - s :, w - s :]]  # opposite corners: both stains and stroma
    # The tissue ellipse of a 1024 px pattern reaches its glass around x = 0.
    crops.append(sample_tissue(448, 0, s // 2, s // 2, 1024, 1024))
    return [np.ascontiguousarray(c) for c in crops]


def fit_latent_rgb(model: Any, images: list[np.ndarray] | None = None) -> LatentToRGB:
    """Fit the linear latent -> RGB map of ``model`` by least squares.

    ``images``: RGB ``(h, w, 3)`` uint8 crops at the model's pixel size, sides multiples of its
    latent factor (default: the shipped H&E sample and glass). Each is encoded by the model's
    VAE; every latent is paired with the mean RGB of the ``f x f`` pixels it covers.
    """
    import torch

    from napari_cytosyn.sampling import precision

    f = int(model.latent_factor)
    xs, ys = [], []
    for rgb in images if images is not None else _fit_images():
        h, w = rgb.shape[0] // f * f, rgb.shape[1] // f * f
        rgb = rgb[:h, :w]
        t = torch.from_numpy(rgb.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
        z = precision.encode(model, t, "off")[0].numpy().astype(np.float64)  # (C, h/f, w/f)
        pooled = rgb.reshape(h // f, f, w // f, f, 3).mean(axis=(1, 3))
        xs.append(z.reshape(z.shape[0], -1).T)
        ys.append(pooled.reshape(-1, 3))
    x = np.concatenate(xs)
    x = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
    # Directions the encoder never uses (a null space) get no weight, not noise.
    weight, *_ = np.linalg.lstsq(x, np.concatenate(ys), rcond=1e-6)
    return LatentToRGB(weight)


# id(model) -> (weak reference to the model, its map); models may be unhashable dataclasses
_MAPS: dict[int, tuple[Any, LatentToRGB]] = {}
_MAPS_LOCK = threading.Lock()


def latent_rgb_of(model: Any) -> LatentToRGB:
    """The fitted :class:`LatentToRGB` of ``model`` (fitted on first use, then kept while the
    model lives). Runs the model's encoder: call it from a worker thread, never the GUI
    thread."""
    key = id(model)
    with _MAPS_LOCK:
        entry = _MAPS.get(key)
        if entry is not None and entry[0]() is model:
            return entry[1]
        fitted = fit_latent_rgb(model)
        try:
            ref = weakref.ref(model, lambda r: _MAPS.pop(key, None))
        except TypeError:  # not weakly referenceable: fitted again next time
            return fitted
        _MAPS[key] = (ref, fitted)
        return fitted


class ChunkPreviews:
    """Early pictures of unfinished level-0 chunks of one slide, at latent resolution.

    :meth:`paint` (a worker thread) lays x0 estimates of latent rectangles over the chunks they
    touch, the newest over the older; :meth:`drop` forgets a chunk once it is finished;
    :meth:`read` (the GUI thread) gives the picture of a chunk of any level, built from the
    level-0 previews under it. ``finished(cy, cx)``: whether level-0 chunk ``(cy, cx)`` is
    finished (its estimates are then not kept). Thread-safe.
    """

    def __init__(
        self,
        level_shapes: list[tuple[int, int]],
        chunk_px: int,
        latent_factor: int,
        to_rgb: LatentToRGB,
        finished: Any = None,
    ) -> None:
        if chunk_px % latent_factor or latent_factor & (latent_factor - 1):
            raise ValueError(
                f"previews need a power-of-two latent factor dividing chunk_px; got factor "
                f"{latent_factor}, chunk_px {chunk_px}"
            )
        self.level_shapes = [tuple(int(v) for v in s) for s in level_shapes]
        self.chunk_px, self.factor, self.to_rgb = int(chunk_px), int(latent_factor), to_rgb
        self.n = self.chunk_px // self.factor  # latents a chunk side
        self.finished = finished
        # (cy, cx) -> (rgb (n, n, 3) float32, known (n, n) bool), replaced, never changed
        self._chunks: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
        self._read_cache: dict[tuple[int, int, int], Any] = {}
        self._lock = threading.Lock()
        self._changes = 0  # paints and drops so far: a read built meanwhile is not cached
        self.painted = 0  # reports painted (counts model calls)

    def __len__(self) -> int:
        return len(self._chunks)

    def __contains__(self, key: tuple[int, int]) -> bool:
        return key in self._chunks

    def paint(self, rects: list[tuple[int, int, int, int]], x0: Any) -> set[tuple[int, int]]:
        """Lay estimates over the chunks: ``rects`` absolute latent rectangles ``(y, x, h, w)``,
        ``x0`` ``(n, C, h, w)`` latents (tensor or array). Returns the level-0 chunks changed."""
        est = np.asarray(x0, dtype=np.float32)
        H0, W0 = self.level_shapes[0]
        ny, nx = -(-H0 // self.chunk_px), -(-W0 // self.chunk_px)
        n = self.n
        touched: set[tuple[int, int]] = set()
        for (y, x, h, w), z in zip(rects, est, strict=True):
            rgb = self.to_rgb(z)
            for p in pieces((ny * n, nx * n), n, y, x, h, w):
                # Checked under the lock that drop() takes: a chunk finished meanwhile is
                # either skipped here or dropped after, never left with a stale preview.
                with self._lock:
                    if self.finished is not None and self.finished(p.cy, p.cx):
                        continue
                    # Copied, never changed in place: read() builds from the arrays it took
                    # under the lock, outside it, while this thread paints the next call
                    # (changed in place, a build saw a known mask and pixels of two moments).
                    old = self._chunks.get((p.cy, p.cx))
                    if old is None:
                        lat, ok = np.zeros((n, n, 3), np.float32), np.zeros((n, n), bool)
                    else:
                        lat, ok = old[0].copy(), old[1].copy()
                    lat[p.chunk] = rgb[p.out]
                    ok[p.chunk] = True
                    self._chunks[(p.cy, p.cx)] = (lat, ok)
                touched.add((p.cy, p.cx))
        with self._lock:
            self.painted += 1
            self._changes += 1
            self._forget_reads(touched)
        return touched

    def drop(self, cy: int, cx: int) -> None:
        """Chunk ``(0, cy, cx)`` is finished: its preview is no longer shown."""
        with self._lock:
            if self._chunks.pop((cy, cx), None) is not None:
                self._changes += 1
                self._forget_reads({(cy, cx)})

    def _forget_reads(self, chunks: set[tuple[int, int]]) -> None:
        for cy, cx in chunks:
            for k in range(len(self.level_shapes)):
                self._read_cache.pop((k, cy >> k, cx >> k), None)

    def read(self, level: int, cy: int, cx: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Preview of chunk ``(level, cy, cx)``: ``(rgb (h, w, 3) uint8, known (h, w) bool)``
        over the chunk's pixels (``rgb`` is the grey :func:`checker` where not ``known``), or
        ``None`` when no level-0 chunk under it has a preview.
        Level-0 latents are repeated ``f`` times (levels finer than ``f``) or area-averaged."""
        key = (level, cy, cx)
        with self._lock:
            if key in self._read_cache:
                return self._read_cache[key]
            changes = self._changes
            d = 1 << level
            under = [
                (k, v)
                for k, v in self._chunks.items()
                if cy * d <= k[0] < (cy + 1) * d and cx * d <= k[1] < (cx + 1) * d
            ]
        result = self._build(level, cy, cx, under) if under else None
        with self._lock:
            if self._changes == changes:
                self._read_cache[key] = result
        return result

    def _build(self, level: int, cy: int, cx: int, under: list) -> tuple[np.ndarray, np.ndarray]:
        c, f, n = self.chunk_px, self.factor, self.n
        H, W = self.level_shapes[level]
        h, w = min(c, H - cy * c), min(c, W - cx * c)
        d = 1 << level
        if d <= f:  # each latent covers (f / d)^2 px of this level: mark, then repeat
            r = f // d
            side = n * r  # px of this level per level-0 chunk
            out = np.zeros((c, c, 3), np.uint8)
            known = np.zeros((c, c), bool)
            for (ky, kx), (lat, ok) in under:
                oy, ox = (ky - cy * d) * side, (kx - cx * d) * side
                # the checker's squares (CHECKER_PX, a multiple of r) sampled once per latent
                mark = checker(cy * c + oy, cx * c + ox, side, side)[::r, ::r]
                small = np.rint((1 - PREVIEW_MARK) * lat + PREVIEW_MARK * mark)
                small = np.clip(small, 0, 255).astype(np.uint8)
                out[oy : oy + side, ox : ox + side] = small.repeat(r, 0).repeat(r, 1)
                known[oy : oy + side, ox : ox + side] = ok.repeat(r, 0).repeat(r, 1)
        else:  # each px of this level averages (d / f)^2 latents
            r = d // f
            sums = np.zeros((c, c, 3), np.float64)
            counts = np.zeros((c, c), np.int64)
            for (ky, kx), (lat, ok) in under:
                gy = ((ky - cy * d) * n + np.arange(n)) // r  # this level's px of each latent
                gx = ((kx - cx * d) * n + np.arange(n)) // r
                idx = (gy[:, None] * c + gx[None, :])[ok]
                counts += np.bincount(idx, minlength=c * c).reshape(c, c)
                for ch in range(3):
                    sums[..., ch] += np.bincount(
                        idx, weights=lat[..., ch][ok], minlength=c * c
                    ).reshape(c, c)
            known = counts > 0
            rgb = sums / np.maximum(counts, 1)[..., None]
            marked = (1 - PREVIEW_MARK) * rgb + PREVIEW_MARK * checker(cy * c, cx * c, c, c)
            out = np.clip(np.rint(marked), 0, 255).astype(np.uint8)
        # the checker where no estimate is known: the picture is copied whole at each slice
        if not known.all():
            np.copyto(out, checker(cy * c, cx * c, c, c), where=~known[..., None])
        return out[:h, :w], known[:h, :w]
