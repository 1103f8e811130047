"""Segmentation test kit: synthetic H&E with known nuclei, and a runner that scores any tool.

:mod:`.layouts` (ground truth) -> :mod:`.synthesis` (H&E whose nuclei sit there) -> :mod:`.stress`
(variants) -> :mod:`.runner` (run a method, score it with :mod:`.metrics`) -> :mod:`.report`;
:mod:`.methods` holds two reference segmenters. No napari import here.
"""
