"""``rank_uncertain_regions`` computes its per-region figures from the hot voxels alone (issue 16:
ndimage's maximum argsorted the whole box). Its figures must be the very ones ndimage's
sum_labels, mean, maximum and center_of_mass give over the whole box: compared bit for bit here,
on maps shaped like the engine's (smooth coarse uncertainty everywhere, a sharper fine box)."""

import numpy as np
import pytest
from scipy import ndimage

from pancreas_ssl_seg.uncertainty import rank_uncertain_regions


def _ndimage_regions(uncertainty, labels, threshold, voxel_volume_ml, min_volume_ml):
    """The per-region figures as ndimage computes them over the whole labelled box."""
    hot = uncertainty > threshold
    box = ndimage.find_objects(hot.astype(np.uint8))[0]
    components, count = ndimage.label(hot[box], structure=np.ones((3, 3, 3)))
    index = np.arange(1, count + 1)
    sizes = ndimage.sum_labels(np.ones(components.shape, np.uint8), components, index)
    means = ndimage.mean(uncertainty[box], components, index)
    maxima = ndimage.maximum(uncertainty[box], components, index)
    centroids = ndimage.center_of_mass(np.ones(components.shape, np.uint8), components, index)
    offset = np.array([s.start for s in box], float)
    out = []
    for size, mean, peak, centroid in zip(sizes, means, maxima, centroids):
        volume_ml = float(size) * voxel_volume_ml
        if volume_ml >= min_volume_ml:
            out.append((volume_ml, float(mean), float(peak), volume_ml * float(mean),
                        tuple(np.asarray(centroid) + offset)))
    return sorted(out, key=lambda r: r[3], reverse=True), hot


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_region_figures_are_ndimage_s_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    coarse = ndimage.zoom(rng.random((8, 10, 12)).astype(np.float32), 5, order=1)[:36, :47, :55]
    uncertainty = np.clip(coarse * 0.3, 0, 1).astype(np.float32)
    blobs = ndimage.gaussian_filter(rng.random((15, 18, 25)), 1.0)
    uncertainty[10:25, 12:30, 15:40] = np.clip((blobs - 0.5) * 8, 0, 1).astype(np.float32)
    labels = np.zeros(uncertainty.shape, np.uint8)
    labels[12:22, 15:26, 18:36] = 1
    labels[15:18, 18:21, 22:26] = 2
    expected, hot = _ndimage_regions(uncertainty, labels, 0.2, 0.0015, 0.01)
    regions, found = rank_uncertain_regions(uncertainty, labels, 0.2, 0.0015, 0.01)
    assert len(found) == len(expected) > 3
    for region, (volume_ml, mean, peak, score, centroid) in zip(found, expected):
        assert region["volume_ml"] == volume_ml
        assert region["mean_uncertainty"] == mean  # exact: same float64 sums
        assert region["max_uncertainty"] == peak
        assert region["score"] == score
        assert region["centroid_index_zyx"] == centroid
        # where it is: rank r covers hot voxels only, and its dominant label is the majority
        inside = regions == region["rank"]
        assert hot[inside].all() and int(inside.sum()) * 0.0015 == pytest.approx(volume_ml)
        assert region["dominant_label"] == int(np.argmax(np.bincount(labels[inside],
                                                                     minlength=3)))
    assert not regions[~hot].any()
