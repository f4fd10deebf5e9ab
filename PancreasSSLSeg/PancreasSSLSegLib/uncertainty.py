"""Voxel uncertainty (normalised predictive entropy) and ranked high-uncertainty regions."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

UNCERTAINTY_DEFINITION = ("normalised predictive entropy H(p)/log(C) of the mean softmax p over "
                          "the test-time flips (and MC dropout samples), in [0, 1]; 0 outside the "
                          "fine stage's box")
REGIONS_SCORE = "score = volume_ml x mean_uncertainty; rank 1 = highest score"


def normalised_entropy(mean_probs: np.ndarray) -> np.ndarray:
    """``(C, ...)`` probabilities → entropy / log(C), float32 in [0, 1] (0: one class is sure)."""
    classes = mean_probs.shape[0]
    p = np.clip(mean_probs.astype(np.float32), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    entropy = terms.sum(axis=0) / np.float32(np.log(classes))
    return np.clip(entropy, 0.0, 1.0).astype(np.float32)


def rank_uncertain_regions(uncertainty: np.ndarray, labels: np.ndarray, threshold: float,
                           voxel_volume_ml: float, min_volume_ml: float):
    """Connected components of ``uncertainty > threshold`` of at least ``min_volume_ml``.

    Ranked by ``score = volume_ml * mean_uncertainty`` (large and very unsure first). Returns
    the int32 region map (0 none, 1 = rank 1) and one dict per region with ``id``, ``rank``,
    ``volume_ml``, ``mean_uncertainty``, ``max_uncertainty``, ``score``, ``dominant_label`` and
    ``centroid_index_zyx`` (array index; the report turns it into RAS mm).
    """
    regions = np.zeros(uncertainty.shape, np.int32)
    components, count = ndimage.label(uncertainty > threshold, structure=np.ones((3, 3, 3)))
    if count == 0:
        return regions, []
    index = np.arange(1, count + 1)
    sizes = ndimage.sum_labels(np.ones_like(components, np.uint8), components, index)
    means = ndimage.mean(uncertainty, components, index)
    maxima = ndimage.maximum(uncertainty, components, index)
    centroids = ndimage.center_of_mass(np.ones(components.shape, np.uint8), components, index)
    found = []
    for comp, size, mean, peak, centroid in zip(index, sizes, means, maxima, centroids):
        volume_ml = float(size) * voxel_volume_ml
        if volume_ml < min_volume_ml:
            continue
        found.append({"component": int(comp), "volume_ml": volume_ml,
                      "mean_uncertainty": float(mean), "max_uncertainty": float(peak),
                      "score": volume_ml * float(mean), "centroid_index_zyx": tuple(centroid)})
    found.sort(key=lambda r: r["score"], reverse=True)
    lookup = np.zeros(count + 1, np.int32)
    for rank, region in enumerate(found, start=1):
        lookup[region.pop("component")] = rank
        region.update(id=rank, rank=rank)
    regions = lookup[components]
    for region in found:
        votes = np.bincount(labels[regions == region["id"]], minlength=3)
        region["dominant_label"] = int(np.argmax(votes))
    return regions, found
