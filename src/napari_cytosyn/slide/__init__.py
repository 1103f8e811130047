"""slide layer of napari-cytosyn."""
