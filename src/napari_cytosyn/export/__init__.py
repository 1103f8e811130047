"""Export layer: OME-Zarr (NGFF 0.4/0.5) and pyramidal OME-TIFF writers with provenance.

Heavy imports (zarr, tifffile) happen inside the writer functions, so importing this package
is cheap.
"""

from napari_cytosyn.export.ome_tiff import write_ome_tiff
from napari_cytosyn.export.ome_zarr import write_ome_zarr
from napari_cytosyn.export.provenance import build_provenance, file_sha256
from napari_cytosyn.export.slide_export import (
    IncompleteSlideError,
    export_slide,
    output_format,
    slide_provenance,
)

__all__ = [
    "IncompleteSlideError",
    "build_provenance",
    "export_slide",
    "file_sha256",
    "output_format",
    "slide_provenance",
    "write_ome_tiff",
    "write_ome_zarr",
]
