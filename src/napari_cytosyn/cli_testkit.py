"""``napari-cytosyn testkit``: make a synthetic test set, run segmentation tools on it, report::

    testkit generate --out DIR [--count N] [--size PX] [--density D] ... [--variants all]
    testkit generate --out DIR --labels LABELS.tif [--labels-mpp 0.5]     # a painted layout
    testkit generate --out DIR --from-image HE.png [--image-mpp 0.5] [--reference-image]
    testkit run DIR --method SPEC [--method SPEC ...] [--report]
    testkit report DIR [--out REPORT_DIR]
    testkit methods

``testkit methods`` lists the SPECs ``--method`` takes (:mod:`napari_cytosyn.testkit.runner`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _say(args: argparse.Namespace, msg: str) -> None:
    if not args.quiet:
        print(msg, file=sys.stderr)


def _layouts(args: argparse.Namespace, model_mpp: float) -> list[Any]:
    import numpy as np

    from napari_cytosyn.testkit.layouts import (
        LayoutParams,
        layout_from_image,
        layout_from_labels,
        procedural_layout,
    )

    if args.labels and args.from_image:
        raise ValueError("give --labels or --from-image, not both")
    if args.labels or args.from_image:
        import tifffile
        from skimage.io import imread

        flag, path = ("--labels", args.labels) if args.labels else ("--from-image", args.from_image)
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{flag}: no file {path}")
        if args.from_image:
            return [layout_from_image(imread(path)[..., :3], args.image_mpp, model_mpp)]
        lab = tifffile.imread(path) if path.suffix in (".tif", ".tiff") else imread(path)
        return [layout_from_labels(np.asarray(lab), args.labels_mpp, model_mpp)]
    params = LayoutParams(
        density_per_mm2=args.density,
        radius_um=args.radius_um,
        elongation=args.elongation,
        clustering=args.clustering,
        tissue_fraction=args.tissue_fraction,
    )
    h, w = args.size
    return [
        procedural_layout((h, w), params, seed=args.seed + i, mpp=model_mpp)
        for i in range(args.count)
    ]


def _reference(path: str, mpp: float, model_mpp: float, layout: Any) -> Any:
    """The H&E image at the model's pixel size, cut or padded to the layout made from it."""
    import numpy as np
    from skimage.io import imread

    from napari_cytosyn.testkit.layouts import rgb_at

    rgb = rgb_at(np.asarray(imread(path)[..., :3], np.uint8), mpp, model_mpp)
    h, w = layout.shape
    out = np.full((h, w, 3), 255, np.uint8)
    out[: min(h, rgb.shape[0]), : min(w, rgb.shape[1])] = rgb[:h, :w]
    return out


def cmd_generate(args: argparse.Namespace) -> int:
    from napari_cytosyn.models import load_model
    from napari_cytosyn.testkit.dataset import generate_testset
    from napari_cytosyn.testkit.stress import variants_by_name

    variants = variants_by_name(args.variants)
    model = load_model(args.model, device=args.device, dtype="float32")
    layouts = _layouts(args, float(model.mpp))
    reference = None
    if args.reference_image:
        if not args.from_image:
            raise ValueError("--reference-image conditions on --from-image: give that too")
        reference = _reference(args.from_image, args.image_mpp, float(model.mpp), layouts[0])
    _say(args, f"synthesizing {len(layouts)} layout(s) with {args.model}")
    out = generate_testset(
        args.out,
        layouts,
        model,
        variants,
        seed=args.seed,
        steps=args.steps,
        guidance=args.guidance,
        progress=lambda msg: _say(args, msg),
        reference=reference,
    )
    _say(args, f"test set written to {out}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from napari_cytosyn.testkit.dataset import load_cases, run_testset
    from napari_cytosyn.testkit.runner import resolve_method, summarize

    methods = [resolve_method(spec, timeout_s=args.timeout) for spec in args.method]
    cases = load_cases(args.folder)
    for m in methods:
        _say(args, f"running {m.name} on {len(cases)} images")
        rows = run_testset(args.folder, m, cases=cases)
        for s in summarize(rows):
            print(
                f"{s['method']:>24} {s['variant']:>18}  F1 {s['f1']:.3f}  PQ {s['pq']:.3f}  "
                f"AJI {s['aji']:.3f}  count bias {s['count_bias']:+.3f}"
            )
    if args.report:
        return cmd_report(args)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from napari_cytosyn.testkit.report import write_report

    path = write_report(args.folder, getattr(args, "out", None))
    print(path)
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    from napari_cytosyn.testkit.methods import REFERENCE_METHODS
    from napari_cytosyn.testkit.runner import npe2_commands

    for name in REFERENCE_METHODS:
        print(f"builtin:{name}")
    for cid, title in npe2_commands():
        print(f"npe2:{cid}\t{title}")
    print("package.module:function    (RGB uint8 array -> labels)")
    print('shell:"tool {input} {output}"    ({input} PNG in, {output} TIFF/PNG labels out)')
    return 0


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be PX or HxW, got {text!r}") from None
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or min(vals) < 32:
        raise argparse.ArgumentTypeError(f"size must be PX or HxW with sides >= 32, got {text!r}")
    return vals[0], vals[1]


def add_testkit_parser(sub: Any, add_subcommand: Any) -> None:
    """Register ``testkit`` and its subcommands on the main parser's subparsers;
    ``add_subcommand``: the CLI's (adds --quiet and --debug)."""
    tk = sub.add_parser(
        "testkit", help="test a segmentation tool on synthetic H&E with known nuclei"
    )
    tsub = tk.add_subparsers(dest="testkit_command", required=True, metavar="ACTION")

    p = add_subcommand(
        tsub, "generate", cmd_generate, "synthesize a test set (images + ground truth)"
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--model", default="cytosyn-tiny-cells", help="mask-conditioned model")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, help="sampler steps (default: the model's)")
    p.add_argument(
        "--guidance", type=float, default=2.0, help="layout guidance (default 2; 1 = off)"
    )
    p.add_argument("--variants", default="all", help="stress variants, comma-separated or 'all'")
    p.add_argument("--count", type=int, default=2, help="procedural layouts (default 2)")
    p.add_argument("--size", type=_size, default=(512, 512), help="PX or HxW (default 512)")
    p.add_argument("--density", type=float, default=4000.0, help="nuclei per mm^2 of tissue")
    p.add_argument("--radius-um", type=float, default=3.2, help="mean equivalent radius (um)")
    p.add_argument("--elongation", type=float, default=1.4, help="long / short axis")
    p.add_argument("--clustering", type=float, default=0.3, help="share of clustered nuclei")
    p.add_argument("--tissue-fraction", type=float, default=1.0, help="share covered by tissue")
    p.add_argument("--labels", help="a label image (TIFF/PNG) to use as the layout")
    p.add_argument("--labels-mpp", type=float, default=0.5, help="um/px of --labels")
    p.add_argument("--from-image", help="an H&E image whose segmentation becomes the layout")
    p.add_argument("--image-mpp", type=float, default=0.5, help="um/px of --from-image")
    p.add_argument(
        "--reference-image",
        action="store_true",
        help="also condition on --from-image as a reference, place by place (models that take "
        "a mask and a reference, e.g. pixcell-256-cell-controlnet)",
    )

    p = add_subcommand(
        tsub, "run", cmd_run, "run segmentation methods on a test set and score them"
    )
    p.add_argument("folder", help="a test set made by `testkit generate`")
    p.add_argument("--method", action="append", required=True, help="method spec (repeatable)")
    p.add_argument("--timeout", type=float, default=600.0, help="per-image limit of shell methods")
    p.add_argument("--report", action="store_true", help="write the report afterwards")

    p = add_subcommand(
        tsub, "report", cmd_report, "write the report of every method run on a test set"
    )
    p.add_argument("folder")
    p.add_argument("--out", help="report folder (default FOLDER/report)")

    add_subcommand(tsub, "methods", cmd_methods, "list the methods --method accepts")
