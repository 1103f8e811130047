"""Segmentation test kit: synthetic H&E with known nuclei, and a runner that scores any tool.

Layouts (:mod:`.layouts`) are the ground truth; :mod:`.synthesis` paints H&E whose nuclei sit
where a layout says (through the tiled sampling engine); :mod:`.stress` makes variants of the
same image (stain, blur, JPEG, noise, scale); :mod:`.runner` runs a segmentation method (Python
callable, shell command or npe2 command) on them and scores it (:mod:`.metrics`);
:mod:`.report` writes tables and plots. :mod:`.methods` holds two reference segmenters.
No napari import anywhere here.
"""
