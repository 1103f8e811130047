"""Layout generator statistics match their parameters; labels and real tissue become layouts."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree
from skimage.measure import regionprops

from napari_cytosyn.testkit.layouts import (
    LayoutParams,
    layout_from_image,
    layout_from_labels,
    procedural_layout,
)


def _nn_ratio(labels: np.ndarray) -> float:
    """Clark-Evans ratio: mean nearest-neighbour distance over its value for a Poisson process
    (1 = random, < 1 = clustered)."""
    pts = np.array([r.centroid for r in regionprops(labels)])
    d, _ = cKDTree(pts).query(pts, k=2)
    density = len(pts) / labels.size
    return float(d[:, 1].mean() / (0.5 / np.sqrt(density)))


def test_statistics_match_parameters():
    p = LayoutParams(
        density_per_mm2=2000,
        radius_um=3.0,
        radius_sd_um=0.3,
        elongation=1.5,
        elongation_sd=0.05,
        clustering=0.0,
    )
    lay = procedural_layout((1024, 1024), p, seed=1, mpp=0.5)
    area_mm2 = (1024 * 0.5e-3) ** 2
    expected = p.density_per_mm2 * area_mm2  # ~524
    assert abs(lay.n_nuclei - expected) < 0.1 * expected
    props = regionprops(lay.labels)
    r_um = np.array([np.sqrt(r.area / np.pi) * 0.5 for r in props])
    assert np.median(r_um) == pytest.approx(3.0, rel=0.08)
    elong = np.array([r.axis_major_length / r.axis_minor_length for r in props])
    assert np.median(elong) == pytest.approx(1.5, rel=0.12)
    assert 0.9 < _nn_ratio(lay.labels) < 1.15


def test_clustering_and_tissue_fraction():
    clustered = procedural_layout(
        (768, 768), LayoutParams(density_per_mm2=2000, clustering=1.0, tissue_fraction=1.0), seed=2
    )
    assert _nn_ratio(clustered.labels) < 0.8
    half = procedural_layout((768, 768), LayoutParams(tissue_fraction=0.5), seed=3)
    assert half.tissue.mean() == pytest.approx(0.5, abs=0.02)
    assert not (half.labels[~half.tissue] > 0).any()


def test_same_seed_same_layout():
    a = procedural_layout((256, 256), seed=7)
    b = procedural_layout((256, 256), seed=7)
    c = procedural_layout((256, 256), seed=8)
    assert np.array_equal(a.labels, b.labels) and np.array_equal(a.tissue, b.tissue)
    assert not np.array_equal(a.labels, c.labels)
    assert a.labels.max() == a.n_nuclei  # ids are 1..N


def test_bad_parameters_are_named():
    with pytest.raises(ValueError, match="clustering"):
        LayoutParams(clustering=2.0)
    with pytest.raises(ValueError, match="at least 8"):
        procedural_layout((4, 100))


def test_layout_from_labels_resamples_to_model_mpp():
    lab = np.zeros((40, 60), np.int32)
    lab[10:20, 10:20] = 7
    lay = layout_from_labels(lab, mpp=0.25, model_mpp=0.5)
    assert lay.shape == (20, 30)
    assert lay.labels.max() == 1 and (lay.labels == 1).sum() == 25
    with pytest.raises(ValueError, match="2-D"):
        layout_from_labels(np.zeros((2, 4, 4), np.int32))


def test_layout_from_real_tissue(training_like_image):
    lay = layout_from_image(training_like_image)
    assert lay.source["kind"] == "image"
    assert lay.n_nuclei == 16 and lay.tissue.all()
