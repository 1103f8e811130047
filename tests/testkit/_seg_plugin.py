"""Functions of the tiny npe2 test plugin and the shell method of the runner tests."""

from __future__ import annotations

import sys

import numpy as np

from napari_cytosyn.testkit.methods import otsu_watershed


def segment_layer_data(image: np.ndarray) -> list[tuple]:
    """An npe2 command returning napari layer-data tuples, as plugins do."""
    return [(otsu_watershed(image), {"name": "nuclei"}, "labels")]


def main(argv: list[str]) -> int:
    """``python _seg_plugin.py INPUT.png OUTPUT.tif``: a command-line segmenter."""
    import tifffile
    from skimage.io import imread

    rgb = imread(argv[0])[..., :3]
    tifffile.imwrite(argv[1], otsu_watershed(rgb))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
