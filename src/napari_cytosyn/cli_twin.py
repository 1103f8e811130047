"""Command-line parts of reference conditioning: the ``twin`` subcommand's options and store,
the ``--reference`` options of ``inpaint``, and guidance for conditioned runs.

``napari-cytosyn twin SLIDE --out twin.ome.zarr`` makes a synthetic twin of a real slide (same
size and tissue layout, each window conditioned on the real tissue at its location); ``inpaint``
conditions a conditional model on the tissue around each mask by default, or on
``--reference x,y,w,h`` / ``--reference-geojson FILE``. The subcommand itself (``cmd_twin``) lives
in :mod:`napari_cytosyn.cli` with the other subcommands and their shared helpers.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_twin_arguments(p: argparse.ArgumentParser) -> None:
    """The ``twin`` subcommand's own options (the model, export and dask options are shared)."""
    p.add_argument("slide", help="the real slide to twin (SVS, NDPI, MRXS, TIFF, OME-Zarr...)")
    p.add_argument("--out", required=True, help="*.ome.zarr / *.ome.tif, or a store folder")
    p.add_argument("--store", help="synthetic slide store (default: OUT stem + .cytosyn)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--grid-um",
        type=float,
        help="embed the reference on a grid of this spacing in um, windows interpolated "
        "between its cells (default: every window embedded on its own footprint)",
    )
    p.add_argument("--chunk-px", type=int, default=512, help="chunk size in px (default 512)")
    add_guidance_argument(p)


def add_guidance_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--guidance",
        type=float,
        help="classifier-free guidance scale when conditioned (default: the model's, e.g. "
        "2.5 on t in [0, 0.75] for cytosyn); ignored without a reference",
    )


def add_reference_arguments(p: argparse.ArgumentParser) -> None:
    """``inpaint``'s reference options."""
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--reference",
        metavar="X,Y,W,H",
        help="condition on this region of the slide (level-0 px) instead of the tissue around "
        "each mask (the default for conditional models)",
    )
    group.add_argument(
        "--reference-geojson",
        metavar="FILE",
        help="condition on the region of these GeoJSON polygons (level-0 px; their bounding box)",
    )
    group.add_argument(
        "--no-reference",
        action="store_true",
        help="do not condition, even with a conditional model",
    )
    p.add_argument(
        "--ring-um",
        type=float,
        help="width of the ring of real tissue around a mask that conditions it, in um "
        "(default: one model tile)",
    )
    add_guidance_argument(p)


def parse_xywh(text: str) -> tuple[int, int, int, int]:
    """``"x,y,w,h"`` (level-0 px) -> ``(y, x, h, w)``; a clear error otherwise."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        x, y, w, h = (int(float(p)) for p in parts)
    except ValueError:
        parts = []
    if len(parts) != 4:
        raise ValueError(f"--reference {text!r}: expected x,y,w,h in level-0 px, e.g. 0,0,512,512")
    if w <= 0 or h <= 0:
        raise ValueError(f"--reference {text!r}: width and height must be > 0")
    return y, x, h, w


def reference_from_args(args: argparse.Namespace, slide: Any) -> Any:
    """What ``CompositeSlide.inpaint(reference=...)`` gets from ``inpaint``'s options."""
    if getattr(args, "no_reference", False):
        return "none"
    if getattr(args, "reference", None):
        return parse_xywh(args.reference)
    if getattr(args, "reference_geojson", None):
        from napari_cytosyn.cli_masks import read_mask

        components = read_mask(args.reference_geojson, slide)
        y0 = min(r[0] for r, _ in components)
        x0 = min(r[1] for r, _ in components)
        y1 = max(r[0] + r[2] for r, _ in components)
        x1 = max(r[1] + r[3] for r, _ in components)
        return y0, x0, y1 - y0, x1 - x0
    return "auto"


def guided_settings(args: argparse.Namespace, settings: Any, model: Any) -> Any:
    """``settings`` with the guidance a conditioned run uses: ``--guidance`` or the model's
    recommended conditioned scale and interval (registry defaults). Unconditioned runs store no
    guidance (see :func:`~napari_cytosyn.sampling.conditioning.recipe_settings`)."""
    from napari_cytosyn.models import recommended

    defaults = recommended(str(getattr(args, "model", "") or ""))
    scale = getattr(args, "guidance", None)
    if scale is None:
        scale = defaults.get("guidance_conditioned", settings.guidance)
    interval = tuple(defaults.get("guidance_interval", settings.guidance_interval))
    return settings.replace(guidance=float(scale), guidance_interval=interval)


def twin_store(args: argparse.Namespace, model: Any) -> tuple[Any, dict[str, Any]]:
    """``(matches, create)`` for :func:`napari_cytosyn.cli.open_or_create_store`: a twin store
    is reopened when made from the same slide file (checksum), seed and grid (or none)."""
    from napari_cytosyn.slide import open_slide
    from napari_cytosyn.slide.reference import slide_checksum

    real = open_slide(args.slide)
    grid = None if args.grid_um is None else round(args.grid_um / float(model.mpp))

    def matches(attrs: dict[str, Any]) -> bool:
        ref = attrs.get("reference") or {}
        return (
            ref.get("sha256") == slide_checksum(real.path)
            and attrs.get("recipe", {}).get("core", {}).get("seed") == args.seed
            and ref.get("grid_px") == grid
        )

    create = {"width": None, "height": None, "reference": real, "reference_grid_um": args.grid_um}
    return matches, create
