"""Export layer: OME-Zarr (NGFF 0.4/0.5), pyramidal OME-TIFF and SVS-layout TIFF writers,
the synthetic mask beside TIFF exports (mask TIFF + QuPath GeoJSON), provenance.

Heavy imports (zarr, tifffile) happen inside the writer functions, so importing this package
is cheap.
"""

from napari_cytosyn.export.ome_tiff import write_ome_tiff
from napari_cytosyn.export.ome_zarr import write_ome_zarr
from napari_cytosyn.export.sidecars import sidecar_paths
from napari_cytosyn.export.slide_export import FORMATS, export_slide, output_format
from napari_cytosyn.export.tiff import write_tiff
from napari_cytosyn.slide.provenance import build_provenance, file_sha256
from napari_cytosyn.slide.store_io import IncompleteSlideError

__all__ = [
    "FORMATS",
    "IncompleteSlideError",
    "build_provenance",
    "export_slide",
    "file_sha256",
    "output_format",
    "sidecar_paths",
    "write_ome_tiff",
    "write_ome_zarr",
    "write_tiff",
]
