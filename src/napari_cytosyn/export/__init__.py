"""export layer of napari-cytosyn."""
