"""OME-Zarr (NGFF 0.4 on zarr v2, or 0.5 on zarr v3) writer for RGB pyramids and synthetic masks.

Layout of ``slide.ome.zarr``::

    .zattrs / zarr.json     multiscales (axes c, y, x; micrometer), omero (RGB), napari_cytosyn
    0, 1, ...               uint8 (3, y, x) levels, chunks (3, chunk_px, chunk_px), 0.5: shards
    labels/synthetic/0...   uint8 (1, y, x) mask levels (1 = synthetic), image-label metadata

NGFF metadata is built and the output validated with ome-zarr-models; chunks go through zarr's
API. Level ``k`` of downsample ``d`` has ``scale = mpp * d`` and ``translation =
mpp * (d - 1) / 2`` (pixel centres sit at the centre of the level-0 block they average).
Blocks are streamed from the sources (memory: a few blocks a thread); levels not given are
reduced from the level just written, read back.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from napari_cytosyn.export._stream import (
    ProgressCounter,
    ProgressFn,
    atomic_output,
    cyx_reader,
    default_workers,
    level_downsamples,
    pyramid_shapes,
    source_reader,
    validate_levels,
)
from napari_cytosyn.export._zarr_levels import (
    block_px_for,
    chunk_count,
    create_level_array,
    reader_from_coarser,
    shard_px_for,
    write_level,
)
from napari_cytosyn.pixel_size import PixelSize
from napari_cytosyn.slide.provenance import PROVENANCE_KEY, jsonable

NgffVersion = Literal["0.4", "0.5"]
MASK_LABEL = "synthetic"
_RGB = (("Red", "FF0000"), ("Green", "00FF00"), ("Blue", "0000FF"))


def _models(version: NgffVersion) -> Any:
    if version == "0.4":
        from ome_zarr_models import v04

        return v04
    from ome_zarr_models import v05

    return v05


def _multiscale(
    shapes: Sequence[Sequence[int]],
    mpp: PixelSize | None,
    name: str,
    version: NgffVersion,
    method: str,
    reduce: str | None,
) -> Any:
    """One NGFF ``Multiscale`` (ome-zarr-models) for (c, y, x) levels of the given (y, x) shapes."""
    from ome_zarr_models.common.coordinate_transformations import (
        VectorScale,
        VectorTranslation,
    )

    models = _models(version)
    unit = {"unit": "micrometer"} if mpp is not None else {}
    axes = [
        models.axes.Axis(name="c", type="channel"),
        models.axes.Axis(name="y", type="space", **unit),
        models.axes.Axis(name="x", type="space", **unit),
    ]
    my, mx = (mpp.y, mpp.x) if mpp is not None else (1.0, 1.0)
    datasets = []
    for i, (dy, dx) in enumerate(level_downsamples(shapes)):
        transforms: list[Any] = [VectorScale(type="scale", scale=[1.0, my * dy, mx * dx])]
        if i > 0:
            shift = [0.0, my * (dy - 1) / 2, mx * (dx - 1) / 2]
            transforms.append(VectorTranslation(type="translation", translation=shift))
        datasets.append(
            models.multiscales.Dataset(path=str(i), coordinateTransformations=tuple(transforms))
        )
    extra: dict[str, Any] = {"version": "0.4"} if version == "0.4" else {}
    return models.multiscales.Multiscale(
        axes=tuple(axes),
        datasets=tuple(datasets),
        name=name,
        type=reduce if len(shapes) > 1 else None,
        metadata={"method": method},
        **extra,
    )


def _group_attrs(version: NgffVersion, model: Any, **fields: Any) -> dict[str, Any]:
    """The group attributes of an ome-zarr-models attrs ``model``: top-level keys for 0.4,
    under ``"ome"`` (with ``version``) for 0.5."""
    extra = {"version": "0.5"} if version == "0.5" else {}
    attrs = model(**fields, **extra).model_dump(mode="json", by_alias=True, exclude_none=True)
    return attrs if version == "0.4" else {"ome": attrs}


def image_attrs(
    shapes: Sequence[Sequence[int]],
    mpp: PixelSize | None,
    name: str,
    version: NgffVersion,
    method: str,
) -> dict[str, Any]:
    """NGFF image attributes (``multiscales`` + ``omero``), built by ome-zarr-models."""
    from ome_zarr_models.common.omero import Channel, Omero, Window

    window = Window(start=0, end=255, min=0, max=255)
    channels = [
        Channel(color=color, window=window, label=label, active=True, coefficient=1.0,
                family="linear", inverted=False)
        for label, color in _RGB
    ]  # fmt: skip
    # "color" model: viewers that honour omero rendering show the three channels as one RGB
    omero = Omero(
        channels=channels, name=name, rdefs={"model": "color", "defaultT": 0, "defaultZ": 0}
    )
    multiscale = _multiscale(shapes, mpp, name, version, method, "mean")
    return _group_attrs(
        version, _models(version).image.ImageAttrs, multiscales=[multiscale], omero=omero
    )


def label_attrs(
    shapes: Sequence[Sequence[int]], mpp: PixelSize | None, version: NgffVersion
) -> dict[str, Any]:
    """``image-label`` attributes of the synthetic mask: value 1 = synthetic (magenta)."""
    models = _models(version)
    types = models.image_label_types
    Color, Label, Property, Source = types.Color, types.Label, types.Property, types.Source
    label = Label(
        colors=(Color(label_value=1, rgba=(255, 0, 255, 128)),),
        properties=(Property(label_value=1, **{"class": MASK_LABEL}),),
        source=Source(image="../../"),
        **({"version": "0.4"} if version == "0.4" else {}),
    )
    method = "napari_cytosyn.chunk_grid.downsample_area max: synthetic if any of its children is"
    multiscale = _multiscale(shapes, mpp, MASK_LABEL, version, method, "max")
    return _group_attrs(
        version, models.image_label.ImageLabelAttrs, multiscales=[multiscale], image_label=label
    )


def labels_attrs(version: NgffVersion) -> dict[str, Any]:
    """``labels`` group attributes listing the one label image, ``synthetic``."""
    return _group_attrs(version, _models(version).labels.LabelsAttrs, labels=[MASK_LABEL])


BUILT_METHOD = (
    "napari_cytosyn.chunk_grid.downsample_area 2x2 mean, rounded half up (image); 2x2 max (mask)"
)


def write_ome_zarr(
    path: str | os.PathLike,
    levels: Sequence[Any],
    *,
    mpp: PixelSize | float | Sequence[float] | None = None,
    mask_levels: Sequence[Any] | None = None,
    provenance: dict[str, Any] | None = None,
    name: str | None = None,
    pyramid_method: str | None = None,
    version: NgffVersion = "0.4",
    chunk_px: int = 512,
    shards: str | int | None = "auto",
    overwrite: bool = False,
    workers: int | None = None,
    progress: ProgressFn | None = None,
    cancel: Any = None,
) -> Path:
    """Write an RGB pyramid (and optional synthetic mask) as an OME-Zarr image.

    Parameters
    ----------
    path: output folder (``*.ome.zarr``), written to a temporary sibling and renamed at the
        end; an existing path is refused unless ``overwrite``.
    levels: the pyramid, finest first, ``(y, x, 3)`` uint8 arrays (dask, zarr, numpy). With one
        level, 2x levels are built down to one chunk.
    mpp: level-0 pixel size (``PixelSize.from_any``); ``None`` writes pixel units.
    mask_levels: ``(y, x)`` arrays, non-zero = synthetic, one per level or only the finest;
        written as ``labels/synthetic`` (1 = synthetic).
    provenance: the group attribute ``napari_cytosyn`` (``build_provenance``).
    name: NGFF ``multiscales[0].name`` and ``omero.name`` (default: the output's stem).
    pyramid_method: how the given coarse levels were made (``multiscales[0].metadata.method``).
    version: ``"0.4"`` (zarr v2, widest reader support) or ``"0.5"`` (zarr v3).
    chunk_px: chunks are ``(3, chunk_px, chunk_px)``.
    shards: 0.5 only: ``"auto"`` (4 x 4 chunk shards for arrays of more than 256 chunks),
        ``None`` or a shard edge in px (a multiple of ``chunk_px``).
    workers: threads reading and compressing blocks (default ``min(4, cpu_count)``).
    progress: ``progress(done, total)`` in chunks; ``cancel.is_set()`` aborts (``Cancelled``),
        leaving no output.
    """
    import zarr

    if version not in ("0.4", "0.5"):
        raise ValueError(f"NGFF version must be '0.4' or '0.5', got {version!r}")
    validate_levels(levels)
    mpp_xy = PixelSize.from_any(mpp)
    chunk_px = int(chunk_px)
    if chunk_px < 16:
        raise ValueError(f"chunk_px must be >= 16, got {chunk_px}")
    shapes = pyramid_shapes(levels, chunk_px, mask_levels)
    zarr_format = 2 if version == "0.4" else 3
    shard_sizes = [shard_px_for(s, chunk_px, zarr_format, shards) for s in shapes]
    workers = default_workers(workers)
    name = name or Path(path).name.removesuffix(".zarr").removesuffix(".ome")
    given_method = pyramid_method or "levels as given by the caller"
    method = given_method if len(levels) > 1 else BUILT_METHOD

    tick = ProgressCounter(
        progress, chunk_count(shapes, chunk_px) * (2 if mask_levels is not None else 1)
    )
    with atomic_output(path, overwrite) as tmp:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=zarr_format)
        attrs = image_attrs(shapes, mpp_xy, name, version, method)
        root.attrs.update({**attrs, PROVENANCE_KEY: jsonable(provenance or {})})
        pyramid = (shapes, zarr_format, chunk_px, shard_sizes, workers, cancel, tick)
        _write_pyramid(root, levels, None, *pyramid)
        if mask_levels is not None:
            labels = root.create_group("labels")
            labels.attrs.update(labels_attrs(version))
            group = labels.create_group(MASK_LABEL)
            # the mask lives in the same physical space as the image: same axes and transforms
            group.attrs.update(label_attrs(shapes, mpp_xy, version))
            _write_pyramid(group, mask_levels, 1, *pyramid)
        validate_ome_zarr(tmp, mask=mask_levels is not None)
        if progress is not None and tick.done != tick.total:
            progress(tick.total, tick.total)
    return Path(path)


def validate_ome_zarr(path: str | os.PathLike, mask: bool = False) -> None:
    """Open the image (and its ``labels/synthetic``) with ome-zarr-models; raises if invalid."""
    import ome_zarr_models
    import zarr

    root = zarr.open_group(str(path), mode="r")
    ome_zarr_models.open_ome_zarr(root)
    if mask:
        ome_zarr_models.open_ome_zarr(root["labels"])
        ome_zarr_models.open_ome_zarr(root[f"labels/{MASK_LABEL}"])


def _write_pyramid(
    group: Any,
    sources: Sequence[Any],
    mask_value: int | None,
    shapes: Sequence[Sequence[int]],
    zarr_format: int,
    chunk_px: int,
    shard_sizes: Sequence[int | None],
    workers: int,
    cancel: Any,
    tick: Callable[[int], None],
) -> None:
    """Levels ``0, 1, ...`` of ``group``, ``(samples, y, x)`` uint8: the given ``sources`` (a
    mask as ``mask_value``), the rest reduced from the level just written (image: mean, mask:
    max)."""
    samples = 3 if mask_value is None else 1
    written: list[Any] = []
    for i, shape in enumerate(shapes):
        shard = shard_sizes[i]
        dst = create_level_array(
            group, str(i), (samples, *shape), (samples, chunk_px, chunk_px), zarr_format, shard
        )
        if i < len(sources):
            read = source_reader(sources[i], mask_value)
            block = block_px_for(sources[i], chunk_px, shard)
        else:
            reduce = "mean" if mask_value is None else "max"
            read = reader_from_coarser(cyx_reader(written[-1]), shapes[i - 1], shape, reduce)
            block = block_px_for(None, chunk_px, shard)
        write_level(dst, read, block, chunk_px, workers, cancel, tick)
        written.append(dst)
