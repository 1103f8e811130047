"""``python -m napari_cytosyn``: write a sample pyramidal slide, open it and print its pyramid.

This is the package's demo entry point until the synthesis demo replaces it.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Run the demo; returns the process exit code.

    ``python -m napari_cytosyn SUBCOMMAND ...`` runs the ``napari-cytosyn`` command line instead.
    """
    import sys

    from napari_cytosyn.cli import SUBCOMMANDS
    from napari_cytosyn.cli import main as cli_main

    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SUBCOMMANDS:
        return cli_main(argv)
    parser = argparse.ArgumentParser(prog="python -m napari_cytosyn", description=__doc__)
    parser.add_argument("slide", nargs="?", help="print this slide instead of a generated sample")
    parser.add_argument("--out", type=Path, help="where to write the sample (default: temp dir)")
    parser.add_argument("--size", type=int, nargs=2, default=(6000, 8000), metavar=("H", "W"))
    args = parser.parse_args(argv)

    from napari_cytosyn.slide import open_slide
    from napari_cytosyn.slide.sample import write_sample_slide

    with tempfile.TemporaryDirectory() as tmp:
        path = args.slide
        if path is None:
            path = args.out or Path(tmp) / "sample.tif"
            h, w = args.size
            write_sample_slide(path, h, w, n_levels=4, mpp=(0.5, 0.5), tile_px=256)
            print(f"wrote sample slide {path} ({h} x {w} px, 0.5 um/px, JPEG tiles 256 px)")
        with open_slide(path) as slide:
            print(describe(slide))
    return 0


def describe(slide) -> str:
    """Human-readable pyramid of a `napari_cytosyn.slide.Slide`."""
    mpp = str(slide.mpp) if slide.mpp else "unknown mpp"
    lines = [f"{slide.name}: {slide.format}, {mpp}, objective {slide.objective_power or '?'}x"]
    lines.append(f"{'level':>5} {'height':>8} {'width':>8} {'downsample':>10} {'chunks':>12}")
    for level, ((h, w), ds, arr) in enumerate(
        zip(slide.level_shapes, slide.downsamples, slide.levels, strict=True)
    ):
        chunks = f"{arr.chunksize[0]}x{arr.chunksize[1]}"
        lines.append(f"{level:>5} {h:>8} {w:>8} {ds:>10.3f} {chunks:>12}")
    thumb = slide.thumbnail(64)
    mean = thumb.reshape(-1, 3).mean(axis=0)
    lines.append(f"thumbnail {thumb.shape[1]}x{thumb.shape[0]}, mean RGB {mean.round(1).tolist()}")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
