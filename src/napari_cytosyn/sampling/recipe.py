"""The recipe of a generation: one versioned dict that fixes its pixels, stored once.

``{"version": 2, "mode": ..., "model": model.provenance(), "core": settings.core_dict(), ...}``
plus the configs the mode reads (:data:`MODE_CONFIGS`): ``region`` and ``decode`` (modes
``region`` and ``inpaint``), ``inpaint``, or ``lazy`` (the :class:`~.lazy.LazySpec` of synthetic
slides). A knob a mode ignores never enters its recipe. Stores keep the recipe as one attribute
and compare it whole on reopen (:func:`recipe_differences`); there is no older version to read.
"""

from __future__ import annotations

from typing import Any

from .settings import SamplerSettings

RECIPE_VERSION = 2
#: The configs each mode reads, besides the core.
MODE_CONFIGS: dict[str, tuple[str, ...]] = {
    "region": ("region", "decode"),
    "inpaint": ("region", "decode", "inpaint"),
    "lazy": ("lazy",),
}


def make_recipe(model: Any, settings: SamplerSettings, mode: str, lazy: Any = None) -> dict:
    """The recipe of ``mode`` (``region``, ``inpaint`` or ``lazy``) with ``model`` and
    ``settings`` (``autocast`` already resolved, see :func:`~.precision.resolve_settings`);
    ``lazy``: the :class:`~.lazy.LazySpec` of mode ``lazy`` (its settings must be ``settings``).
    """
    if mode not in MODE_CONFIGS:
        raise ValueError(f"unknown recipe mode {mode!r}; choose one of {', '.join(MODE_CONFIGS)}")
    if (mode == "lazy") != (lazy is not None):
        raise ValueError("a LazySpec is given with mode 'lazy' and only then")
    if lazy is not None and lazy.settings != settings:
        raise ValueError("the LazySpec's settings differ from the recipe's settings")
    describe = getattr(model, "provenance", None)
    model_info = describe() if callable(describe) else {"name": getattr(model, "name", None)}
    recipe: dict[str, Any] = {
        "version": RECIPE_VERSION,
        "mode": mode,
        "model": model_info,
        "core": settings.core_dict(),
    }
    for name in MODE_CONFIGS[mode]:
        recipe[name] = lazy.to_dict() if name == "lazy" else getattr(settings, name).to_dict()
    return recipe


def settings_of(recipe: dict) -> SamplerSettings:
    """The :class:`SamplerSettings` a recipe was made with (configs its mode ignores at their
    defaults)."""
    check_version(recipe)
    d = dict(recipe["core"])
    for name in ("region", "decode", "inpaint"):
        if name in recipe:
            d[name] = recipe[name]
    return SamplerSettings.from_dict(d)


def check_version(recipe: Any) -> None:
    """A ``ValueError`` unless ``recipe`` is a recipe of this :data:`RECIPE_VERSION`."""
    version = recipe.get("version") if isinstance(recipe, dict) else None
    if version != RECIPE_VERSION:
        raise ValueError(
            f"recipe version {version!r} is not {RECIPE_VERSION}: made by another napari-cytosyn "
            "version; create the store again"
        )


def recipe_differences(stored: dict, given: dict, prefix: str = "") -> list[str]:
    """Where two recipes differ, one ``"path: stored != given"`` line per leaf, sorted."""
    out = []
    for key in sorted(set(stored) | set(given)):
        a, b = stored.get(key, "<absent>"), given.get(key, "<absent>")
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(recipe_differences(a, b, f"{prefix}{key}."))
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} (stored) != {b!r} (given)")
    return out
