"""The plain-Python model behind the dock widget: one :class:`Session` per napari viewer.

What is open (composites of real slides), which edits they hold, and which job runs are kept
here, not in Qt widgets, and announced with psygnal signals that the widgets observe
(napari-animation style: the model knows nothing of Qt). Two docks on one viewer share one
session, so they share one job queue and one model cache: a job started from either disables
the start buttons of both, and a model is loaded once.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from psygnal import Signal

from ._actions import ModelProvider, freeze_long_lived

#: Above this many megapixels (level 0) a render or export asks for confirmation first.
CONFIRM_MPX = 256.0


#: Imported in the background as soon as the dock opens: what napari imports on the GUI thread
#: when the first image layer arrives (its thumbnail and contrast limits use scipy.ndimage:
#: 1-3 s on a loaded machine), and the synthetic slide's store (zarr: 0.4 s of the first
#: "New synthetic slide", before its first pixels) and the sample-data module (napari imports
#: it on the GUI thread when a sample is opened). Then the real-slide readers: napari calls the
#: plugin's reader on the GUI thread, and the first slide opened imported dask.array (0.5 s),
#: distributed (dask's first compute looks for a client), tifffile, imagecodecs and openslide
#: there; the H&E sample, opened in a worker, imported them while napari drew, and the GUI
#: thread waited for the GIL between its Python calls (80-120 ms gaps in
#: ``benchmarks/gui_latency.py``).
_WARM_MODULES = (
    "scipy.ndimage",
    "zarr",
    "napari_cytosyn.slide.synthetic",
    "napari_cytosyn._napari._sample_data",
    "skimage.color.colorconv",  # napari's labels colormaps (the first "synthetic" outline layer)
    "dask.array",
    "distributed",
    "dask.cache",  # napari's cache of dask chunks, made at the first dask layer's slice
    "PIL.Image",
    "PIL.PngImagePlugin",  # the sample's image (PIL imports its common formats at first open)
    "tifffile",
    "imagecodecs",
    "imagecodecs._zlib",  # the sample pyramid's codec (imagecodecs imports codecs when used)
    "openslide",
    "napari_cytosyn.slide.kinds",
    "napari_cytosyn.slide._tiff",
    "napari_cytosyn.slide.sample",
    "napari_cytosyn._napari._reader",
)
_warm_thread: threading.Thread | None = None


def warm_up() -> threading.Thread:
    """Build now what napari would otherwise build on the GUI thread when the first slide
    layer arrives: pint's unit registry (napari parses the layers' ``units``; about 0.5 s the
    first time), here, while the dock widget opens (a moment the user already waits for); not
    in a thread, because pint's lazy registry swaps its class before initialising, so a layer
    added meanwhile would meet a half-built registry. The modules of ``_WARM_MODULES`` are
    imported in a background thread (imports are thread-safe: a GUI thread that needs one
    meanwhile waits for it, never sees half of it). Returns that thread (once per process)."""
    import pint

    global _warm_thread
    pint.get_application_registry()("um")
    if _warm_thread is None:

        def imports() -> None:
            import contextlib
            import importlib

            for name in _WARM_MODULES:
                with contextlib.suppress(ImportError, OSError):  # e.g. no OpenSlide library
                    importlib.import_module(name)
            # vispy's dash patterns, cached per process: napari's labels layer overlays build
            # them when the first "synthetic" outline layer is added (80 ms of GUI CPU)
            from vispy.visuals.line.dash_atlas import DashAtlas

            DashAtlas()
            freeze_long_lived()  # napari's and these modules' objects: no full GC scans them

        _warm_thread = threading.Thread(target=imports, name="cytosyn-warm-up")
        _warm_thread.start()
    return _warm_thread


@dataclass
class JobProgress:
    """What the progress display shows about the running job.

    ``done`` / ``total`` count ``unit`` (chunks, steps, levels...); ``started`` and ``updated``
    are ``time.monotonic()`` stamps. ``outcome`` is ``None`` while it runs, then ``"done"``,
    ``"failed"`` or ``"cancelled"``.
    """

    title: str
    unit: str = "steps"
    done: int = 0
    total: int = 0
    started: float = field(default_factory=time.monotonic)
    updated: float = field(default_factory=time.monotonic)
    cancelling: bool = False
    outcome: str | None = None

    @property
    def elapsed_s(self) -> float:
        return max(0.0, self.updated - self.started)

    @property
    def rate(self) -> float | None:
        """``unit`` per second so far, ``None`` before the first one is done."""
        if self.done <= 0 or self.elapsed_s <= 0:
            return None
        return self.done / self.elapsed_s

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the rate so far (``None`` when not known yet)."""
        rate = self.rate
        if rate is None or self.total <= 0:
            return None
        return max(0.0, (self.total - self.done) / rate)

    def text(self) -> str:
        """One line for the status and the progress bar, e.g.
        ``"Render all: 12 / 150 chunks · 2.1 chunks/s · 1 min 6 s left"``."""
        parts = [
            f"{self.title}: {self.done} / {self.total} {self.unit}"
            if self.total
            else f"{self.title}: starting"
        ]
        if self.rate is not None:
            parts.append(
                f"{self.rate:.2g} {self.unit}/s"
                if self.rate < 10
                else f"{self.rate:.0f} {self.unit}/s"
            )
        if self.eta_s is not None and self.outcome is None:
            parts.append(f"{format_duration(self.eta_s)} left")
        if self.cancelling and self.outcome is None:
            parts.append("cancelling…")
        return " · ".join(parts)


def format_duration(seconds: float) -> str:
    """``"45 s"``, ``"3 min 20 s"``, ``"2 h 5 min"``."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    return f"{s // 3600} h {s % 3600 // 60} min"


class SessionBusyError(RuntimeError):
    """A job is already running in this viewer."""


class LayerLinks:
    """What the plugin knows about the layers of one viewer, held weakly (a layer that goes
    forgets its links): ``sources`` (layer -> the ``SyntheticSlide`` / ``CompositeSlide`` it
    shows), ``views`` (synthetic layer -> the live view rendering it) and ``masks`` (image
    layer -> its "synthetic" labels layer)."""

    def __init__(self) -> None:
        self.sources: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.views: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self.masks: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __contains__(self, layer: Any) -> bool:
        return layer in self.sources or layer in self.views or layer in self.masks


class Session:
    """Per-viewer state: the running job, the composites (edited real slides), models, and
    what the plugin's layers show (:class:`LayerLinks`, ``layers``).

    Signals (emitted on the thread that changes the state; the widget changes it on the GUI
    thread): ``job_changed(JobProgress | None)`` when a job starts, progresses or ends;
    ``edits_changed(composite)`` when a composite gains or loses an edit.
    """

    job_changed = Signal(object)
    edits_changed = Signal(object)

    def __init__(self) -> None:
        self.models = ModelProvider()
        self.layers = LayerLinks()
        self.job: JobProgress | None = None
        self.composites: dict[str, Any] = {}  # resolved real slide path -> CompositeSlide
        self._lock = threading.Lock()
        self._cancel: Any = None
        #: level-0 chunks per second of the last render job (for time estimates), or None
        self.chunk_rate: float | None = None

    # -- jobs ---------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Whether a job runs (its start buttons are disabled meanwhile)."""
        return self.job is not None and self.job.outcome is None

    def begin_job(
        self, title: str, unit: str = "steps", total: int = 0, cancel: Any = None
    ) -> JobProgress:
        """Record a new running job; raises :class:`SessionBusyError` while another runs.

        ``cancel``: a callable that asks the job to stop (called by :meth:`cancel`)."""
        with self._lock:
            if self.busy:
                raise SessionBusyError(
                    f"{self.job.title!r} is still running in this viewer; wait for it or "
                    "press Cancel"
                )
            self.job = JobProgress(title=title, unit=unit, total=int(total))
            self._cancel = cancel
        self.job_changed.emit(self.job)
        return self.job

    def cancel(self) -> None:
        """Ask the running job to stop (any dock's Cancel button)."""
        if self.busy:
            if self._cancel is not None:
                self._cancel()
            self.cancelling()

    def progress(self, done: int, total: int) -> None:
        """Progress of the running job (``done`` of ``total`` units)."""
        job = self.job
        if job is None or job.outcome is not None:
            return
        job.done, job.total, job.updated = int(done), int(total), time.monotonic()
        self.job_changed.emit(job)

    def cancelling(self) -> None:
        """The user asked the running job to stop."""
        if self.busy:
            self.job.cancelling = True
            self.job_changed.emit(self.job)

    def end_job(self, outcome: str) -> None:
        """The running job ended with ``outcome`` (``done``, ``failed`` or ``cancelled``)."""
        job = self.job
        if job is None:
            return
        job.outcome, job.updated = outcome, time.monotonic()
        if job.unit == "chunks" and job.rate is not None:
            self.chunk_rate = job.rate
        self._cancel = None
        self.job_changed.emit(job)

    # -- composites ---------------------------------------------------------------------

    def composite_for(self, real_path: str) -> Any | None:
        """The composite already open for a real slide file (one per file and viewer)."""
        return self.composites.get(real_path)


_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_SESSIONS_LOCK = threading.Lock()


def real_viewer(viewer: Any) -> Any:
    """The napari ``Viewer`` behind a ``PublicOnlyProxy`` (napari hands plugin widgets one when
    they are opened from the Plugins menu or ``add_plugin_dock_widget``); layers reached
    through a proxy are proxies too, and weak references and type names of proxies are not
    those of the layers."""
    return getattr(viewer, "__wrapped__", viewer)


def session_for(viewer: Any) -> Session:
    """The one :class:`Session` of a viewer (made on first use)."""
    viewer = real_viewer(viewer)
    with _SESSIONS_LOCK:
        session = _SESSIONS.get(viewer)
        if session is None:
            session = _SESSIONS[viewer] = Session()
        return session


def links_of(layer: Any) -> LayerLinks | None:
    """The :class:`LayerLinks` of the viewer session that knows ``layer`` (``None``: a layer
    the plugin did not make or link)."""
    layer = real_viewer(layer)  # a PublicOnlyProxy of a layer unwraps the same way
    with _SESSIONS_LOCK:
        sessions = list(_SESSIONS.values())
    return next((s.layers for s in sessions if layer in s.layers), None)
