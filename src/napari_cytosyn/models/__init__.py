"""Model backends behind one small protocol (see :mod:`.protocol`)."""
