"""Quality metrics: they recover known nuclei and tell H&E-like tissue from noise."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.color import hed2rgb
from skimage.draw import disk

from napari_cytosyn.quality import (
    REALISM_FEATURES,
    auc,
    cv_auc,
    h_sharpness,
    hed_distance,
    hed_histograms,
    nuclear_texture,
    nuclei_stats,
    realism_features,
    relative_error,
    segment_nuclei,
)


def synthetic_he(
    seed: int, n_nuclei: int = 40, radius_px: int = 6, size: int = 256
) -> tuple[np.ndarray, int]:
    """H&E-like tile from known stain concentrations: eosin background, haematoxylin disks.

    Returns the uint8 RGB tile and the number of nuclei placed (non-overlapping, away from the
    border).
    """
    rng = np.random.default_rng(seed)
    hed = np.zeros((size, size, 3))
    hed[..., 1] = 0.035 + 0.005 * rng.standard_normal((size, size))
    hed[..., 0] = 0.01 + 0.003 * rng.standard_normal((size, size))
    centres: list[tuple[int, int]] = []
    while len(centres) < n_nuclei:
        c = tuple(rng.integers(radius_px + 2, size - radius_px - 2, 2))
        if all((c[0] - a) ** 2 + (c[1] - b) ** 2 > (2 * radius_px + 4) ** 2 for a, b in centres):
            centres.append(c)
    for c in centres:
        rr, cc = disk(c, radius_px, shape=(size, size))
        hed[rr, cc, 0] = 0.15 + 0.01 * rng.standard_normal(len(rr))
    rgb = np.clip(hed2rgb(hed), 0, 1)
    return np.round(rgb * 255).astype(np.uint8), len(centres)


def test_segmentation_recovers_count_and_area_of_known_nuclei():
    rgb, n = synthetic_he(0)
    stats = nuclei_stats(rgb, mpp=0.5)
    true_area_um2 = np.pi * 6**2 * 0.25
    assert stats.count == n
    assert relative_error(stats.mean_area_um2, true_area_um2) < 0.15
    assert stats.density_per_mm2 == pytest.approx(n / (256 * 256 * 0.25 / 1e6))


def test_a_spot_of_saturated_ink_loses_the_nuclei_unless_otsu_is_clipped():
    # 16 x 16 px of R = G = 0 blue (0.4 % of the image, a pen mark): Otsu's threshold moves to
    # its haematoxylin level and the nuclei are lost; clipped at the 99th percentile it is not
    rgb, n = synthetic_he(0)
    rgb[120:136, 120:136] = (0, 0, 73)
    assert nuclei_stats(rgb, mpp=0.5).count <= 1
    assert abs(nuclei_stats(rgb, mpp=0.5, clip=99.0).count - n) <= 1


def test_touching_nuclei_are_split_by_watershed():
    hed = np.zeros((64, 96, 3))
    hed[..., 1] = 0.035
    for cx in (38, 56):  # two disks of radius 10 overlapping by 2 px
        rr, cc = disk((32, cx), 10)
        hed[rr, cc, 0] = 0.15
    rgb = np.round(np.clip(hed2rgb(hed), 0, 1) * 255).astype(np.uint8)
    assert segment_nuclei(rgb, mpp=0.5).max() == 2


def _blobby_he(seed: int, size: int = 224) -> np.ndarray:
    """H&E-like tile of touching, irregular nuclei of many sizes, up to the tile's edges."""
    from skimage.filters import gaussian

    rng = np.random.default_rng(seed)
    field = gaussian(rng.standard_normal((size, size)), sigma=rng.uniform(2.0, 5.0))
    od = np.zeros((size, size, 3))
    od[..., 1] = 0.035 + 0.005 * rng.standard_normal((size, size))
    od[..., 0] = 0.02 + np.clip(field / field.std(), 0, None) * 0.06
    return np.round(np.clip(hed2rgb(od), 0, 1) * 255).astype(np.uint8)


def _segment_nuclei_as_scikit_image(rgb: np.ndarray, mpp: float = 0.5) -> np.ndarray:
    """segment_nuclei's pipeline written with scikit-image's and scipy's own functions."""
    from scipy import ndimage as ndi
    from skimage.color import rgb2hed
    from skimage.feature import peak_local_max
    from skimage.filters import gaussian, threshold_otsu
    from skimage.measure import label
    from skimage.segmentation import watershed

    h = gaussian(rgb2hed(rgb)[..., 0], sigma=0.5 / mpp)
    mask = ndi.binary_opening(ndi.binary_fill_holes(h > threshold_otsu(h)), iterations=1)
    lab = label(mask)
    mask = (np.bincount(lab.ravel()) >= round(8.0 / mpp**2))[lab] & mask
    dist = ndi.distance_transform_edt(mask)
    peaks = peak_local_max(dist, min_distance=round(3.0 / mpp), labels=label(mask))
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-dist, markers, mask=mask).astype(np.int32)


def test_fast_segmentation_gives_scikit_image_s_labels_exactly():
    """hed, hole filling and the per-label peaks are faster paths to the same values: the
    tissue descriptor (a twin's condition) must not change with them."""
    from skimage.color import rgb2hed

    from napari_cytosyn.quality import hed

    rng = np.random.default_rng(0)
    tiles = [_blobby_he(s) for s in range(6)] + [synthetic_he(5)[0]]
    tiles.append(rng.integers(0, 256, (96, 160, 3), dtype=np.uint8))  # noise: many tiny objects
    glass = _blobby_he(7)
    glass[:100] = 243
    tiles.append(glass)
    for rgb in tiles:
        assert np.array_equal(hed(rgb), rgb2hed(rgb))
        for mpp in (0.5, 0.25):
            ref = _segment_nuclei_as_scikit_image(rgb, mpp)
            assert ref.max() > 1
            assert np.array_equal(segment_nuclei(rgb, mpp), ref)


def test_metrics_tell_tissue_from_noise():
    tissue_a, _ = synthetic_he(1)
    tissue_b, _ = synthetic_he(2)
    noise = np.random.default_rng(3).integers(0, 256, tissue_a.shape, dtype=np.uint8)
    d_tissue = hed_distance(tissue_a, tissue_b)
    d_noise = hed_distance(tissue_a, noise)
    assert d_noise > 5 * d_tissue
    real = nuclei_stats([tissue_a, tissue_b])
    fake = nuclei_stats(noise)
    assert relative_error(fake.mean_area_um2, real.mean_area_um2) > 0.5


def test_hed_histograms_are_normalised_and_identical_images_have_zero_distance():
    rgb, _ = synthetic_he(4)
    h, e = hed_histograms(rgb)
    assert h.sum() == pytest.approx(1.0)
    assert e.sum() == pytest.approx(1.0)
    assert hed_distance(rgb, [rgb, rgb]) == pytest.approx(0.0, abs=1e-12)


def test_non_rgb_input_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="uint8 RGB"):
        nuclei_stats(np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="uint8 RGB"):
        hed_distance(np.zeros((8, 8, 3), np.float32), np.zeros((8, 8, 3), np.uint8))


def test_sharpness_drops_when_the_tissue_is_blurred_and_respects_the_mask():
    from skimage.filters import gaussian

    rgb, _ = synthetic_he(1)
    blurred = np.round(gaussian(rgb, sigma=2, channel_axis=-1) * 255).astype(np.uint8)
    assert h_sharpness(blurred) < 0.3 * h_sharpness(rgb)
    mask = np.zeros(rgb.shape[:2], bool)
    mask[:, :128] = True
    sharp_left = np.concatenate([rgb[:, :128], blurred[:, 128:]], 1)
    assert h_sharpness(sharp_left, mask) > 3 * h_sharpness(sharp_left, ~mask)
    with pytest.raises(ValueError, match="mask shape"):
        h_sharpness(rgb, mask[:10])


def test_nuclear_texture_sees_chromatin_variation():
    flat, _ = synthetic_he(2)  # nuclei with 0.01 OD noise
    rng = np.random.default_rng(3)
    hed = np.zeros((256, 256, 3))
    hed[..., 1] = 0.035
    for c in [(40 + 60 * i, 40 + 60 * j) for i in range(4) for j in range(4)]:
        rr, cc = disk(c, 8)
        hed[rr, cc, 0] = 0.15 + 0.05 * rng.standard_normal(len(rr))  # coarse chromatin
    grainy = np.round(np.clip(hed2rgb(hed), 0, 1) * 255).astype(np.uint8)
    assert nuclear_texture(grainy) > 2 * nuclear_texture(flat)
    assert nuclear_texture(np.full((64, 64, 3), 240, np.uint8)) == 0.0


def test_auc_matches_hand_counts_and_cross_validation_separates_only_different_sets():
    assert auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert auc([1, 1], [0, 1]) == 0.5
    with pytest.raises(ValueError, match="both classes"):
        auc([1, 2], [1, 1])
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, (40, 3)), rng.normal(0, 1, (40, 3))
    y = np.r_[np.zeros(40), np.ones(40)]
    assert cv_auc(np.vstack([a, b]), y) < 0.7
    assert cv_auc(np.vstack([a, b + 3.0]), y) > 0.95
    assert cv_auc(np.vstack([a, b]), y) == cv_auc(np.vstack([a, b]), y)  # seeded folds


def test_realism_features_are_finite_and_tell_nuclei_sizes_apart():
    small = [synthetic_he(s, radius_px=4)[0] for s in range(6)]
    large = [synthetic_he(10 + s, n_nuclei=25, radius_px=9)[0] for s in range(6)]
    feats = np.stack([realism_features(t) for t in small + large])
    assert feats.shape == (12, len(REALISM_FEATURES))
    assert np.isfinite(feats).all()
    area = REALISM_FEATURES.index("nuclear_area_um2")
    assert feats[6:, area].min() > 2 * feats[:6, area].max()
