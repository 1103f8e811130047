"""napari-cytosyn: synthesize and inpaint H&E whole-slide images with latent diffusion models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("napari-cytosyn")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
