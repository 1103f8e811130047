"""_napari layer of napari-cytosyn."""
