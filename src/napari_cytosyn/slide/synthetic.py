"""Synthetic slides: a recipe plus a store, generated chunk by chunk where they are looked at.

A :class:`SyntheticSlide` of any size exists once created (its store holds only metadata). A
level-0 chunk is rendered by the sampling engine's lazy mode (bit-identical whatever the order
of requests), written, then marked done; a level-``k`` chunk is the area average of its
children, built when the last child is finished. Two threads asking for one chunk compute it
once.
"""

from __future__ import annotations

import contextlib
import os
import threading
import uuid
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from napari_cytosyn.chunk_grid import (
    build_parent_chunk,
    child_chunks,
    chunk_range,
    level_shapes,
    pieces,
)
from napari_cytosyn.pixel_size import PixelSize
from napari_cytosyn.sampling.settings import ThreadValue

from .render_ahead import BATCH_CHUNKS, stream_ahead
from .store import (
    ChunkDamagedError,
    SlideStore,
    StoreDamagedError,
    StoreError,
    StoreMismatchError,
)
from .store_io import IncompleteSlideError, stored_json

KIND = "synthetic-slide"
MAX_SIDE_PX = 10_000_000  # 10 Mpx a side (5 m of tissue at 0.5 um/px): beyond is a typo
WHITE = 255
_ROWS_PER_SCAN = 64  # chunk rows of the completion map scanned at once by iter_missing

ChunkKey = tuple[int, int, int]  # (level, cy, cx)

_CANCEL = ThreadValue()  # the cancel flag of this thread's chunk renders


def cancel_scope(cancel: Any) -> contextlib.AbstractContextManager[None]:
    """Within the block, chunks rendered by this thread check ``cancel`` (``.is_set()``)
    between model calls and raise ``Cancelled`` when it is set: a chunk in flight stops within
    one model batch instead of finishing. Nothing of a cancelled chunk is written."""
    return _CANCEL.scope(cancel)


current_cancel = _CANCEL.get  # the flag of this thread's innermost cancel_scope, or None


class SyntheticSlide:
    """A lazily generated slide in a :class:`~.store.SlideStore` (``kind`` ``"synthetic"``):
    the reading surface of a real ``Slide`` plus generation (:meth:`ensure_chunk`,
    :meth:`missing_chunks`, :meth:`render_all`)."""

    kind = "synthetic"

    def __init__(
        self,
        store: SlideStore,
        renderer: DiffusionChunkRenderer | Callable[[], DiffusionChunkRenderer] | None,
    ) -> None:
        self.store = store
        self._renderer = renderer
        self._tissue = (
            np.asarray(store.open_array("tissue_mask")[...], dtype=bool)
            if store.attrs.get("tissue_mask")
            else None
        )
        self._listeners: list[Callable[[int, int, int], None]] = []
        self.compute_count = 0  # level-0 chunks rendered by this object (not read back)
        self._count_lock = threading.Lock()
        self._token = uuid.uuid4().hex[:12]
        self._dask_cache: dict[tuple[int, bool], Any] = {}

    # -- creation -------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        store: str | os.PathLike,
        model: Any,
        width: int | None,
        height: int | None,
        settings: Any = None,
        tissue_mask: np.ndarray | None = None,
        chunk_px: int = 512,
        overwrite: bool = False,
        lazy: dict[str, Any] | None = None,
        reference: Any = None,
        reference_grid_um: float | None = None,
    ) -> SyntheticSlide:
        """Create a synthetic slide; instant whatever its size (nothing is generated yet).

        Parameters
        ----------
        store: directory of the store to create.
        model: a ``LatentDiffusionModel`` (its ``mpp`` becomes the slide's).
        width, height: level-0 size in px at the model's mpp.
        settings: ``SamplerSettings`` (engine defaults when ``None``), seed included.
        tissue_mask: optional ``(h, w)`` bool at any resolution covering the slide: tissue only
            where True, white elsewhere.
        chunk_px: chunk size in px of the slide and its store.
        overwrite: replace an existing store of ours at ``store``.
        lazy: extra ``LazySpec`` fields (``phase_times``, ``blend_steps``, ...); the model's
            own defaults first (``lazy_defaults``: the frozen decode of cytosyn-tiny).
        reference: a real ``Slide`` (or path): make a synthetic twin of it. Size and tissue
            mask (unless given) come from it, and every window is conditioned on the embedding
            of the real tissue under it (its own footprint, every window of every phase; or
            interpolated on a grid of ``reference_grid_um``), stored with the slide
            (:mod:`~.reference`). Needs a conditional model.
        """
        from napari_cytosyn.sampling import (
            LazySpec,
            SamplerSettings,
            make_recipe,
        )
        from napari_cytosyn.sampling.conditioning import recipe_settings
        from napari_cytosyn.sampling.lazy import lazy_defaults
        from napari_cytosyn.sampling.precision import resolve_autocast

        if settings is not None and not isinstance(settings, SamplerSettings):
            raise TypeError(
                f"settings must be a SamplerSettings (the seed is settings.seed), got {settings!r}"
            )
        if chunk_px % model.latent_factor:
            raise ValueError(
                f"chunk_px={chunk_px} must be a multiple of the model's latent factor "
                f"{model.latent_factor}"
            )
        # The recipe stores how the networks run ("auto" resolved): alike on every machine. A lazy
        # slide decodes as its LazySpec says (decode_norm), so the region DecodeConfig, which a
        # lazy recipe does not store, is left as it is.
        settings = settings if settings is not None else SamplerSettings()
        settings = settings.replace(autocast=resolve_autocast(settings.autocast, model))
        settings = recipe_settings(settings, conditioned=reference is not None)
        lazy = {**lazy_defaults(model), **(lazy or {})}
        spec = LazySpec(settings=settings, chunk_px=int(chunk_px), **lazy)
        fields = None
        if reference is not None:
            from .reference import twin_inputs

            # embedding the windows is a long job: it stops when the caller's cancel_scope is set
            (th, tw), tissue_mask, fields, ref_record = twin_inputs(
                model,
                reference,
                store,
                spec,
                tissue_mask,
                reference_grid_um,
                cancel=current_cancel(),
            )
            if (width, height) not in ((None, None), (tw, th)):
                raise ValueError(
                    f"a twin of {ref_record['file']} is {tw} x {th} px at the model's "
                    f"{model.mpp} um/px; pass width=None, height=None"
                )
            width, height = tw, th
        _check_size(width, height)
        attrs = {
            "width": int(width),
            "height": int(height),
            "mpp": PixelSize.square(float(model.mpp)).to_list(),
            "recipe": stored_json(make_recipe(model, settings, "lazy", lazy=spec)),
            "tissue_mask": tissue_mask is not None,
        }
        if fields is not None:
            attrs["reference"] = stored_json(ref_record)
        mask = None
        if tissue_mask is not None:
            mask = np.asarray(tissue_mask)
            if mask.ndim != 2 or mask.size == 0:
                raise ValueError(f"tissue_mask must be a non-empty 2-D array, got {mask.shape}")
            attrs["tissue_fraction"] = float(mask.astype(bool).mean())

        def populate(root: Any) -> None:
            if mask is not None:
                root.create_array("tissue_mask", data=mask.astype(np.uint8))
            f = model.latent_factor
            root.create_array(
                "latents",
                shape=(model.latent_channels, -(-height // f), -(-width // f)),
                chunks=(model.latent_channels, chunk_px // f, chunk_px // f),
                dtype="float32",
                fill_value=0.0,
                dimension_names=["c", "y", "x"],
            )

        st = SlideStore.create(
            store,
            KIND,
            level_shapes(height, width, chunk_px),
            chunk_px,
            attrs,
            overwrite=overwrite,
            populate=populate,
        )
        cond = None
        if fields is not None:
            from .reference import save_fields, twin_condition

            save_fields(st.root, fields)
            cond = twin_condition(fields, model.latent_factor)
        return cls(st, DiffusionChunkRenderer(model, spec, _phase_cache(st), cond))

    @classmethod
    def open(
        cls,
        store: str | os.PathLike,
        model: Any = None,
        settings: Any = None,
        mode: str = "r+",
    ) -> SyntheticSlide:
        """Open an existing synthetic slide.

        ``model`` and ``settings``, when given, must match the stored recipe
        (:class:`~.store.StoreMismatchError`: chunks of two recipes never mix); without a model,
        missing chunks are generated with the model the store names, loaded on first need.
        """
        st = SlideStore.open(store, KIND, mode=mode)
        attrs = st.attrs
        try:
            _check_stored_geometry(st)
            _check_recipe(st, model, settings)
        except BaseException:
            st.close()
            raise

        def make_renderer() -> DiffusionChunkRenderer:
            m = model
            if m is None:
                from napari_cytosyn.models import load_model

                name = str(attrs["recipe"]["model"]["name"])
                if name.startswith("py:"):
                    raise StoreError(
                        f"{st.path} names the model {name!r}, which is Python code; a store "
                        "never chooses code to run: open it with the model object"
                    )
                m = load_model(name)
            spec = _lazy_spec(st)
            cond = None
            if "reference" in attrs:  # a twin: windows conditioned on the stored fields
                from .reference import load_fields, twin_condition

                cond = twin_condition(load_fields(st.root), m.latent_factor)
            return DiffusionChunkRenderer(m, spec, _phase_cache(st), cond)

        return cls(st, make_renderer if st.writable else None)

    def close(self) -> None:
        """Release the store (other processes may then replace it)."""
        self.store.close()

    # -- description --------------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self.store.path

    @property
    def name(self) -> str:
        return self.store.path.name

    @property
    def recipe(self) -> dict[str, Any]:
        """The stored recipe (:mod:`napari_cytosyn.sampling.recipe`): model, core, lazy."""
        return self.store.attrs["recipe"]

    @property
    def seed(self) -> int:
        return int(self.recipe["core"]["seed"])

    @property
    def chunk_px(self) -> int:
        return self.store.chunk_px

    @property
    def level_shapes(self) -> list[tuple[int, int]]:
        return self.store.level_shapes

    @property
    def downsamples(self) -> list[float]:
        """Level-``k`` px per level-0 px: exactly ``2**k`` (ceil-rounded factor-2 pyramid)."""
        return [2.0**k for k in range(self.store.n_levels)]

    @property
    def mpp(self) -> PixelSize:
        """Level-0 microns per pixel: the model's (square pixels)."""
        return PixelSize.from_any(self.store.attrs["mpp"])

    @property
    def objective_power(self) -> float | None:
        return round(10.0 / self.mpp.x, 1)

    def metadata(self) -> dict[str, Any]:
        """JSON-able description: the store's attributes plus progress."""
        done = self.store.completion(0)
        return {
            **stored_json(self.store.attrs),
            "path": str(self.path),
            "chunks_done": done.count(),
            "chunks_total": int(np.prod(done.shape)),
        }

    def provenance(self, checksum_source: bool = True) -> dict[str, Any]:
        """Provenance of an export: the stored recipe, size, mpp, tissue layout and a twin's
        reference (no source file is copied: ``checksum_source`` is unused)."""
        from .provenance import build_provenance

        attrs = self.store.attrs
        return build_provenance(
            model=self.recipe["model"],
            seed=self.seed,
            sampler=self.recipe,
            extra={
                "synthetic": {
                    "kind": "synthetic-slide",
                    "fully_synthetic": True,
                    "width": attrs.get("width"),
                    "height": attrs.get("height"),
                    "mpp": attrs.get("mpp"),
                    "chunk_px": attrs.get("chunk_px"),
                    "tissue_mask": attrs.get("tissue_mask"),
                    "reference": attrs.get("reference"),
                    "store": str(self.path),
                }
            },
        )

    def synthetic_mask(self, level: int) -> Any:
        """``(h, w)`` bool, all True: every pixel of a synthetic slide is generated."""
        import dask.array as da

        return da.ones(self.level_shapes[level], dtype=bool, chunks=self.chunk_px)

    def finished_levels(
        self,
        render_missing: bool = False,
        progress: Callable[[int, int], None] | None = None,
        cancel: Any = None,
    ) -> list[Any]:
        """The store's levels ``(h_k, w_k, 3)`` uint8 (verified reads), every chunk finished.

        Unrendered level-0 chunks are rendered first when ``render_missing``
        (:meth:`render_all`), else :class:`IncompleteSlideError`; missing coarse chunks are
        built from their children when the store is writable (:meth:`finish_pyramid`).
        """
        self.store.refresh()
        missing = len(self.missing_chunks(0))
        if missing and not render_missing:
            raise IncompleteSlideError(
                f"{self.path} has {missing} unrendered chunks; render them first "
                f"(napari-cytosyn render {self.path}, or export with render_missing)"
            )
        if missing:
            self.render_all(progress=progress, cancel=cancel)
        coarse = sum(len(self.missing_chunks(k)) for k in range(1, self.store.n_levels))
        if coarse and not self.store.writable:
            raise IncompleteSlideError(
                f"{self.path} has {coarse} unbuilt coarse chunks; `napari-cytosyn render "
                f"{self.path}` builds them from the finished level 0"
            )
        if coarse:
            self.finish_pyramid()
        return [self.store.level_array(k) for k in range(self.store.n_levels)]

    # -- tissue layout ------------------------------------------------------------------

    def tissue_in_chunk(self, cy: int, cx: int) -> np.ndarray | None:
        """``(h, w)`` bool tissue mask of a level-0 chunk, or ``None`` without a tissue mask."""
        y0, y1, x0, x1 = self.store.bounds(0, cy, cx)
        return self.tissue_in_region(0, y0, x0, y1 - y0, x1 - x0)

    def tissue_in_region(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray | None:
        """``(h, w)`` bool planned tissue layout over a region of any level (a level-``k`` px
        samples the mask at its level-0 position), or ``None`` without a tissue mask."""
        if self._tissue is None:
            return None
        H, W = self.level_shapes[0]
        mh, mw = self._tissue.shape
        d = 2**level
        rows = np.minimum((np.arange(y, y + h) * d * mh) // H, mh - 1)
        cols = np.minimum((np.arange(x, x + w) * d * mw) // W, mw - 1)
        return self._tissue[np.ix_(rows, cols)]

    # -- generation ---------------------------------------------------------------------

    def add_listener(self, callback: Callable[[int, int, int], None]) -> None:
        """Call ``callback(level, cy, cx)`` after every chunk this object writes."""
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[int, int, int], None]) -> None:
        self._listeners.remove(callback)

    def is_done(self, level: int, cy: int, cx: int) -> bool:
        return self.store.is_done(level, cy, cx)

    def renderer(self) -> DiffusionChunkRenderer:
        """The chunk renderer (built on first use when the slide was opened from disk)."""
        if self._renderer is None:
            raise StoreError(
                f"{self.path} was opened read-only; missing chunks cannot be generated"
            )
        if not hasattr(self._renderer, "render"):
            with self.store.lock:
                if not hasattr(self._renderer, "render"):
                    self._renderer = self._renderer()
        return self._renderer

    def ensure_chunk(self, level: int, cy: int, cx: int) -> np.ndarray:
        """Pixels of a chunk ``(h, w, 3)`` uint8, generated (once across threads) and stored if
        missing; a level-``k`` chunk generates the missing chunks below it first."""
        written: list[ChunkKey] = []
        out = self._ensure(level, cy, cx, written)
        self._cascade(written)
        return out

    def generate_chunk(self, level: int, cy: int, cx: int) -> list[ChunkKey]:
        """Make sure a chunk is finished; returns the chunks written by this call (may be [])."""
        written: list[ChunkKey] = []
        if not self.store.is_done(level, cy, cx):
            self._ensure(level, cy, cx, written)
        self._cascade(written)
        return written

    def read_finished(self, level: int, cy: int, cx: int) -> np.ndarray | None:
        """Pixels of a finished chunk, else ``None``; a damaged one is forgotten (``None``) when
        the slide can compute it again, else :class:`~.store.ChunkDamagedError`."""
        if not self.store.is_done(level, cy, cx):
            return None
        try:
            return self.store.read_chunk(level, cy, cx)
        except ChunkDamagedError as exc:
            if not self.store.writable or self._renderer is None:
                raise
            warnings.warn(f"{exc}; computing it again", RuntimeWarning, stacklevel=2)
            self.store.clear_chunk(level, cy, cx)
            return None

    def _ensure(self, level: int, cy: int, cx: int, written: list[ChunkKey]) -> np.ndarray:
        done = self.read_finished(level, cy, cx)
        if done is not None:
            return done
        with self.store.flight.hold((level, cy, cx)):
            done = self.read_finished(level, cy, cx)
            if done is not None:
                return done
            rgb = self._compute(level, cy, cx, written)
            self.store.write_chunk(level, cy, cx, rgb)
            written.append((level, cy, cx))
        self._notify(level, cy, cx)
        return rgb

    def _compute(self, level: int, cy: int, cx: int, written: list[ChunkKey]) -> np.ndarray:
        y0, y1, x0, x1 = self.store.bounds(level, cy, cx)
        if level > 0:
            children = {
                (y, x): self._ensure(level - 1, y, x, written)
                for y, x in child_chunks(self.level_shapes[level - 1], self.chunk_px, cy, cx)
            }
            return build_parent_chunk(children, self.level_shapes[level], self.chunk_px, cy, cx)
        tissue = self.tissue_in_chunk(cy, cx)
        if tissue is not None and not tissue.any():
            return np.full((y1 - y0, x1 - x0, 3), WHITE, dtype=np.uint8)
        rgb, latents = self.renderer().render(cy, cx)
        with self._count_lock:
            self.compute_count += 1
        rgb = np.ascontiguousarray(rgb[: y1 - y0, : x1 - x0])
        if tissue is not None:
            rgb = np.where(tissue[..., None], rgb, np.uint8(WHITE))
        f = self.renderer().latent_factor
        lat = self.store.root["latents"]
        ly0, lx0 = y0 // f, x0 // f
        ly1, lx1 = min(-(-y1 // f), lat.shape[1]), min(-(-x1 // f), lat.shape[2])
        lat[:, ly0:ly1, lx0:lx1] = latents[:, : ly1 - ly0, : lx1 - lx0]
        return rgb

    def _cascade(self, written: list[ChunkKey]) -> None:
        """Build parents whose children have all become finished."""
        pending = list(written)
        while pending:
            level, cy, cx = pending.pop()
            if level + 1 >= self.store.n_levels:
                continue
            py, px = cy // 2, cx // 2
            if self.store.is_done(level + 1, py, px):
                continue
            kids = child_chunks(self.level_shapes[level], self.chunk_px, py, px)
            if all(self.store.is_done(level, y, x) for y, x in kids):
                more: list[ChunkKey] = []
                self._ensure(level + 1, py, px, more)
                written.extend(more)
                pending.extend(more)

    def finish_pyramid(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Build every missing coarse-level chunk from its (finished) children; returns the count.

        Refuses (ValueError) while level-0 chunks are missing, so it never renders with a model.
        """
        self.store.refresh()
        missing0 = self.missing_chunks(0)
        if missing0:
            raise ValueError(
                f"{len(missing0)} level-0 chunks of {self.path} are still missing; render them "
                "first"
            )
        todo = [
            (k, cy, cx) for k in range(1, self.store.n_levels) for cy, cx in self.missing_chunks(k)
        ]
        for i, (k, cy, cx) in enumerate(todo):
            if not self.store.is_done(k, cy, cx):
                self.generate_chunk(k, cy, cx)
            if progress is not None:
                progress(i + 1, len(todo))
        return len(todo)

    def _notify(self, level: int, cy: int, cx: int) -> None:
        for callback in list(self._listeners):
            callback(level, cy, cx)

    def prepare_chunks(
        self, chunks: Iterable[tuple[int, int]], upcoming: Iterable[tuple[int, int]] = ()
    ) -> None:
        """Precompute in one batched pass the phase states under these level-0 chunks (their
        windows share full model batches; the chunks then only decode). ``upcoming``: chunks
        wanted next, most urgent first, whose work fills batches that would be padded.
        Finished chunks and chunks without tissue are skipped."""
        todo = self._to_render(chunks)
        if todo:
            self.renderer().prepare(todo, self._to_render(upcoming))

    def _to_render(self, chunks: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
        """The level-0 chunks among ``chunks`` that are unfinished and hold tissue."""
        todo = []
        for cy, cx in chunks:
            if self.store.is_done(0, cy, cx):
                continue
            tissue = self.tissue_in_chunk(cy, cx)
            if tissue is None or tissue.any():
                todo.append((int(cy), int(cx)))
        return todo

    def missing_chunks(
        self, level: int, region: tuple[int, int, int, int] | None = None
    ) -> list[tuple[int, int]]:
        """Unfinished chunks ``(cy, cx)`` of ``level`` intersecting ``region`` ``(y0, x0, y1, x1)``
        in level px (the whole level when ``None``), row-major."""
        ny, nx = self.store.grid(level)
        rows, cols = range(ny), range(nx)
        if region is not None:
            y0, x0, y1, x1 = region
            rows, cols = chunk_range(self.level_shapes[level], self.chunk_px, y0, x0, y1, x1)
        grid = self.store.completion(level).grid[rows.start : rows.stop, cols.start : cols.stop]
        ys, xs = np.nonzero(grid == 0)
        return [(int(y) + rows.start, int(x) + cols.start) for y, x in zip(ys, xs, strict=True)]

    def render_all(
        self,
        progress: Callable[[int, int], None] | None = None,
        cancel: Any = None,
        chunks: Iterable[tuple[int, int]] | None = None,
    ) -> int:
        """Generate every missing level-0 chunk (or the given ones) and the pyramid above.

        ``progress(done, total)`` after each chunk; ``cancel.is_set()`` between chunks raises
        ``Cancelled``. Returns the number of chunks generated.
        """
        from napari_cytosyn.sampling import Cancelled

        if chunks is not None:
            todo: Iterable[tuple[int, int]] = list(chunks)
            total = len(todo)
        else:
            todo = self.iter_missing(0)
            total = int(np.count_nonzero(self.store.completion(0).grid == 0))
        made = 0
        with cancel_scope(cancel):
            for i, ((cy, cx), ahead, upcoming) in enumerate(stream_ahead(todo, BATCH_CHUNKS)):
                if ahead:
                    self.prepare_chunks(ahead, upcoming)
                if cancel is not None and cancel.is_set():
                    raise Cancelled(f"render_all cancelled after {i} of {total} chunks")
                made += bool(self.generate_chunk(0, cy, cx))
                if progress is not None:
                    progress(i + 1, total)
        return made

    def iter_missing(self, level: int) -> Iterable[tuple[int, int]]:
        """Unfinished chunks ``(cy, cx)`` of ``level``, row-major, found a few rows at a time
        (no list of the whole grid)."""
        ny, _ = self.store.grid(level)
        for y0 in range(0, ny, _ROWS_PER_SCAN):
            rows = self.store.completion(level).grid[y0 : y0 + _ROWS_PER_SCAN]
            ys, xs = np.nonzero(rows == 0)
            for y, x in zip(ys.tolist(), xs.tolist(), strict=True):
                if not self.store.is_done(level, y0 + y, x):
                    yield y0 + y, x

    # -- reading ------------------------------------------------------------------------

    def read_region(
        self, level: int, y: int, x: int, h: int, w: int, generate: bool = True
    ) -> np.ndarray:
        """Pixels ``(h, w, 3)`` uint8 of a level; missing chunks are generated, or white when
        ``generate`` is False. The region must lie inside the level."""
        H, W = self.level_shapes[level]
        if h <= 0 or w <= 0 or y < 0 or x < 0 or y + h > H or x + w > W:
            raise ValueError(
                f"region y={y} x={x} h={h} w={w} is not inside level {level} of shape {(H, W)}"
            )
        out = np.empty((h, w, 3), dtype=np.uint8)
        for p in pieces(self.level_shapes[level], self.chunk_px, y, x, h, w):
            chunk = self.read_finished(level, p.cy, p.cx)
            if chunk is None and generate:
                chunk = self.ensure_chunk(level, p.cy, p.cx)
            out[p.out] = WHITE if chunk is None else chunk[p.chunk]
        return out

    def _dask_level(self, level: int, generate: bool):
        from ._chunk_array import chunk_array

        key = (level, generate)
        if key not in self._dask_cache:
            self._dask_cache[key] = chunk_array(
                f"synthetic-{self._token}-{level}-{'gen' if generate else 'stored'}",
                self.level_shapes[level],
                self.chunk_px,
                _ChunkReader(self, level, generate),
            )
        return self._dask_cache[key]

    @property
    def levels(self) -> list:
        """Dask arrays ``(h_k, w_k, 3)`` uint8 per level; computing a chunk reads it from the
        store or generates it when missing (for scripts and dask clusters)."""
        return [self._dask_level(k, True) for k in range(self.store.n_levels)]

    @property
    def stored_levels(self) -> list:
        """Dask arrays that read only finished chunks (white elsewhere) and never generate:
        what a viewer shows while a :class:`~.viewport.ViewportRenderer` fills them in."""
        return [self._dask_level(k, False) for k in range(self.store.n_levels)]

    def thumbnail(self, max_px: int = 1024, generate: bool = False) -> np.ndarray:
        """``(h, w, 3)`` uint8, longer side <= ``max_px``; unfinished chunks are white unless
        ``generate`` (:func:`~napari_cytosyn.chunk_grid.thumbnail`)."""
        from napari_cytosyn.chunk_grid import thumbnail

        def read(level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
            return self.read_region(level, y, x, h, w, generate=generate)

        return thumbnail(read, self.level_shapes, max_px)


class _ChunkReader:
    """Reads (or generates) one chunk of a level: the task function of the dask levels.

    Pickles as the store's path, so a dask.distributed worker reopens the slide (and loads the
    model named in the store) instead of receiving a copy of the model with every task.
    """

    def __init__(self, slide: SyntheticSlide, level: int, generate: bool) -> None:
        self.slide, self.level, self.generate = slide, level, generate

    def __call__(self, cy: int, cx: int) -> np.ndarray:
        slide = self.slide
        chunk = slide.read_finished(self.level, cy, cx)
        if chunk is not None:
            return chunk
        if self.generate:
            return slide.ensure_chunk(self.level, cy, cx)
        y0, y1, x0, x1 = slide.store.bounds(self.level, cy, cx)
        return np.full((y1 - y0, x1 - x0, 3), WHITE, dtype=np.uint8)

    def __reduce__(self):
        return (_reader_in_process, (str(self.slide.path), self.level, self.generate))


_OPEN_IN_PROCESS: dict[str, SyntheticSlide] = {}


def _reader_in_process(path: str, level: int, generate: bool) -> _ChunkReader:
    slide = _OPEN_IN_PROCESS.get(path)
    if slide is None:
        slide = _OPEN_IN_PROCESS.setdefault(path, SyntheticSlide.open(path))
    return _ChunkReader(slide, level, generate)


def _check_stored_geometry(store: SlideStore) -> None:
    """The pyramid must be the one the stored width, height and chunk size make."""
    a = store.attrs
    expected = [list(s) for s in level_shapes(int(a["height"]), int(a["width"]), store.chunk_px)]
    if [list(s) for s in store.level_shapes] != expected:
        raise StoreDamagedError(
            f"{store.path}: level shapes {store.level_shapes} do not follow from the stored "
            f"size {a['width']} x {a['height']} px; the store was edited, create it again"
        )


def _lazy_spec(store: SlideStore) -> Any:
    """The stored recipe's ``LazySpec``; a recipe this version reads differently is refused."""
    from napari_cytosyn.sampling import LazySpec, settings_of

    recipe = store.attrs["recipe"]
    try:
        spec = LazySpec.from_dict(recipe["lazy"], settings_of(recipe))
    except (KeyError, TypeError, ValueError) as e:
        raise StoreMismatchError(
            f"{store.path}: the stored recipe cannot be read by this version ({e}); create the "
            "store again"
        ) from e
    if spec.to_dict() != recipe["lazy"] or spec.settings.core_dict() != recipe["core"]:
        raise StoreMismatchError(
            f"{store.path}: this version of the sampling engine reads the stored recipe "
            "differently; the stored chunks cannot be continued, create the store again"
        )
    return spec


def _check_recipe(store: SlideStore, model: Any, settings: Any) -> None:
    """A model or settings given on open must be the recipe's (chunks never mix recipes); a
    mismatch names every differing field."""
    from napari_cytosyn.sampling.recipe import check_version, recipe_differences

    recipe = store.attrs.get("recipe")
    try:
        check_version(recipe)
    except ValueError as e:
        raise StoreMismatchError(f"{store.path}: {e}") from None
    stored: dict[str, Any] = {}
    given: dict[str, Any] = {}
    if model is not None:
        stored["model"], given["model"] = recipe["model"], stored_json(model.provenance())
    if settings is not None:
        from napari_cytosyn.sampling.conditioning import recipe_settings

        settings = recipe_settings(settings, conditioned="reference" in store.attrs)
        if settings.autocast == "auto":  # how the networks run is the slide's choice
            settings = settings.replace(autocast=recipe["core"]["autocast"])
        stored["core"], given["core"] = recipe["core"], stored_json(settings.core_dict())
    diff = recipe_differences(stored, given)
    if diff:
        raise StoreMismatchError(
            f"{store.path} was made with another recipe: {'; '.join(diff)}. Open it without a "
            "model and settings, with the same ones, or create a new store"
        )


def _check_size(width: int, height: int) -> None:
    for name, v in (("width", width), ("height", height)):
        if not isinstance(v, int | np.integer) or isinstance(v, bool):
            raise TypeError(f"{name} must be an integer number of px, got {v!r}")
        if v <= 0:
            raise ValueError(f"{name} must be at least 1 px, got {v}")
        if v > MAX_SIDE_PX:
            raise ValueError(
                f"{name} of {v} px exceeds the {MAX_SIDE_PX} px limit; check the units (px at "
                "the model's mpp, not nm)"
            )


def _phase_cache(store: SlideStore) -> Any:
    from .phase_cache import ZarrPhaseCache

    return ZarrPhaseCache(store.path / "phase_cache")


class DiffusionChunkRenderer:
    """Level-0 chunks of a synthetic slide, deterministically, from the sampling engine's lazy
    mode; ``cond``: the model's condition, or a per-window one (a twin's reference field)."""

    def __init__(self, model: Any, spec: Any, cache: Any, cond: Any = None) -> None:
        self.model, self.spec, self.cache, self.cond = model, spec, cache, cond
        self.latent_factor = int(model.latent_factor)

    def render(self, cy: int, cx: int) -> tuple[np.ndarray, np.ndarray]:
        """Chunk ``(cy, cx)``: ``(chunk_px, chunk_px, 3)`` uint8 and its final latents
        ``(C, chunk_px / f, chunk_px / f)`` float32."""
        from napari_cytosyn.sampling import final_latents, render_chunk

        rgb = render_chunk(
            self.model, self.spec, cy, cx, self.cache, cancel=current_cancel(), cond=self.cond
        )
        # The phase states are cached by now: the latents cost one more blend, not a render.
        n = int(self.spec.chunk_px) // self.latent_factor
        z = final_latents(self.model, self.spec, cy * n, cx * n, n, n, self.cache, cond=self.cond)
        return np.asarray(rgb, dtype=np.uint8), z.numpy()

    def prepare(self, chunks: list[tuple[int, int]], upcoming: list[tuple[int, int]] = ()) -> None:
        """Compute the phase states of several chunks together (fuller model batches); work
        for the ``upcoming`` chunks fills what would be padding."""
        from napari_cytosyn.sampling.lazy import prepare_chunks

        prepare_chunks(
            self.model, self.spec, chunks, self.cache, cancel=current_cancel(), upcoming=upcoming,
            cond=self.cond,
        )  # fmt: skip
