"""The dock widget's actions: what its buttons do (inpaint, edits, regions, synthetic slides,
twins, render all, export), as a mixin of :class:`~._widget.CytoSynWidget`.

Each action reads the boxes' values on the GUI thread, hands the work to a job of the viewer's
session (:meth:`~._widget.CytoSynWidget.run_job`, a worker thread) and shows the result back on
the GUI thread. The layout of the boxes, the settings and the job plumbing live in
:mod:`._widget`; the plain work functions in :mod:`.._actions`.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qtpy.QtWidgets import QFileDialog

from .. import _actions, _layers
from .._layers import later
from .._masks import DrawnMask, read_mask, world_rectangles
from .._session import format_duration
from ._jobs import Job
from ._reference_box import link_to, twin_store, twin_work


class WidgetActions:
    """The actions of the CytoSyn dock widget (a mixin: it uses the widget's boxes, session,
    ``run_job``, ``say`` and ``_guard``)."""

    # -- the selected slide -----------------------------------------------------------

    def _selected(self) -> tuple[Any, Any]:
        layer = self.edit_box.image_combo.layer()
        return layer, (_layers.slide_of(layer) if layer is not None else None)

    def _composite_of(self, layer: Any) -> Any | None:
        slide = _layers.slide_of(layer) if layer is not None else None
        if _layers.is_composite(slide):
            return slide
        path = _layers.real_path_of(layer) if layer is not None else None
        return self.session.composite_for(path) if path else None

    def _on_slide_selected(self, *args: Any) -> None:
        layer = self.edit_box.image_combo.layer()
        self.edits_box.show_edits(self._composite_of(layer))
        self.edits_box.update_buttons(not self.session.busy)
        self._update_view_note()

    def _on_edits_changed(self, composite: Any) -> None:
        if self._composite_of(self.edit_box.image_combo.layer()) is composite:
            self.edits_box.show_edits(composite)
            self.edits_box.update_buttons(not self.session.busy)

    def _update_view_note(self, event: Any = None) -> None:
        layer = self.edit_box.image_combo.layer()
        view = self.views.get(id(layer)) or (_layers.view_of(layer) if layer else None)
        self.synthetic_box.view_note.setText(view.zoom_note() if view is not None else "")

    # -- inpainting -------------------------------------------------------------------

    def inpaint(self) -> Job | None:
        """Inpaint the mask layer over the slide layer into the slide's edited layer."""
        return self._guard("Inpaint", self._start_inpaint)

    def _start_inpaint(self) -> Job:
        image, mask_layer = self.edit_box.image_combo.layer(), self.edit_box.mask_combo.layer()
        if image is not None:
            _refuse_loading(image)
        if image is None or mask_layer is None:
            raise ValueError("choose a slide layer and a mask layer (Shapes or Labels)")
        slide = _layers.slide_of(image)
        if _layers.is_synthetic(slide):
            raise ValueError(
                "inpainting works on real slides; for a synthetic slide change its seed instead"
            )
        composite = self._composite_of(image)
        path = None if composite is not None else _layers.real_path_of(image)
        if composite is None and not path:
            raise ValueError(
                f"{image.name!r} was not opened from a slide file; open the slide with the "
                "napari-cytosyn reader (File > Open) first"
            )
        # Plain data read here; the pixels are rasterised in the job (no GUI stall)
        drawn = read_mask(mask_layer, image)
        reference = self.reference_box.reference(image)
        ring_um = self.reference_box.ring_um()
        self._snapshot_model_choice()
        settings, cache = self.sampler_settings(), self.config.cache_path()
        shown = _layers.shown_region(image)

        def work(progress: Any, cancel: Any) -> tuple[Any, dict, dict]:
            target = composite or _actions.open_composite(path, cache)
            try:
                shape_hw = target.level_shapes[0]
                region, mask = drawn.rasterise(shape_hw)
                ref = reference  # "none", "auto" or the region drawn: its bounding box
                if isinstance(ref, DrawnMask):
                    ref = ref.rasterise(shape_hw)[0]
                run = _actions.inpaint_work(
                    target, region, mask, self.get_model, settings, ref, ring_um
                )
                record = run(progress, cancel)
            except BaseException:
                if composite is None:  # a store made for this edit alone: nothing left behind
                    shutil.rmtree(target.path, ignore_errors=True)
                raise
            # what the edited layer's first slice reads: here, not on the GUI thread
            return target, record, _layers.read_ahead(target, shown)

        return self.run_job(
            "Inpaint", work, lambda out: self._show_composite(image, *out), unit="steps"
        )

    def _show_composite(self, image: Any, composite: Any, record: dict, ahead: dict) -> None:
        key = str(Path(composite.real.path).resolve())
        self.session.composites[key] = composite
        layer = _layers.edited_layer(self.viewer, composite)
        if layer is None:  # a new layer shows the edit as it is: no refresh
            _layers.use_read_ahead(composite, ahead)
            steps: list = []
            layer = _layers.add_composite_layer(self.viewer, composite, image, steps)
            done = [lambda: _layers.use_read_ahead(composite, None)]  # shown: sliced
            later(*steps, *done, *_outline_steps(self.viewer, layer, composite))
            self.session.edits_changed.emit(composite)
        else:
            self._edits_changed(layer, composite, ahead)
        self.say(
            f"Inpainted {record['mask_px']:,} px into {layer.name!r} "
            f"({len(composite.edits)} edit(s) in {composite.path})."
        )

    def undo_edit(self) -> Job | None:
        """Remove the newest edit of the selected slide."""
        composite = self._composite_of(self.edit_box.image_combo.layer())
        if composite is None or not composite.edits:
            self.say("The selected slide has no edit to undo.")
            return None
        return self.remove_edit(len(composite.edits) - 1)

    def remove_edit(self, index: int) -> Job | None:
        """Remove edit ``index`` (oldest first) of the selected slide (a short job)."""

        def start() -> Job:
            composite = self._composite_of(self.edit_box.image_combo.layer())
            if composite is None:
                raise ValueError("select a slide with edits first")
            n = len(composite.edits)
            if not 0 <= index < n:
                raise IndexError(f"the slide has {n} edit(s), no edit {index + 1}")

            def work(progress: Any, cancel: Any) -> dict:
                progress(0, 1)
                record = composite.remove_edit(index)
                progress(1, 1)
                return record

            return self.run_job(
                f"Remove edit {index + 1}",
                work,
                lambda rec: self._edit_removed(composite, index, rec),
                unit="edits",
                total=1,
            )

        return self._guard("Remove edit", start)

    def _edit_removed(self, composite: Any, index: int, record: dict) -> None:
        self._edits_changed(_layers.edited_layer(self.viewer, composite), composite)
        self.say(
            f"Removed edit {index + 1} ({record['mask_px']:,} px); {composite.name} "
            f"has {len(composite.edits)} edit(s)."
        )

    def _edits_changed(self, layer: Any, composite: Any, ahead: dict | None = None) -> None:
        """The edits of ``composite`` changed: refresh its layer (if shown; its slice reads
        ``ahead``, :func:`_layers.read_ahead`) and mask, tell the session."""
        if layer is not None:
            layer.metadata.update(_layers.composite_metadata(composite))
            _layers.use_read_ahead(composite, ahead)
            layer.refresh()
            _layers.use_read_ahead(composite, None)
            later(*_outline_steps(self.viewer, layer, composite))
        self.session.edits_changed.emit(composite)

    def open_edit_store(self, path: str | None = None) -> Any:
        """Reopen the edits of an earlier session (an edit store) as an edited layer."""

        def start() -> Any:
            nonlocal path
            if path is None:
                path = QFileDialog.getExistingDirectory(
                    self, "Edit store (.cytosyn)", str(self.config.cache_path() / "edits")
                )
                if not path:
                    return None
            composite = _actions.open_edit_store(path)
            key = str(Path(composite.real.path).resolve())
            self.session.composites[key] = composite
            layer = _layers.edited_layer(self.viewer, composite)
            if layer is None:  # three new layers: napari's work on them spread over turns
                from napari.layers import Image

                from .._reader import slide_layer_data

                data, kwargs, _ = slide_layer_data(composite.real)
                real, steps = Image(data, **kwargs), []
                _layers.insert_layer(self.viewer, real, select=True, steps=steps)
                layer = _layers.add_composite_layer(self.viewer, composite, real, steps)
                _layers.show_synthetic_mask(self.viewer, layer, composite, steps)
                later(*steps)
            else:
                _layers.show_synthetic_mask(self.viewer, layer, composite)
            self.edit_box.image_combo.select(layer)
            self.session.edits_changed.emit(composite)
            self.say(f"Opened {len(composite.edits)} edit(s) of {composite.real.name}.")
            return layer

        return self._guard("Open edit store", start)

    # -- synthesized regions ----------------------------------------------------------

    def synthesize_region(self) -> Job | None:
        """Fill each shape's bounding rectangle (of the mask layer) with new tissue."""
        return self._guard("Synthesize region", self._start_region)

    def _start_region(self) -> Job:
        shapes = self.edit_box.mask_combo.layer()
        if shapes is None or type(shapes).__name__ != "Shapes":
            raise ValueError("choose a Shapes layer with rectangles as the mask layer")
        self._snapshot_model_choice()
        mpp = (
            self.models.override.mpp if self.models.override is not None else (self.model_box.mpp())
        )
        boxes = [_actions.px_box_of(r, mpp) for r in world_rectangles(shapes)]
        work = _actions.synthesize_work(boxes, self.get_model, self.sampler_settings())
        return self.run_job(
            "Synthesize region", work, lambda out: self._show_regions(boxes, *out, mpp)
        )

    def _show_regions(self, boxes: list, images: list, recipe: dict, mpp: float) -> None:
        from napari.layers import Image

        from napari_cytosyn.pixel_size import PixelSize
        from napari_cytosyn.slide.provenance import region_provenance

        seed, size = recipe["core"]["seed"], PixelSize.square(mpp)
        steps = []
        for (y, x, h, w), rgb in zip(boxes, images, strict=True):
            self._n_regions += 1
            layer = Image(
                rgb,
                name=f"synthesized region {self._n_regions}",
                rgb=True,
                scale=size.napari_scale(),
                translate=(y * mpp, x * mpp),
                units=("um", "um"),
                metadata={
                    _layers.META_KEY: {"kind": "region", "box_px": [y, x, h, w]},
                    "mpp": size.to_list(),
                    "provenance": region_provenance(recipe, (y, x, h, w)),
                },
            )
            steps += [lambda ly=layer: _insert_on_top(self.viewer, ly)]
            steps += _outline_steps(self.viewer, layer, None)
        later(*steps[0](), *steps[1:])
        self.say(f"Synthesized {len(images)} region(s) with seed {seed}.")

    # -- synthetic slides -------------------------------------------------------------

    def new_synthetic_slide(self) -> Job | None:
        """Create a synthetic slide of the chosen size and show it as a lazy layer."""
        return self._guard("New synthetic slide", self._start_new_slide)

    def _start_new_slide(self) -> Job:
        self._snapshot_model_choice()
        settings = self.sampler_settings()
        box = self.synthetic_box
        width, height = int(box.width_spin.value()), int(box.height_spin.value())
        folder = self.config.cache_path() / "synthetic"
        store = _unique(folder / f"synthetic-seed{settings.seed}-{width}x{height}.cytosyn")
        chunk_px = self.chunk_px

        def work(progress: Any, cancel: Any) -> Any:
            model = self.get_model()  # the slide needs the model's geometry and provenance
            return _actions.create_synthetic(
                store, model, width, height, settings, chunk_px=chunk_px
            )

        return self.run_job("New synthetic slide", work, self._show_synthetic)

    def _show_synthetic(self, slide: Any) -> None:
        steps: list = []
        layer, view = _layers.add_synthetic_layer(
            self.viewer, slide, steps, on_error=lambda msg: self.say(f"Rendering failed: {msg}")
        )
        later(*steps)
        self.views[id(layer)] = view
        view.note_changed.connect(self._update_view_note)
        self.edit_box.image_combo.select(layer)
        self.viewer.reset_view()
        self.say(f"{slide.name}: rendering where you look ({slide.path}).")

    def synthetic_twin(self) -> Job | None:
        """A synthetic twin of the selected real slide, shown over it (same scale, origin)."""
        return self._guard("Synthetic twin", self._start_twin)

    def _start_twin(self) -> Job:
        image = self.edit_box.image_combo.layer()
        if image is not None:
            _refuse_loading(image)
        path = _layers.real_path_of(image) if image is not None else None
        if not path:
            raise ValueError("select a real slide (opened from a file) as the slide layer")
        self._snapshot_model_choice()
        settings = self.sampler_settings()
        store = twin_store(self.config.cache_path(), path, settings.seed)
        work = twin_work(path, store, self.get_model, settings, self.chunk_px)
        return self.run_job(
            "Synthetic twin", work, lambda slide: self._show_twin(image, slide), unit="cells"
        )

    def _show_twin(self, real_layer: Any, slide: Any) -> None:
        self._show_synthetic(slide)
        layer = self.edit_box.image_combo.layer()
        link_to(layer, real_layer)
        ref = slide.metadata()["reference"]
        self.say(
            f"{slide.name}: twin of {ref['file']} ({ref['tissue_cells']} reference cells), "
            "rendering where you look."
        )

    def render_all(self) -> Job | None:
        """Generate every chunk of the synthetic slide selected as slide layer (asks first when
        it is more than ``confirm_mpx`` megapixels)."""
        return self._guard("Render all", self._start_render_all)

    def _start_render_all(self) -> Job | None:
        _layer, slide = self._selected()
        if not _layers.is_synthetic(slide):
            raise ValueError("select a synthetic slide as the slide layer first")
        missing = len(slide.missing_chunks(0))
        if not missing:
            self.say(f"{slide.name}: every chunk is rendered already.")
            return None
        if not self._confirm_render(slide, missing, "Render all"):
            self.say("Render all: not started.")
            return None
        return self.run_job(
            f"Render all of {slide.name}",
            _actions.render_all_work(slide),
            lambda n: self.say(f"{slide.name}: {n:,} chunk(s) rendered, the slide is complete."),
            unit="chunks",
            total=missing,
        )

    def _confirm_render(self, slide: Any, missing: int, what: str) -> bool:
        mpx = _actions.megapixels(slide, missing)
        if mpx <= self.confirm_mpx:
            return True
        rate = self.session.chunk_rate
        when = (
            f"about {format_duration(missing / rate)} at the {rate:.2g} chunks/s measured here"
            if rate
            else "time unknown until the first chunks are done"
        )
        return bool(
            self.confirm(
                f"{what}: {missing:,} chunks ({mpx:,.0f} megapixels) of {slide.name} are not "
                f"generated yet; {when}. Start?"
            )
        )

    # -- export -----------------------------------------------------------------------

    def export(self, path: str | None = None, fmt: str | None = None) -> Job | None:
        """Export the slide layer (synthetic or edited) as OME-Zarr or OME-TIFF."""
        return self._guard("Export", lambda: self._start_export(path, fmt))

    def _start_export(self, path: str | None, fmt: str | None) -> Job | None:
        fmt = fmt or self.export_box.format_combo.currentText()
        _layer, slide = self._selected()
        if slide is None:
            raise ValueError(
                "select a synthetic slide or an edited slide layer; real slides are saved with "
                "File > Save Selected Layers"
            )
        missing = len(slide.missing_chunks(0)) if _layers.is_synthetic(slide) else 0
        if missing and not self._confirm_render(slide, missing, "Export"):
            self.say("Export: not started.")
            return None
        if path is None:
            start = _actions.default_export_path(slide, fmt, self.config.export_dir)
            path, _ = QFileDialog.getSaveFileName(self, f"Export as {fmt}", str(start))
            if not path:
                return None
        target = Path(path)
        self._save_config(export_dir=str(target.parent))
        # One job: the missing chunks are rendered first (progress in chunks), then the writer
        # runs (progress in tiles); Cancel stops either, and a cancelled export leaves no file.
        return self.run_job(
            f"Render and export {fmt}" if missing else f"Export {fmt}",
            _actions.export_work(slide, target, fmt, render_missing=bool(missing)),
            lambda p: self.say(f"Exported to {p}."),
            unit="chunks, then tiles" if missing else "tiles",
            total=missing,
        )


def _insert_on_top(viewer: Any, layer: Any) -> list[Callable[[], Any]]:
    """Insert ``layer`` on top, unselected; returns the steps that build its visual and
    controls and show it (:func:`_layers.insert_layer`)."""
    steps: list = []
    _layers.insert_layer(viewer, layer, steps=steps)
    return steps


def _outline_steps(viewer: Any, layer: Any, slide: Any) -> list[Callable[[], Any]]:
    """Steps for :func:`_layers.later` that add (or refresh) ``layer``'s "synthetic" outline: a
    new one is inserted hidden, then its visual, showing it (first slice, contour and draw) and
    its controls in the turns after (:func:`_layers.insert_layer`)."""

    def add() -> list[Callable[[], Any]]:
        steps: list = []
        _layers.show_synthetic_mask(viewer, layer, slide, steps=steps)
        return steps

    return [add]


def _unique(path: Path) -> Path:
    """``path`` or ``path`` with ``-2``, ``-3``... before its suffix when it exists."""
    if not path.exists():
        return path
    n = 2
    while (path.with_name(f"{path.stem}-{n}{path.suffix}")).exists():
        n += 1
    return path.with_name(f"{path.stem}-{n}{path.suffix}")


def _refuse_loading(layer: Any) -> None:
    """A layer whose file is still being opened in a worker cannot be worked on yet."""
    if layer.metadata.get(_layers.META_KEY, {}).get("loading"):
        raise ValueError(f"{layer.name!r} is still loading; try again when its pixels show")
