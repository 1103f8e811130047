"""Inpainted real slides: the untouched real file plus an edit store, read as one pyramid.

The real slide is only ever read. Edits go to the edit store (the real slide's pyramid
geometry; per level the synthetic RGB and a mask of where it applies): a composite pixel is
the edit where the mask is set, else the real pixel, so outside every mask the composite is
the real slide bit for bit. An edit store records a fingerprint of its real slide
(:func:`slide_fingerprint`) and refuses any other. Edit records are appended under the
store's lock (concurrent inpaints keep every record).

Coarse levels: an edited level-``k`` pixel is the area average of the level-0 *composite* over
its ``d x d`` block, marked edited when any pixel of the block is; unedited blocks come from
the real file's own level.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import math
import os
import uuid
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from napari_cytosyn.chunk_grid import chunk_range, downsample_area, pieces
from napari_cytosyn.pixel_size import PixelSize

from .store import SlideStore, StoreError, StoreMismatchError, read_store_attrs
from .store_io import stored_json

KIND = "edit-store"
_TILE_PX = 2048  # level-0 px per side processed at once when refreshing coarse levels


class PendingEdit(NamedTuple):
    """An inpainting edit computed and not yet written (:meth:`CompositeSlide.make_edit`):
    its record, the context's pixels ``rgb`` ``(h, w, 3)`` uint8 and ``mask`` ``(h, w)`` bool."""

    record: dict[str, Any]
    rgb: np.ndarray
    mask: np.ndarray


class CompositeSlide:
    """A real slide with inpainted edits, exposed with the ``Slide`` reading surface; ``kind``
    is ``"composite"`` (the slide contract, :mod:`~napari_cytosyn.slide.kinds`).

    Parameters
    ----------
    real_slide: a ``Slide`` from :func:`napari_cytosyn.slide.open_slide`, or a path to one.
    edit_store: directory of the edit store; created when absent, opened (and checked to
        belong to ``real_slide``) when present.
    chunk_px: chunking of a new edit store.
    overwrite: replace an existing edit store (its edits are lost).
    """

    kind = "composite"

    def __init__(
        self,
        real_slide: Any,
        edit_store: str | os.PathLike,
        chunk_px: int = 512,
        overwrite: bool = False,
    ) -> None:
        if isinstance(real_slide, str | os.PathLike):
            from .real import open_slide

            real_slide = open_slide(real_slide)
        self.real = real_slide
        edit_store = Path(edit_store)
        source = {
            "name": real_slide.name,
            "path": str(Path(real_slide.path).resolve()),
            "level_shapes": [[int(h), int(w)] for h, w in real_slide.level_shapes],
            "mpp": real_slide.mpp.to_list() if real_slide.mpp else None,
            "fingerprint": slide_fingerprint(real_slide.path),
        }
        if Path(edit_store).resolve() == Path(real_slide.path).resolve():
            raise StoreError("the edit store must not be the real slide itself")
        if read_store_attrs(edit_store) is not None and not overwrite:
            self.store = SlideStore.open(edit_store, KIND)
            try:
                _check_source(edit_store, self.store.attrs["source"], source)
            except BaseException:
                self.store.close()
                raise
        else:
            self.store = SlideStore.create(
                edit_store,
                KIND,
                [tuple(s) for s in real_slide.level_shapes],
                chunk_px,
                {"source": source, "edits": []},
                overwrite=overwrite,
                masks=True,
            )

    def close(self) -> None:
        """Release the edit store (other processes may then replace it)."""
        self.store.close()

    # -- the Slide surface ----------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self.store.path

    @property
    def name(self) -> str:
        return f"{self.real.name} (edited)"

    @property
    def level_shapes(self) -> list[tuple[int, int]]:
        return [tuple(s) for s in self.real.level_shapes]

    @property
    def downsamples(self) -> list[float]:
        return list(self.real.downsamples)

    @property
    def mpp(self) -> PixelSize | None:
        return self.real.mpp

    @property
    def objective_power(self) -> float | None:
        return self.real.objective_power

    @property
    def edits(self) -> list[dict[str, Any]]:
        """The edits applied so far (region, model, settings, time), oldest first (as on disk:
        edits made meanwhile by other processes included)."""
        return list(self.store.reload_attrs().get("edits", []))

    def metadata(self) -> dict[str, Any]:
        """JSON-able description of the real slide and the edits."""
        return {
            "source": self.store.attrs["source"],
            "edit_store": str(self.store.path),
            "edits": self.edits,
            "real": self.real.metadata(),
        }

    def provenance(self, checksum_source: bool = True) -> dict[str, Any]:
        """Provenance of an export: the real slide (name, path and, unless ``checksum_source``
        is false or the file is gone, its SHA-256), the last edit's model, seed and recipe,
        and every edit."""
        from .provenance import build_provenance

        edits = self.edits
        last = edits[-1] if edits else {}
        source = self.store.attrs["source"]
        recipe = last.get("recipe") or {}
        path = source.get("path")
        return build_provenance(
            model=recipe.get("model"),
            seed=recipe.get("core", {}).get("seed"),
            sampler=recipe or None,
            source_path=path,
            source_name=Path(path).name if path else source.get("name"),
            checksum_source=checksum_source and bool(path) and Path(path).exists(),
            extra={
                "synthetic": {
                    "kind": "composite",
                    "fully_synthetic": False,
                    "mask": "labels/synthetic (OME-Zarr); TIFF: <stem>.synthetic-mask.tif and "
                    "<stem>.synthetic.geojson beside the file, or the OME image "
                    "'synthetic mask'",
                    "edits": edits,
                    "edit_store": str(self.path),
                }
            },
        )

    def synthetic_mask(self, level: int) -> Any:
        """``(h, w)`` bool dask array of ``level``: True where an edit replaced the pixel."""
        return self._mask_level(level, len(self.edits))

    def finished_levels(
        self, render_missing: bool = False, progress: Any = None, cancel: Any = None
    ) -> list:
        """The composite levels (:attr:`levels`): every edit is finished when recorded."""
        return self.levels

    def _factor(self, level: int) -> int:
        return max(1, round(self.real.downsamples[level]))

    def _edited_chunks(self, level: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        shape = self.store.level_shapes[level]
        rows, cols = chunk_range(shape, self.store.chunk_px, y0, x0, y1, x1)
        return self.store.completion(level).grid[rows.start : rows.stop, cols.start : cols.stop]

    def read_edits(
        self, level: int, y: int, x: int, h: int, w: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Edit RGB ``(h, w, 3)`` uint8 and mask ``(h, w)`` bool over a region inside the level,
        or ``None`` when no edit touches it."""
        if not self._edited_chunks(level, y, y + h, x, x + w).any():
            return None
        rgb, mask = self.store.read_region(level, y, x, h, w)
        return rgb, mask.astype(bool)

    def mask_region(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        """``(h, w)`` bool: where the composite shows synthetic pixels (inside the level)."""
        edits = self.read_edits(level, y, x, h, w)
        return np.zeros((h, w), dtype=bool) if edits is None else edits[1]

    def read_region(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Composite pixels ``(h, w, 3)`` uint8; outside the level white, like the real slide."""
        out = self.real.read_region(level, y, x, h, w)
        H, W = self.level_shapes[level]
        y0, x0, y1, x1 = max(0, y), max(0, x), min(H, y + h), min(W, x + w)
        if y1 > y0 and x1 > x0:
            self._overlay(out[y0 - y : y1 - y, x0 - x : x1 - x], level, y0, x0, copy=False)
        return out

    def _overlay(self, real: np.ndarray, level: int, y: int, x: int, copy: bool) -> np.ndarray:
        """``real`` (the real pixels of an in-bounds region at ``(y, x)``) with the edits pasted
        over it: in place, or in a copy when ``copy`` (``real`` itself when nothing is edited)."""
        edits = self.read_edits(level, y, x, *real.shape[:2])
        if edits is None:
            return real
        out = np.array(real, copy=True) if copy else real
        np.copyto(out, edits[0], where=edits[1][..., None])
        return out

    def _compose_block(self, block: np.ndarray, level: int, block_info=None) -> np.ndarray:
        (y0, _), (x0, _), _ = block_info[0]["array-location"]
        return self._overlay(block, level, y0, x0, copy=True)

    @property
    def levels(self) -> list:
        """Dask arrays ``(h_k, w_k, 3)`` uint8, chunked like the real slide's; a block reads the
        real slide and overlays the edits (blocks without edits are the real blocks)."""
        n = len(self.edits)
        return [
            real.map_blocks(
                self._compose_block,
                level=k,
                dtype=np.uint8,
                name=f"composite-{id(self):x}-{n}-{k}",
                meta=np.empty((0, 0, 0), np.uint8),
            )
            for k, real in enumerate(self.real.levels)
        ]

    @property
    def mask_levels(self) -> list:
        """Dask arrays ``(h_k, w_k)`` bool per level: where the composite is synthetic."""
        n = len(self.edits)
        return [self._mask_level(k, n) for k in range(self.store.n_levels)]

    def _mask_level(self, level: int, n_edits: int) -> Any:
        import dask.array as da

        return da.from_array(
            self.store.mask_array(level),
            chunks=(self.store.chunk_px,) * 2,
            name=f"composite-mask-{id(self):x}-{n_edits}-{level}",
            asarray=True,
            lock=False,
        ).astype(bool)

    def thumbnail(self, max_px: int = 1024) -> np.ndarray:
        """``(h, w, 3)`` uint8, longer side <= ``max_px`` (``chunk_grid.thumbnail``)."""
        from napari_cytosyn.chunk_grid import thumbnail

        return thumbnail(self.read_region, self.level_shapes, max_px)

    # -- editing --------------------------------------------------------------------------

    def inpaint(
        self,
        region: tuple[int, int, int, int],
        mask: np.ndarray,
        model: Any,
        settings: Any = None,
        progress: Any = None,
        cancel: Any = None,
        halo_px: int | None = None,
        slide_mpp: PixelSize | float | None = None,
        max_side_px: int = 8192,
        reference: Any = "auto",
        ring_um: float | None = None,
    ) -> dict[str, Any]:
        """Replace the pixels under ``mask`` by synthetic tissue that blends with the context.

        Parameters
        ----------
        region: ``(y, x, h, w)`` of the mask in level-0 px of the real slide.
        mask: ``(h, w)`` bool, True where to synthesize.
        model: a ``LatentDiffusionModel``; the context is resampled to its ``mpp`` and the
            result back.
        settings: ``SamplerSettings``; ``progress``, ``cancel``: as ``sampling.inpaint``.
        halo_px: context around the mask's bounding box in level-0 px (default one model tile).
        slide_mpp: the real slide's level-0 pixel size overriding the file's (default: the
            file's, else the model's); pixels must be square (one resampling factor).
        max_side_px: refuse contexts larger than this at model resolution.
        reference: what a conditional model generates tissue like: ``"auto"`` (the real tissue
            in a ring of ``ring_um`` around the mask for a conditional model, nothing for an
            unconditional one), ``"surround"``, ``"none"`` or a level-0 rectangle
            ``(y, x, h, w)`` (:func:`~.reference.inpaint_condition`); recorded, never its pixels.
        ring_um: width of that ring in um (default one model tile).

        Returns the edit's record (also appended to :attr:`edits`). :meth:`make_edit` and
        :meth:`write_edit` are its two halves.
        """
        edit = self.make_edit(
            region, mask, model, settings, progress, cancel, halo_px, slide_mpp, max_side_px,
            reference, ring_um,
        )  # fmt: skip
        return self.write_edit(edit, cancel)

    def make_edit(
        self,
        region: tuple[int, int, int, int],
        mask: np.ndarray,
        model: Any,
        settings: Any = None,
        progress: Any = None,
        cancel: Any = None,
        halo_px: int | None = None,
        slide_mpp: PixelSize | float | None = None,
        max_side_px: int = 8192,
        reference: Any = "auto",
        ring_um: float | None = None,
    ) -> PendingEdit:
        """The edit :meth:`inpaint` makes (same arguments), computed and not written: it only
        reads, so a cancelled job may leave it running to its next Cancel check."""
        from napari_cytosyn.sampling import SamplerSettings, make_recipe, resolve_settings
        from napari_cytosyn.sampling import inpaint as sample_inpaint
        from napari_cytosyn.sampling.settings import check_cancel

        # The edit records how its networks ran ("auto" resolved for this model and machine).
        settings = resolve_settings(settings if settings is not None else SamplerSettings(), model)
        y, x, h, w = (int(v) for v in region)
        mask = np.asarray(mask)
        H0, W0 = self.level_shapes[0]
        if mask.dtype != bool:
            raise TypeError(f"mask must be a bool array, got {mask.dtype}")
        if mask.shape != (h, w):
            raise ValueError(f"mask shape {mask.shape} does not match region size {(h, w)}")
        if h <= 0 or w <= 0:
            raise ValueError(f"region size must be positive, got h={h} w={w}")
        if y < 0 or x < 0 or y + h > H0 or x + w > W0:
            raise ValueError(
                f"region y={y} x={x} h={h} w={w} extends outside the slide ({H0} x {W0} px); "
                "crop the mask to the slide"
            )
        if not mask.any():
            raise ValueError("the mask is empty: nothing to inpaint")
        check_cancel(cancel)
        rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
        by0, by1 = y + int(rows[0]), y + int(rows[-1]) + 1
        bx0, bx1 = x + int(cols[0]), x + int(cols[-1]) + 1

        size = PixelSize.from_any(slide_mpp) or self.real.mpp or PixelSize.square(float(model.mpp))
        mpp = size.side_um("inpainting")  # one resampling factor for both axes
        factor = float(model.mpp) / float(mpp)  # slide px per model px
        halo = int(halo_px) if halo_px is not None else math.ceil(model.tile_px * factor)
        # Align the context to whole latents at the model's resolution where the slide allows
        # (an integer number of slide px per model px), so resampling and encoding agree.
        unit = round(factor * model.latent_factor) if abs(factor - round(factor)) < 1e-3 else 1
        unit = max(1, unit)
        cy0, cy1 = max(0, (by0 - halo) // unit * unit), min(H0, -(-(by1 + halo) // unit) * unit)
        cx0, cx1 = max(0, (bx0 - halo) // unit * unit), min(W0, -(-(bx1 + halo) // unit) * unit)
        ch, cw = cy1 - cy0, cx1 - cx0
        model_side = max(ch, cw) / factor
        if model_side > max_side_px:
            raise ValueError(
                f"the mask needs a {ch} x {cw} px context ({model_side:.0f} px a side at the "
                f"model's {model.mpp} um/px), over the {max_side_px} px limit; inpaint smaller "
                "regions one at a time"
            )

        context = self.read_region(0, cy0, cx0, ch, cw)
        ctx_mask = np.zeros((ch, cw), dtype=bool)
        ctx_mask[y - cy0 : y - cy0 + h, x - cx0 : x - cx0 + w] = mask
        # Cancel acts between the steps before the sampler (each may take seconds on a busy
        # machine: this job runs at a lowered priority), not only inside its network calls.
        check_cancel(cancel)
        img_m, mask_m = _to_model(context, ctx_mask, factor)
        check_cancel(cancel)
        from napari_cytosyn.sampling.conditioning import recipe_settings

        from .reference import inpaint_condition

        cond, ref_record = inpaint_condition(
            model, self.real, reference, (cy0, cx0, ch, cw), (y, x, h, w), mask, ring_um, cancel
        )
        settings = recipe_settings(settings, conditioned=cond is not None)
        out_m = sample_inpaint(
            model, img_m, mask_m, settings, progress=progress, cancel=cancel, cond=cond
        )
        out = _from_model(np.asarray(out_m, dtype=np.uint8), (ch, cw), factor)

        record = {
            "id": uuid.uuid4().hex[:12],
            "region": [y, x, h, w],
            "bbox": [by0, bx0, by1 - by0, bx1 - bx0],
            "context": [cy0, cx0, ch, cw],
            "model_px": [int(img_m.shape[0]), int(img_m.shape[1])],
            "mask_px": int(mask.sum()),
            "slide_mpp": float(mpp),
            "model_mpp": float(model.mpp),
            "recipe": stored_json(make_recipe(model, settings, "inpaint")),
            "time_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
        if ref_record is not None:
            record["reference"] = stored_json(ref_record)
        return PendingEdit(record, out, ctx_mask)

    def write_edit(self, edit: PendingEdit, cancel: Any = None) -> dict[str, Any]:
        """Write an edit of :meth:`make_edit` into the edit store and append its record to
        :attr:`edits`; returns the record. ``cancel`` is checked first: after that, all of it
        is written."""
        from napari_cytosyn.sampling.settings import check_cancel

        check_cancel(cancel)
        record = edit.record
        cy0, cx0 = record["context"][:2]
        by0, bx0, bh, bw = record["bbox"]
        # One edit at a time writes (threads and processes): merges read, modify and write,
        # from the records on disk (another process may have edited since we opened).
        with self.store.lock:
            self.store.refresh()
            # The edit's own pixels, kept so that it can be removed later (the merged levels
            # hold only the newest edit where edits overlap).
            self._save_edit_pixels(record["id"], edit.rgb, edit.mask)
            self._merge(0, cy0, cx0, edit.rgb, edit.mask)
            self._refresh_levels(by0, by0 + bh, bx0, bx0 + bw)
            self.store.update_attrs(
                lambda attrs: {**attrs, "edits": [*attrs.get("edits", []), record]}
            )
        return record

    def _save_edit_pixels(self, edit_id: str, rgb: np.ndarray, mask: np.ndarray) -> None:
        c = self.store.chunk_px
        h, w = mask.shape
        for name, data in (("rgb", rgb), ("mask", mask.astype(np.uint8))):
            arr = self.store.root.create_array(
                f"edit_pixels/{edit_id}/{name}",
                shape=data.shape,
                chunks=(min(c, h), min(c, w), *data.shape[2:]),
                dtype="uint8",
                fill_value=0,
            )
            arr[...] = data

    def _edit_pixels(self, record: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        key = f"edit_pixels/{record.get('id')}"
        if "id" not in record or key not in self.store.root:
            raise StoreError(
                f"{self.path}: edit made at {record.get('time_utc')} has no stored pixels; it "
                "cannot be removed on its own (start a new edit store)"
            )
        return (
            np.asarray(self.store.root[f"{key}/rgb"][...]),
            np.asarray(self.store.root[f"{key}/mask"][...]).astype(bool),
        )

    def remove_edit(self, index: int) -> dict[str, Any]:
        """Remove edit ``index`` (oldest first, as in :attr:`edits`); returns its record.

        The pixels it covered show the real slide again, or the other edits that cover them
        (replayed oldest first from their stored pixels); with every edit removed the composite
        is the real slide, bit for bit, at every level.
        """
        with self.store.lock:
            edits = self.edits
            if not -len(edits) <= index < len(edits):
                raise IndexError(f"{self.name} has {len(edits)} edit(s), no edit {index}")
            record = edits.pop(index)
            cy0, cx0, ch, cw = record["context"]
            self._edit_pixels(record)  # refuse before changing anything
            # Level 0: clear the removed edit's context, replay the others over it.
            self._clear(0, cy0, cx0, cy0 + ch, cx0 + cw)
            for other in edits:
                oy, ox, oh, ow = other["context"]
                y0, x0 = max(oy, cy0), max(ox, cx0)
                y1, x1 = min(oy + oh, cy0 + ch), min(ox + ow, cx0 + cw)
                if y1 <= y0 or x1 <= x0:
                    continue
                rgb, mask = self._edit_pixels(other)
                sl = (slice(y0 - oy, y1 - oy), slice(x0 - ox, x1 - ox))
                self._merge(0, y0, x0, rgb[sl], mask[sl])
            # Coarse levels: clear the blocks over the context and recompute them from level 0.
            for k in range(1, len(self.level_shapes)):
                ky0, ky1, kx0, kx1 = self._level_box(k, cy0, cy0 + ch, cx0, cx0 + cw)
                self._clear(k, ky0, kx0, ky1, kx1)
            self._refresh_levels(cy0, cy0 + ch, cx0, cx0 + cw)
            group = f"edit_pixels/{record['id']}"
            if group in self.store.root:
                del self.store.root[group]
            self.store.update_attrs(lambda attrs: {**attrs, "edits": edits})
        return record

    def _clear(self, level: int, y0: int, x0: int, y1: int, x1: int) -> None:
        """Unset the mask (and reset the pixels) of ``level`` over ``[y0, y1) x [x0, x1)``."""
        if y1 <= y0 or x1 <= x0:
            return
        shape, c = self.store.level_shapes[level], self.store.chunk_px
        for p in pieces(shape, c, y0, x0, y1 - y0, x1 - x0):
            if not self.store.is_done(level, p.cy, p.cx):
                continue
            rgb, mask = self.store.read_chunk_and_mask(level, p.cy, p.cx)
            rgb[p.chunk] = 255
            mask[p.chunk] = 0
            self.store.write_chunk(level, p.cy, p.cx, rgb, mask)

    def _merge(self, level: int, y0: int, x0: int, rgb: np.ndarray, mask: np.ndarray) -> None:
        """Merge ``rgb`` where ``mask`` into ``level`` of the edit store, chunk by chunk."""
        h, w = mask.shape
        for p in pieces(self.store.level_shapes[level], self.store.chunk_px, y0, x0, h, w):
            m = mask[p.out]
            if not m.any():
                continue
            old_rgb, old_mask = self.store.read_chunk_and_mask(level, p.cy, p.cx)
            old_rgb[p.chunk] = np.where(m[..., None], rgb[p.out], old_rgb[p.chunk])
            old_mask[p.chunk] = np.maximum(old_mask[p.chunk], m.astype(np.uint8))
            self.store.write_chunk(level, p.cy, p.cx, old_rgb, old_mask)

    def _level_box(self, k: int, y0: int, y1: int, x0: int, x1: int) -> tuple[int, ...]:
        """The level-``k`` box ``(ky0, ky1, kx0, kx1)`` of blocks over a level-0 box."""
        d = self._factor(k)
        hk, wk = self.level_shapes[k]
        return y0 // d, min(hk, -(-y1 // d)), x0 // d, min(wk, -(-x1 // d))

    def _refresh_levels(self, by0: int, by1: int, bx0: int, bx1: int) -> None:
        """Recompute coarse-level edits over the level-0 box ``[by0, by1) x [bx0, bx1)``."""
        H0, W0 = self.level_shapes[0]
        for k in range(1, len(self.level_shapes)):
            d = self._factor(k)
            ky0, ky1, kx0, kx1 = self._level_box(k, by0, by1, bx0, bx1)
            step = max(1, _TILE_PX // d)
            for ty in range(ky0, ky1, step):
                for tx in range(kx0, kx1, step):
                    th, tw = min(step, ky1 - ty), min(step, kx1 - tx)
                    ly0, lx0 = ty * d, tx * d
                    lh, lw = min(th * d, H0 - ly0), min(tw * d, W0 - lx0)
                    if lh <= 0 or lw <= 0:
                        continue
                    mask0 = self.mask_region(0, ly0, lx0, lh, lw)
                    if not mask0.any():
                        continue
                    comp0 = self.read_region(0, ly0, lx0, lh, lw)
                    rgb = downsample_area(comp0, d)[:th, :tw]
                    m = downsample_area(mask0.astype(np.uint8), d)[:th, :tw] > 0
                    # The d x d block of a ceil-rounded average may reach past a floor-rounded
                    # level: only pixels that exist in the level are written.
                    self._merge(k, ty, tx, rgb, m)


def slide_fingerprint(path: str | os.PathLike) -> str:
    """A SHA-256 fingerprint of a slide file (or folder) that is cheap for multi-GB slides.

    Hashes the size of every file and 64 KiB blocks at 64 evenly spaced offsets of each of the
    (at most 256) largest files, plus every small metadata file whole: two different scans
    differ, the same file copied elsewhere is the same slide.
    """
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    sizes = {f: f.stat().st_size for f in files}
    sampled = set(sorted(files, key=lambda f: -sizes[f])[:256])
    for f in files:
        digest.update(f"{f.relative_to(path) if path.is_dir() else ''}\0{sizes[f]}\0".encode())
        if f not in sampled:
            continue
        with open(f, "rb") as fh:
            if sizes[f] <= 4 * 2**20:
                digest.update(fh.read())
                continue
            for i in range(64):
                fh.seek(i * (sizes[f] - 2**16) // 63)
                digest.update(fh.read(2**16))
    return digest.hexdigest()


def _check_source(store: Path, stored: dict[str, Any], given: dict[str, Any]) -> None:
    """An edit store is used only with the slide it was made for."""
    if stored["level_shapes"] != given["level_shapes"]:
        raise StoreMismatchError(
            f"{store} holds edits of {stored['name']!r} with level shapes "
            f"{stored['level_shapes']}, not of {given['name']!r} {given['level_shapes']}; use "
            "another edit store"
        )
    if stored.get("fingerprint") != given["fingerprint"]:
        raise StoreMismatchError(
            f"{store} holds edits of {stored['name']!r} ({stored['path']}), not of "
            f"{given['path']}: the slides differ (fingerprint {stored.get('fingerprint')} vs "
            f"{given['fingerprint']}); use another edit store"
        )


def _to_model(rgb: np.ndarray, mask: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Resample slide px to model px (``factor`` slide px per model px)."""
    if abs(factor - 1.0) < 1e-3:
        return rgb, mask
    if abs(factor - round(factor)) < 1e-3 and factor > 1:
        d = round(factor)
        return downsample_area(rgb, d), downsample_area(mask.astype(np.uint8), d) > 0
    from skimage.transform import resize

    shape = (max(1, round(rgb.shape[0] / factor)), max(1, round(rgb.shape[1] / factor)))
    img = resize(rgb, shape, order=1, anti_aliasing=factor > 1, preserve_range=True)
    m = resize(mask.astype(np.float32), shape, order=1, anti_aliasing=False) > 0
    return (img + 0.5).astype(np.uint8), m


def _from_model(rgb: np.ndarray, shape: tuple[int, int], factor: float) -> np.ndarray:
    """Resample model px back to a slide-px array of ``shape``."""
    if rgb.shape[:2] == shape:
        return rgb
    from skimage.transform import resize

    img = resize(rgb, shape, order=1, anti_aliasing=factor < 1, preserve_range=True)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)
