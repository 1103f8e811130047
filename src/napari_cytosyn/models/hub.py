"""Getting model folders from the Hugging Face Hub or the local disk, safely.

A source is a hub id (``owner/name``) or a local folder; downloads use ``snapshot_download`` with
the revision, cache and token asked for (default ``HF_TOKEN`` or the stored login), and
``HF_HUB_OFFLINE=1``/``local_files_only=True`` never touch the network. Only safetensors load:
downloads ask for configs, safetensors and text only (pickles are never fetched) and a local
component with nothing but pickles is refused. Python files are fetched only with
``trust_remote_code=True`` and only those :mod:`.remote_code` names. No torch import here.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# re-exported: the package's errors are importable from here
from .remote_code import RemoteCodeRefused as RemoteCodeRefused

log = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl", ".pickle")
SAFE_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.md", "LICENSE*"]
_OFFLINE_VALUES = {"1", "on", "true", "yes"}

DownloadProgress = Callable[[int, int], None]


class ModelAccessError(RuntimeError):
    """The model's files could not be obtained (offline, gated, missing, no licence accepted)."""


class PickleWeightsRefused(ValueError):
    """A model component is stored only as a pickled checkpoint, which could run arbitrary code."""


class UnknownModelError(KeyError):
    """A model name that is neither registered nor a ``backend:source`` form."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plain
        return str(self.args[0])


@dataclass(frozen=True)
class HubOptions:
    """How to fetch a model: ``revision`` (branch, tag or commit; ``None`` = default branch),
    ``token`` (``None`` = ``HF_TOKEN`` or the stored login), ``cache_dir`` (``None`` = the HF
    defaults), ``local_files_only`` (never the network; also ``HF_HUB_OFFLINE=1``),
    ``trust_remote_code`` (allow Python files shipped with the model to run), ``progress``
    (``progress(done_bytes, total_bytes)`` during downloads; files with huggingface_hub versions
    that report no bytes).
    """

    revision: str | None = None
    token: str | bool | None = None
    cache_dir: str | os.PathLike | None = None
    local_files_only: bool = False
    trust_remote_code: bool = False
    progress: DownloadProgress | None = None

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> HubOptions:
        """Build from ``load_model(**hub_options)``; unknown keys are an error naming them."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(f"unknown hub option(s) {unknown}; expected some of {sorted(known)}")
        return cls(**kwargs)

    @property
    def offline(self) -> bool:
        env = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _OFFLINE_VALUES
        return self.local_files_only or env


def is_local_source(source: str | os.PathLike) -> bool:
    """True when ``source`` names an existing folder (rather than a hub id)."""
    return Path(source).expanduser().is_dir()


def _progress_tqdm(callback: DownloadProgress):
    """A tqdm class for ``snapshot_download`` that reports progress to ``callback``.

    Recent huggingface_hub versions open several bars with this class: bytes written
    ("Reconstructing"), bytes transferred ("Downloading bytes") and files done. The written-bytes
    bar is reported; the files bar only while no bytes bar exists (older versions have none).
    """
    from huggingface_hub.utils import tqdm as hf_tqdm

    state = {"bytes_bar": False}

    class _CallbackTqdm(hf_tqdm):
        # Counted here as well: a disabled tqdm (HF_HUB_DISABLE_PROGRESS_BARS) keeps no state.
        def __init__(self, *args, **kwargs):
            self._cb_done = int(kwargs.get("initial") or 0)
            self._cb_total = int(kwargs.get("total") or 0)
            is_bytes = kwargs.get("unit") == "B"
            transfer = str(kwargs.get("desc") or "").startswith("Downloading bytes")
            self._cb_kind = "skip" if transfer else ("bytes" if is_bytes else "files")
            state["bytes_bar"] |= self._cb_kind == "bytes"
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            self._cb_done += int(n or 0)
            if self._cb_kind == "bytes" or (self._cb_kind == "files" and not state["bytes_bar"]):
                callback(self._cb_done, int(getattr(self, "total", None) or self._cb_total))
            return super().update(n)

    return _CallbackTqdm


def fetch(
    source: str | os.PathLike,
    options: HubOptions,
    *,
    gated: bool = False,
    licence: str | None = None,
    allow_patterns: list[str] | None = None,
) -> Path:
    """Local folder for ``source``: the folder itself, or a (cached) hub snapshot.

    ``allow_patterns``: the files to download (default :data:`SAFE_PATTERNS`).

    Raises :class:`ModelAccessError` with what to do when the files are not obtainable.
    """
    if is_local_source(source):
        return Path(source).expanduser().resolve()
    repo_id = str(source)
    if repo_id.count("/") != 1 or repo_id.startswith((".", "/", "~")):
        raise ModelAccessError(
            f"{repo_id!r} is neither an existing folder nor a Hugging Face repo id (owner/name)"
        )
    from huggingface_hub import get_token, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    token = options.token if options.token is not None else get_token()
    access = f"https://huggingface.co/{repo_id}"
    gate_note = (
        f" {repo_id} is gated: accept its licence ({licence or 'see the model card'}) at "
        f"{access} with your account, then set HF_TOKEN or run `hf auth login`."
        if gated
        else ""
    )
    kwargs: dict[str, Any] = dict(
        revision=options.revision,
        cache_dir=options.cache_dir,
        token=token,
        local_files_only=options.offline,
        allow_patterns=list(allow_patterns or SAFE_PATTERNS),
    )
    if options.progress is not None:
        kwargs["tqdm_class"] = _progress_tqdm(options.progress)
    try:
        folder = snapshot_download(repo_id, **kwargs)
        if options.trust_remote_code and allow_patterns is None:
            from .remote_code import fetch_code

            def download(paths: list[str]) -> None:
                snapshot_download(repo_id, **{**kwargs, "allow_patterns": paths})

            fetch_code(Path(folder), download)
    except GatedRepoError as err:
        raise ModelAccessError(
            f"access to {repo_id} was refused (gated repository).{gate_note}"
            + ("" if token else " No Hugging Face token was found.")
        ) from err
    except RepositoryNotFoundError as err:
        raise ModelAccessError(
            f"{repo_id} was not found on the Hugging Face Hub, or it is private/gated and the "
            f"token has no access.{gate_note}"
        ) from err
    except RevisionNotFoundError as err:
        raise ModelAccessError(f"revision {options.revision!r} not found in {repo_id}") from err
    except LocalEntryNotFoundError as err:
        why = (
            "offline mode (HF_HUB_OFFLINE=1 or local_files_only=True)"
            if options.offline
            else "the Hub could not be reached"
        )
        raise ModelAccessError(
            f"{repo_id} (revision {options.revision or 'main'}) is not in the local cache "
            f"({options.cache_dir or 'default HF cache'}) and {why}.{gate_note}"
            + ("" if token or not gated else " No Hugging Face token was found.")
            + " Download it once online, or pass a local copy of the repository folder "
            "as the source."
        ) from err
    return Path(folder)


def weights_origin(source: Any, options: HubOptions, folder: Path) -> dict[str, Any]:
    """Provenance of loaded weights: ``source``, ``revision`` and ``commit``, the commit a
    hub-cache snapshot folder holds (``.../snapshots/<sha>``), else ``None``."""
    name = folder.name
    commit = name if folder.parent.name == "snapshots" and len(name) == 40 else None
    return {"source": str(source), "revision": options.revision, "commit": commit}


def read_json(path: Path) -> dict[str, Any]:
    """A JSON file as a dict, with the file named in the error."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelAccessError(f"{path} is missing; is this a diffusers model folder?") from None
    except json.JSONDecodeError as err:
        raise ModelAccessError(f"{path} is not valid JSON: {err}") from None


def check_safetensors(folder: Path, components: list[str]) -> None:
    """Refuse components whose weights exist only as pickled checkpoints.

    ``components``: sub-folders holding ``nn.Module`` weights (e.g. ``transformer``, ``vae``).
    """
    for name in components:
        sub = folder / name
        if not sub.is_dir():
            raise ModelAccessError(f"{folder} has no {name}/ folder listed in model_index.json")
        files = [p for p in sub.iterdir() if p.is_file()]
        safe = [p for p in files if p.suffix == ".safetensors"]
        pickles = [p.name for p in files if p.suffix in PICKLE_SUFFIXES]
        if not safe:
            if pickles:
                raise PickleWeightsRefused(
                    f"{sub} holds only pickled weights ({', '.join(sorted(pickles))}); pickles "
                    "can execute code when loaded and are refused. Convert them to safetensors "
                    "(safetensors.torch.save_file) or use a safetensors revision."
                )
            raise ModelAccessError(
                f"{sub} has no .safetensors weights (pickled checkpoints are never downloaded)"
            )
