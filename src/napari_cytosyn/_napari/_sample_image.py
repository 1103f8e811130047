"""The real H&E image shipped as sample data (``sample_data/``, credited in ``sources.json``):
its pixels, checked against the recorded checksum, without any napari or Qt import."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SampleImage:
    """A public image shipped as sample data: pixels ``(h, w, 3)`` uint8, level-0 um/px, and
    its ``sources.json`` entry (credit, licence, origin, checksum)."""

    rgb: np.ndarray
    mpp: float
    source: dict[str, Any]

    @property
    def credit(self) -> str:
        """One line for people: what it is, who made it, under which licence."""
        s = self.source
        return (
            f"{s['title']}; {s['credit']}; licence {s['licence']}; "
            f"about {self.mpp:g} um/px ({10 / self.mpp:.0f}x)"
        )


def sample_image() -> SampleImage:
    """The real H&E image shipped in ``napari_cytosyn/_napari/sample_data``.

    Raises ``FileNotFoundError`` naming the folder when the package was installed without it,
    and ``ValueError`` when the file is not the one ``sources.json`` describes."""
    import hashlib

    folder = resources.files("napari_cytosyn._napari") / "sample_data"
    try:
        [entry] = json.loads((folder / "sources.json").read_text())
        raw = (folder / entry["file"]).read_bytes()
    except (OSError, ValueError, KeyError) as exc:
        raise FileNotFoundError(
            f"the H&E sample image is missing from {folder} ({exc}); reinstall napari-cytosyn"
        ) from exc
    digest = hashlib.sha256(raw).hexdigest()
    if digest != entry["sha256"]:
        raise ValueError(
            f"{entry['file']} in {folder} has sha256 {digest}, not the {entry['sha256']} of "
            "its sources.json entry; reinstall napari-cytosyn"
        )
    import io

    from PIL import Image

    with Image.open(io.BytesIO(raw)) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    if list(rgb.shape) != entry["shape"]:
        raise ValueError(f"{entry['file']} is {rgb.shape}, sources.json says {entry['shape']}")
    return SampleImage(rgb=rgb, mpp=float(entry["mpp"]), source=entry)


def _sample_entry() -> dict[str, Any]:
    """The ``sources.json`` entry of the shipped H&E image (no pixels read)."""
    folder = resources.files("napari_cytosyn._napari") / "sample_data"
    try:
        [entry] = json.loads((folder / "sources.json").read_text())
    except (OSError, ValueError) as exc:
        raise FileNotFoundError(
            f"the H&E sample's sources.json is missing from {folder} ({exc}); reinstall "
            "napari-cytosyn"
        ) from exc
    return entry
