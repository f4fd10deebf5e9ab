"""Normalised predictive entropy and the ranking of high-uncertainty regions."""

import numpy as np
import pytest

from pancreas_ssl_seg.uncertainty import normalized_entropy, rank_uncertain_regions


def test_entropy_is_zero_where_all_samples_agree_with_certainty():
    one_hot = np.zeros((3, 4, 5, 6), np.float32)
    one_hot[1] = 1.0
    samples = np.stack([one_hot, one_hot, one_hot])        # three TTA samples, all certain
    assert np.all(normalized_entropy(samples.mean(axis=0)) == 0.0)


def test_entropy_is_one_for_uniform_and_in_unit_range():
    uniform = np.full((3, 2, 2, 2), 1 / 3, np.float32)
    np.testing.assert_allclose(normalized_entropy(uniform), 1.0, atol=1e-6)
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([0.5, 0.5, 0.5], size=(6, 7, 8)).transpose(3, 0, 1, 2)
    u = normalized_entropy(probs)
    assert u.dtype == np.float32 and u.min() >= 0.0 and u.max() <= 1.0
    # Disagreeing samples (class 1 vs class 2, 50/50) → entropy log2 / log3.
    split = np.zeros((3, 1, 1, 1), np.float32)
    split[1] = split[2] = 0.5
    np.testing.assert_allclose(normalized_entropy(split), np.log(2) / np.log(3), rtol=1e-6)


def test_regions_ranked_by_volume_times_mean_uncertainty():
    u = np.zeros((10, 30, 30), np.float32)
    labels = np.zeros(u.shape, np.uint8)
    u[1:3, 1:5, 1:5] = 0.9        # 32 voxels, score 32*0.9 = 28.8
    u[5:9, 10:20, 10:20] = 0.6    # 400 voxels, score 240 → rank 1
    labels[5:9, 10:20, 10:20] = 2
    u[0, 25, 25] = 0.95           # 1 voxel, below the minimum volume
    regions, items = rank_uncertain_regions(u, labels, threshold=0.5, voxel_volume_ml=0.001,
                                            min_volume_ml=0.005)
    assert [item["rank"] for item in items] == [1, 2]
    assert items[0]["volume_ml"] == pytest.approx(0.4) and items[0]["dominant_label"] == 2
    assert items[1]["mean_uncertainty"] == pytest.approx(0.9) and items[1]["dominant_label"] == 0
    assert items[0]["score"] == pytest.approx(0.4 * 0.6)
    assert np.all(regions[5:9, 10:20, 10:20] == 1) and np.all(regions[1:3, 1:5, 1:5] == 2)
    assert regions[0, 25, 25] == 0 and regions.dtype == np.int32
    np.testing.assert_allclose(items[0]["centroid_index_zyx"], (6.5, 14.5, 14.5))
