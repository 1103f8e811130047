"""Qt helper for scripts and tests that use a sample layer right after ``viewer.open_sample``."""

from __future__ import annotations

import time
from typing import Any

from qtpy.QtWidgets import QApplication

from napari_cytosyn._napari._sample_data import loading


def wait_loaded(layer: Any, timeout_s: float = 120.0) -> Any:
    """Process Qt events until a sample layer's pixels are loaded (scripts and tests that use
    the layer right after ``viewer.open_sample``); returns the layer. Raises ``TimeoutError``
    naming the layer after ``timeout_s``."""
    end = time.monotonic() + timeout_s
    while loading(layer):
        if time.monotonic() > end:
            raise TimeoutError(f"{layer.name!r} did not load within {timeout_s:g} s")
        QApplication.processEvents()
        time.sleep(0.005)
    return layer
