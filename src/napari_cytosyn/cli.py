"""``napari-cytosyn``: headless synthesis, inpainting, rendering, export and inspection.

Subcommands (``napari-cytosyn SUBCOMMAND --help`` for all flags)::

    synthesize --width W --height H --seed S [--model M] [--mpp 0.5] --out PATH
    inpaint SLIDE --mask MASK [--mask-level L] --out PATH
    render STORE
    export STORE_OR_SLIDE --out PATH
    info PATH
    check STORE [--repair]
    demo --out DIR

The output format follows the extension (or ``--format``): ``*.ome.zarr`` (OME-Zarr, NGFF 0.4
unless ``--ome-version 0.5``), ``*.ome.tif`` (pyramidal OME-TIFF), ``*.tif``/``*.svs`` (tiled
TIFF in the SVS layout, every level readable by OpenSlide); ``synthesize`` writes a synthetic
slide store for any other name. Exit status: 0 on success, 1 with a one-line reason on bad input
or failure, 2 on a usage error, 130 when interrupted and 143 when terminated (SIGTERM; rerun the
same command to resume).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

from napari_cytosyn.cli_masks import read_mask
from napari_cytosyn.cli_safety import (
    Terminated,
    check_output,
    export_provenance,
    install_sigterm,
    output_job,
)
from napari_cytosyn.sampling.settings import AUTOCAST

PROG = "napari-cytosyn"
MAX_STEPS = 5000  # sampler steps; real models use 50-250, beyond is a typo
#: what ``python -m napari_cytosyn`` hands to this CLI (tests keep it equal to the parser's)
SUBCOMMANDS = tuple("synthesize inpaint twin render export info check demo testkit".split())  # noqa: SIM905


class CliError(Exception):
    """Bad input on the command line: reported as one line, exit status 1."""


class ProgressBar:
    """A ``progress(done, total)`` callback drawing a tqdm bar on stderr (none with --quiet);
    a context manager that closes it."""

    def __init__(self, args: argparse.Namespace, desc: str, unit: str) -> None:
        self.desc, self.unit, self.enabled = desc, unit, not args.quiet
        self._bar: Any = None

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self._bar is None or self._bar.total != total:
            from tqdm import tqdm

            self.close()
            self._bar = tqdm(total=total, desc=self.desc, unit=self.unit, file=sys.stderr)
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def say(args: argparse.Namespace, message: str) -> None:
    if not args.quiet:
        print(message, file=sys.stderr)


# -- models and settings --------------------------------------------------------------------


class PyModelFactory:
    """``py:package.module:callable``: a model from any importable zero-argument factory;
    picklable by its spec, so dask workers import and call it themselves."""

    def __init__(self, spec: str) -> None:
        module, _, attr = spec.removeprefix("py:").partition(":")
        if not module or not attr:
            raise CliError(f"--model {spec!r}: expected py:package.module:factory")
        self.spec, self.module, self.attr = spec, module, attr

    def __call__(self) -> Any:
        import importlib

        try:
            factory = getattr(importlib.import_module(self.module), self.attr)
        except (ImportError, AttributeError) as exc:
            raise CliError(f"--model {self.spec!r}: cannot import it ({exc})") from exc
        return factory()


def model_source(name: str, args: argparse.Namespace) -> str | PyModelFactory | partial:
    """What workers load: the registry name, a picklable ``load_model`` partial when ``--vae`` or
    ``--trust-remote-code`` was given, or a :class:`PyModelFactory` for ``py:`` specs."""
    if name.startswith("py:"):
        return PyModelFactory(name)
    options = {"vae": args.vae, "trust_remote_code": args.trust_remote_code}
    options = {k: v for k, v in options.items() if v}
    if not options:
        return name
    from napari_cytosyn.models import load_model

    return partial(load_model, name, device=args.device, **options)


def load_cli_model(name: str, device: str, args: argparse.Namespace) -> Any:
    from napari_cytosyn.models import load_model
    from napari_cytosyn.models.device import resolve_device

    resolve_device(device)  # a device that does not exist fails here, for every model route
    source = model_source(name, args)
    if isinstance(source, PyModelFactory):
        return source()
    return load_model(name, **{**getattr(source, "keywords", {}), "device": device})


def sampler_settings(args: argparse.Namespace, seed: int) -> Any:
    """``SamplerSettings`` from the flags, with the model's recommended sampler and steps
    (registry ``defaults``) where no flag is given."""
    from napari_cytosyn.sampling import SamplerSettings

    steps, sampler = args.steps, args.sampler
    if steps is not None and not 1 <= steps <= MAX_STEPS:
        raise CliError(f"--steps {steps}: use 1 to {MAX_STEPS} sampler steps")
    if not args.model.startswith("py:"):
        from napari_cytosyn.models import get_info

        recommended = get_info(args.model).defaults
        steps = recommended.get("steps") if steps is None else steps
        sampler = sampler or recommended.get("sampler")
    options = {"steps": steps and int(steps), "sampler": sampler}
    options = {k: v for k, v in options.items() if v}
    return SamplerSettings(seed=int(seed), autocast=args.autocast, **options)


# -- output paths, rendering, export --------------------------------------------------------


def export_target(path: Path, fmt: str | None = None) -> bool:
    """True when ``path`` (or ``fmt``) names an export (``.ome.zarr``, ``.ome.tif``, ``.svs``)."""
    from napari_cytosyn.export import output_format

    try:
        output_format(path, fmt)
    except ValueError:
        if fmt is not None:
            raise
        return False
    return True


def _export_out(args: argparse.Namespace) -> Path:
    out = Path(args.out)
    if not export_target(out, args.format):
        raise CliError(f"--out {out.name!r}: name it *.ome.zarr, *.ome.tif, *.tif or *.svs")
    return out


def _store_and_output(args: argparse.Namespace, *reads: Any) -> tuple[Path, Path, bool]:
    """(--out, the store: --store, else OUT stem + .cytosyn beside an export, else --out;
    whether --out is an export)"""
    out = Path(args.out)
    to_file = export_target(out, args.format)
    stem = out.name
    for suffix in (".ome.zarr", ".ome.tiff", ".ome.tif", ".zarr", ".tiff", ".tif", ".svs"):
        stem = stem.removesuffix(suffix)
    store = Path(args.store) if args.store else out.with_name(f"{stem}.cytosyn") if to_file else out
    if to_file:
        check_output(out, args.overwrite, reads=[*reads, store])
    return out, store, to_file


def export(args: argparse.Namespace, slide: Any, out: Path) -> Path:
    """``export_slide`` with the export flags (the caller holds ``out``'s job lock)."""
    from napari_cytosyn.export import export_slide

    with ProgressBar(args, f"export {out.name}", "chunk") as bar:
        written = export_slide(
            slide,
            out,
            format=args.format,
            version=args.ome_version,
            compression=args.compression,
            mask=args.synthetic_mask,
            overwrite=args.overwrite,
            render_missing=getattr(args, "render_missing", False),
            progress=bar,
        )
    say(args, f"wrote {written}")
    return written


def render_store(args: argparse.Namespace, slide: Any, source: Any) -> None:
    """Render every missing chunk (damaged ones again): in this process, or on dask with
    --workers/--scheduler."""
    for k in range(slide.store.n_levels):
        for cy, cx, problem in slide.store.damaged_chunks(k):
            say(args, f"chunk ({cy}, {cx}) of level {k} is damaged ({problem}); rendering it again")
            slide.store.clear_chunk(k, cy, cx)
    if not (slide.store.completion(0).grid == 0).any():
        slide.finish_pyramid()
        return
    with ProgressBar(args, f"render {slide.name}", "chunk") as bar:
        if args.workers or args.scheduler:
            from napari_cytosyn.distributed import render_distributed

            render_distributed(
                slide.path,
                model=source,
                device=args.device,
                workers=args.workers,
                scheduler=args.scheduler,
                progress=bar,
            )
        else:
            slide.render_all(progress=bar)
            slide.finish_pyramid()


def _render_and_export(args: argparse.Namespace, slide: Any, out: Path, to_file: bool) -> int:
    """The end of ``synthesize`` and ``twin``: render the store, export it when --out asks."""
    from napari_cytosyn.slide.kinds import open_any

    render_store(args, slide, model_source(args.model, args))
    say(args, f"{slide.path} is complete")
    if to_file:
        with output_job(out):
            export(args, open_any(slide.path), out)
    return 0


def open_or_create_store(
    args: argparse.Namespace, store: Path, model: Any, settings: Any, matches: Any, **create: Any
) -> Any:
    """Reopen the synthetic slide at ``store`` when ``matches(attrs)`` says its stored attributes
    are the slide asked for (resume), else create it (``SyntheticSlide.create(**create)``);
    replacing a different one needs --overwrite."""
    from napari_cytosyn.slide.store import StoreMismatchError, read_store_attrs
    from napari_cytosyn.slide.synthetic import SyntheticSlide

    attrs = read_store_attrs(store) if store.exists() else None
    if attrs is not None and attrs.get("kind") == "synthetic-slide":
        if matches(attrs):
            with contextlib.suppress(StoreMismatchError):
                slide = SyntheticSlide.open(store, model=model, settings=settings)
                done = slide.store.completion(0).count()
                say(args, f"resuming {store} ({done} chunks already rendered)")
                return slide
        if not args.overwrite:
            raise CliError(
                f"{store} holds a different synthetic slide; pass --overwrite to replace it "
                "or --store to use another store"
            )
    kw = {"chunk_px": args.chunk_px, "overwrite": args.overwrite, **create}
    return SyntheticSlide.create(store, model, settings=settings, **kw)


# -- subcommands ----------------------------------------------------------------------------


def cmd_synthesize(args: argparse.Namespace) -> int:
    if args.mpp is not None and not (math.isfinite(args.mpp) and args.mpp > 0):
        raise CliError(f"--mpp {args.mpp}: give a positive number of um per px")
    out, store, to_file = _store_and_output(args)
    if args.mpp is not None:
        # --mpp 0.25 with cytosyn-tiny: its 40x decoder generates at that pixel size
        _match_scale(args, args.mpp)
    model = load_cli_model(args.model, args.device, args)
    if args.mpp is not None and abs(args.mpp - float(model.mpp)) > 0.01 * float(model.mpp):
        raise CliError(
            f"model {model.name!r} generates at {model.mpp} um/px, not {args.mpp}; resampled "
            f"synthesis is not supported: omit --mpp or pass --mpp {model.mpp}"
        )

    def matches(attrs: dict) -> bool:
        stored = (attrs["width"], attrs["height"], attrs["recipe"]["core"]["seed"])
        return stored == (args.width, args.height, args.seed)

    settings = sampler_settings(args, args.seed)
    size = {"width": args.width, "height": args.height}
    slide = open_or_create_store(args, store, model, settings, matches, **size)
    return _render_and_export(args, slide, out, to_file)


def _match_scale(args: argparse.Namespace, mpp: float | None) -> None:
    """Switch ``args.model`` to the embedded model's decoder for ``mpp`` (e.g. 40x), saying so."""
    from napari_cytosyn.models.embedded import match_slide_scale

    args.model, why = match_slide_scale(args.model, mpp)
    if why:
        say(args, why)


def cmd_inpaint(args: argparse.Namespace) -> int:
    from napari_cytosyn.cli_twin import guided_settings, reference_from_args
    from napari_cytosyn.slide import open_slide
    from napari_cytosyn.slide.composite import CompositeSlide

    out = _export_out(args)
    check_output(out, args.overwrite, reads=[args.slide, args.mask, args.edit_store])
    slide = open_slide(args.slide)
    components = read_mask(args.mask, slide, args.mask_level)
    _match_scale(args, slide.mpp.side_um("inpainting") if slide.mpp else None)
    model = load_cli_model(args.model, args.device, args)
    reference = reference_from_args(args, slide)
    # guidance is stored only where a reference is used
    settings = guided_settings(args, sampler_settings(args, args.seed), model)
    with contextlib.ExitStack() as stack:
        stack.enter_context(output_job(out))
        if args.edit_store:
            edit_store = Path(args.edit_store)
        else:
            tmp = stack.enter_context(
                tempfile.TemporaryDirectory(prefix=f".{out.name}.edits-", dir=out.parent)
            )
            edit_store = Path(tmp) / "edits"
        composite = CompositeSlide(slide, edit_store, overwrite=not args.edit_store)
        for i, (region, mask) in enumerate(components, start=1):
            with ProgressBar(args, f"inpaint {i}/{len(components)}", "step") as bar:
                composite.inpaint(
                    region,
                    mask,
                    model,
                    settings,
                    progress=bar,
                    reference=reference,
                    ring_um=args.ring_um,
                )
        export(args, composite, out)
    return 0


def cmd_twin(args: argparse.Namespace) -> int:
    """A synthetic twin of a real slide (``cli_twin``): create or resume, render, export."""
    from napari_cytosyn.cli_twin import guided_settings, twin_store

    out, store, to_file = _store_and_output(args, args.slide)
    model = load_cli_model(args.model, args.device, args)
    settings = guided_settings(args, sampler_settings(args, args.seed), model)
    matches, create = twin_store(args, model)
    slide = open_or_create_store(args, store, model, settings, matches, **create)
    return _render_and_export(args, slide, out, to_file)


def cmd_render(args: argparse.Namespace) -> int:
    from napari_cytosyn.slide.store import read_store_attrs
    from napari_cytosyn.slide.synthetic import SyntheticSlide

    store = Path(args.store)
    attrs = read_store_attrs(store) if store.exists() else None
    if attrs is None or attrs.get("kind") != "synthetic-slide":
        raise CliError(f"{store} is not a synthetic slide store (made by `synthesize`)")
    name = args.model or attrs["recipe"]["model"]["name"]
    if not args.model and str(name).startswith("py:"):
        raise CliError(
            f"{store} names the model {name!r}, which is Python code; a store never chooses code "
            f"to run: pass --model {name} yourself if you trust it"
        )
    model = load_cli_model(name, args.device, args)
    render_store(args, SyntheticSlide.open(store, model=model), model_source(name, args))
    say(args, f"{store} is complete")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from napari_cytosyn.slide.kinds import open_any

    out = _export_out(args)
    slide = open_any(args.source, mode="r+" if args.render_missing else "r")
    reads = [args.source, slide.real.path if slide.kind == "composite" else None]
    check_output(out, args.overwrite, reads=reads)
    with output_job(out):
        export(args, slide, out)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from napari_cytosyn.slide.kinds import open_any

    path = Path(args.path)
    if not path.exists():
        raise CliError(f"{path} does not exist")
    slide = open_any(path)
    info: dict[str, Any] = {
        "path": str(path),
        "kind": slide.kind,
        "name": slide.name,
        "mpp": slide.mpp.to_list() if slide.mpp else None,
        "level_shapes": [list(s) for s in slide.level_shapes],
    }
    lines = [f"  level {k}: {h} x {w} px" for k, (h, w) in enumerate(slide.level_shapes)]
    if slide.kind == "synthetic":
        meta = slide.metadata()
        damaged = len(slide.store.damaged_chunks(0))
        done, total = meta["chunks_done"] - damaged, meta["chunks_total"]
        info.update(chunks_done=done, chunks_total=total, chunks_damaged=damaged)
        info["provenance"] = slide.provenance()
        lines.append(f"  rendered: {done} / {total} chunks")
        if damaged:
            lines.append(f"  damaged: {damaged} chunks (`{PROG} render {path}` renders them again)")
    elif slide.kind == "composite":
        info["edits"] = slide.edits
        lines.append(f"  edits: {len(slide.edits)}")
    else:
        info["format"] = getattr(slide, "format", None)
        embedded = export_provenance(path)
        if embedded is not None:
            info["provenance"] = embedded
            made_from = (embedded.get("synthetic") or {}).get("kind")
            info["kind"] = f"export of a {made_from}" if made_from else "export"
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    fmt = f", {info['format']}" if info.get("format") else ""
    print(f"{info['name']} ({info['kind']}{fmt})")
    print(f"  mpp: {slide.mpp or 'unknown'}")
    print("\n".join(lines))
    prov = info.get("provenance")
    if prov:
        model = (prov.get("model") or {}).get("name")
        steps = ((prov.get("sampler") or {}).get("core") or {}).get("steps")  # the recipe's
        print(f"  provenance: model {model}, seed {prov.get('seed')}, steps {steps}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from napari_cytosyn.demo import run_demo

    model = load_cli_model(args.model, args.device, args)
    run_demo(
        model,
        sampler_settings(args, args.seed),
        args.out,
        size=args.size,
        overwrite=args.overwrite,
        version=args.ome_version,
        progress_bar=lambda desc, unit: ProgressBar(args, desc, unit),
        say=lambda message: say(args, message),
    )
    return 0


# -- parser and entry point ------------------------------------------------------------------


def add_subcommand(sub: Any, name: str, func: Any, help: str, **defaults: Any) -> Any:
    """A subcommand's parser with the options every subcommand takes (--quiet, --debug)."""
    p = sub.add_parser(name, help=help)
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.set_defaults(func=func, **defaults)
    return p


def _model_args(p: argparse.ArgumentParser, default: str | None = "cytosyn-tiny") -> None:
    """Which model and how it loads; with a ``default`` model also the sampler options."""
    p.add_argument(
        "--model",
        default=default,
        help=f"registry name (default {default}), name:source, diffusers:<folder or hub id>, "
        "or py:package.module:factory"
        if default
        else "model to render with (default: the one named in the store)",
    )
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, mps")
    p.add_argument(
        "--vae",
        help="hub id or folder of the VAE (PixCell: the SD3.5 VAE, default "
        "stabilityai/stable-diffusion-3.5-large, which its repositories do not host)",
    )
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="allow Python code shipped in the model folder to run (only for models you trust; "
        "every file is named before it runs)",
    )
    if default is None:
        return
    p.add_argument("--steps", type=int, help="sampler steps (default: the model's)")
    p.add_argument(
        "--sampler",
        help="euler, euler_maruyama, ancestral, heun, dpmpp_2m (default: the model's "
        "recommended one, docs/models.md)",
    )
    p.add_argument(
        "--autocast",
        choices=AUTOCAST,
        default="auto",
        help="run the networks in bfloat16 (bfloat16), in the model's dtype (off), or in "
        "bfloat16 where the CPU/GPU computes it natively (auto, default)",
    )


def _output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument(
        "--ome-version",
        choices=("0.4", "0.5"),
        default="0.4",
        help="OME-Zarr version: 0.4 (zarr v2, default) or 0.5 (zarr v3)",
    )
    p.add_argument(
        "--format",
        choices=("ome-zarr", "ome-tiff", "tiff"),
        help="output format (default: from --out's extension); tiff = SVS-layout TIFF",
    )
    p.add_argument(
        "--compression",
        help="TIFF tiles: jpeg, deflate, lzw, none, or copy (*.tif/*.svs of a TIFF slide: "
        "untouched source tiles copied as they are); default: deflate for inpainted slides, "
        "jpeg otherwise",
    )
    p.add_argument(
        "--synthetic-mask",
        choices=("sidecar", "ome-image"),
        default="sidecar",
        help="TIFF exports of inpainted slides: mask TIFF + GeoJSON beside the file (sidecar, "
        "default) or a second OME image in the OME-TIFF (ome-image)",
    )


def _distributed_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, help="render on a local dask cluster of N processes")
    p.add_argument("--scheduler", help="render on an existing dask scheduler (tcp://host:port)")


def build_parser() -> argparse.ArgumentParser:
    from napari_cytosyn import __version__
    from napari_cytosyn.cli_check import add_check_arguments, cmd_check
    from napari_cytosyn.cli_testkit import add_testkit_parser
    from napari_cytosyn.cli_twin import add_reference_arguments, add_twin_arguments

    parser = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    export_help = "*.ome.zarr, *.ome.tif, *.tif or *.svs"

    p = add_subcommand(
        sub, "synthesize", cmd_synthesize, "create (and render, export) a synthetic slide"
    )
    p.add_argument("--width", type=int, required=True, help="level-0 width in px")
    p.add_argument("--height", type=int, required=True, help="level-0 height in px")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument(
        "--mpp",
        type=float,
        help="um/px of the slide: picks the embedded model's scale (0.25: cytosyn-tiny-40x); "
        "refused unless the model generates at it",
    )
    p.add_argument("--out", required=True, help="*.ome.zarr / *.ome.tif / *.svs, or a store folder")
    p.add_argument("--store", help="synthetic slide store (default: OUT stem + .cytosyn)")
    p.add_argument("--chunk-px", type=int, default=512, help="chunk size in px (default 512)")
    for add in (_model_args, _output_args, _distributed_args):
        add(p)

    p = add_subcommand(
        sub, "inpaint", cmd_inpaint, "inpaint masked regions of a slide and export it"
    )
    p.add_argument("slide", help="a slide file (SVS, NDPI, MRXS, TIFF, OME-TIFF, OME-Zarr)")
    p.add_argument(
        "--mask",
        required=True,
        help="GeoJSON polygons in level-0 px, or a mask image (non-zero = inpaint)",
    )
    p.add_argument(
        "--mask-level",
        type=int,
        default=0,
        help="slide level whose pixel grid a mask image matches (default 0)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help=export_help)
    p.add_argument("--edit-store", help="keep the edit store here (default: temporary)")
    for add in (add_reference_arguments, _model_args, _output_args):
        add(p)

    p = add_subcommand(
        sub, "twin", cmd_twin, "a synthetic twin of a real slide (its layout and tissue)"
    )
    for add in (add_twin_arguments, _model_args, _output_args, _distributed_args):
        add(p)

    p = add_subcommand(
        sub, "render", cmd_render, "render the missing chunks of a synthetic slide store"
    )
    p.add_argument("store")
    _model_args(p, default=None)
    _distributed_args(p)

    p = add_subcommand(sub, "export", cmd_export, "export a store, an edit store or a slide")
    p.add_argument("source", metavar="STORE_OR_SLIDE")
    p.add_argument("--out", required=True, help=export_help)
    p.add_argument(
        "--render-missing",
        action="store_true",
        help="a synthetic slide's unrendered chunks are rendered first (with the model named "
        "in its store); without it such a slide is refused",
    )
    _output_args(p)

    p = add_subcommand(sub, "info", cmd_info, "describe a slide, store or export", quiet=True)
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="print JSON")

    help = "verify a synthetic or edit store (and --repair it)"
    add_check_arguments(add_subcommand(sub, "check", cmd_check, help))

    help = "headless synthesis + inpainting demo (OME-Zarr + PNG)"
    p = add_subcommand(sub, "demo", cmd_demo, help)  # the model's own steps (cytosyn-tiny: 8)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--size", type=int, default=512, help="image side in px (default 512)")
    p.add_argument("--seed", type=int, default=0)
    _model_args(p)
    _output_args(p)

    add_testkit_parser(sub, add_subcommand)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``napari-cytosyn``; returns the exit status."""
    args = build_parser().parse_args(argv)
    install_sigterm()
    try:
        return int(args.func(args) or 0)
    except (KeyboardInterrupt, Terminated) as exc:
        how = "interrupted" if isinstance(exc, KeyboardInterrupt) else "terminated"
        print(f"{PROG}: {how}; run the same command again to resume", file=sys.stderr)
        return 130 if how == "interrupted" else 143
    except Exception as exc:
        if getattr(args, "debug", False) or os.environ.get("NAPARI_CYTOSYN_DEBUG"):
            raise
        reason = " ".join(str(exc).split()) or type(exc).__name__
        print(f"{PROG}: error: {reason}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
