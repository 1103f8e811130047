"""sampling layer of napari-cytosyn."""
