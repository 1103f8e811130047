"""Widget settings that persist between napari sessions (model, device, cache folder).

napari does not store plugin configuration for npe2 plugins (the manifest's ``configuration``
contribution is declared by npe2 but not read by napari 0.5-0.9), so the settings live in a
small JSON file in the user's config folder (``platformdirs``). ``NAPARI_CYTOSYN_CONFIG`` points
it elsewhere (tests, shared machines). ``trust_remote_code`` is deliberately not persisted: it
is an opt-in for one session, never a silent default.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

APP = "napari-cytosyn"
ENV_CONFIG = "NAPARI_CYTOSYN_CONFIG"


def default_cache_dir() -> Path:
    """Where edit stores, synthetic slides and sample files go unless the user chooses."""
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP))


def config_path() -> Path:
    """The settings file: ``$NAPARI_CYTOSYN_CONFIG`` or ``<user config dir>/widget.json``."""
    env = os.environ.get(ENV_CONFIG)
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_config_dir(APP)) / "widget.json"


@dataclass
class WidgetConfig:
    """What the dock widget remembers.

    model: registry name (``cytosyn-tiny``, ``cytosyn``, ``pixcell-256``...) or ``diffusers``.
    source: hub id or local folder for the model (``""``: the registry's default source).
    device: ``auto`` or a torch device name.
    cache_dir: folder for edit stores and synthetic slides (``""``: :func:`default_cache_dir`).
    autocast: ``SamplerSettings.autocast`` of new work (``auto``, ``off``, ``bfloat16``).
    export_dir: the folder of the last export (``""``: next to the slide).
    """

    model: str = "cytosyn-tiny"
    source: str = ""
    device: str = "auto"
    cache_dir: str = ""
    autocast: str = "auto"
    export_dir: str = ""

    def cache_path(self) -> Path:
        """The cache folder as a path (the default one when unset)."""
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_config(path: str | os.PathLike | None = None) -> WidgetConfig:
    """Read the settings; a missing or unreadable file gives the defaults (never an error:
    a broken settings file must not stop the widget from opening)."""
    path = Path(path) if path is not None else config_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return WidgetConfig()
    if not isinstance(data, dict):
        return WidgetConfig()
    names = {f.name for f in dataclasses.fields(WidgetConfig)}
    return WidgetConfig(**{k: str(v) for k, v in data.items() if k in names})


def save_config(config: WidgetConfig, path: str | os.PathLike | None = None) -> Path:
    """Write the settings atomically (temporary file, then rename); returns the path."""
    path = Path(path) if path is not None else config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(config.to_dict(), indent=2))
    os.replace(tmp, path)
    return path
