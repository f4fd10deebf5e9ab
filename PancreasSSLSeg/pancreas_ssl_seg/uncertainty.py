"""Voxel uncertainty (normalised predictive entropy) and ranked high-uncertainty regions."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .postprocess import CONNECTIVITY_26

# Below this the map holds 0: the coarse stage's uncertainty covers the whole scan, and its tiny
# non-zero values (99 % of a CT's voxels, nearly all below 0.001) made the file 211 MB and
# incompressible on a 512x512x224 CT; no review threshold comes near them.
UNCERTAINTY_FLOOR = 1e-3
REGIONS_SCORE = "score = volume_ml x mean_uncertainty; rank 1 = highest score"


def uncertainty_definition(tta, bundle) -> str:
    """What the uncertainty map holds for a run with ``tta`` (a ``cascade.TtaSettings``)."""
    if tta.passes == 1:
        passes = "the softmax p of one pass (no test-time augmentation)"
    else:
        parts = [f"{len(tta.flips)} flip(s) {[list(f) for f in tta.flips]}",
                 f"scales {list(tta.scales)}"]
        if tta.fine_members > 1:
            parts.insert(0, f"{tta.fine_members} networks")
        if tta.mc_dropout_samples:
            parts.append(f"{tta.mc_dropout_samples} MC dropout samples")
        passes = f"the mean softmax p over {tta.passes} test-time passes ({', '.join(parts)})"
    coarse_mm = bundle.stage("coarse").spacing_mm
    return (f"normalised predictive entropy H(p)/log(C) in [0, 1]: inside the fine stage's box, "
            f"of {passes}; outside it, of the coarse stage's "
            f"{'single pass' if tta.coarse_members == 1 else f'{tta.coarse_members} networks'}"
            f" at {coarse_mm} mm "
            f"(the fine stage did not look there); values below {UNCERTAINTY_FLOOR:g} are 0")


def normalized_entropy(mean_probs: np.ndarray) -> np.ndarray:
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
    hot = uncertainty > threshold
    # The hot voxels by their index (C order), their box, and the components labelled in that box
    # only. Everything after the labelling reads the hot voxels alone: ndimage's sum_labels, mean,
    # maximum and center_of_mass, find_objects and a lookup over the box passed over the whole
    # box or grid several times (maximum argsorted all of it), and on a 512x512x224 CT the coarse
    # stage's uncertainty outside the fine box makes that box ~16 M voxels around ~0.1 M hot ones
    # (benchmarks/NOTES.md). Same figures: sizes and coordinate sums are integers (exact in any
    # order); the uncertainty sums are np.bincount's in array order, as in ndimage.mean.
    hot_index = np.unravel_index(np.flatnonzero(hot), hot.shape)
    if not hot_index[0].size:
        return regions, []
    box = tuple(slice(int(axis.min()), int(axis.max()) + 1) for axis in hot_index)
    offset = np.array([s.start for s in box], float)
    components, count = ndimage.label(hot[box], structure=CONNECTIVITY_26)
    in_box = tuple(axis - part.start for axis, part in zip(hot_index, box))
    members = components[in_box]
    values = uncertainty[hot_index]
    sizes = np.bincount(members, minlength=count + 1)[1:]
    means = np.bincount(members, values, count + 1)[1:] / sizes
    maxima = np.full(count + 1, -np.inf, values.dtype)
    np.maximum.at(maxima, members, values)
    centroids = np.stack([np.bincount(members, axis, count + 1)[1:] / sizes
                          for axis in in_box], axis=1)
    found = []
    for comp, size, mean, peak, centroid in zip(range(1, count + 1), sizes, means, maxima[1:],
                                                centroids):
        volume_ml = float(size) * voxel_volume_ml
        if volume_ml < min_volume_ml:
            continue
        found.append({"component": int(comp), "volume_ml": volume_ml,
                      "mean_uncertainty": float(mean), "max_uncertainty": float(peak),
                      "score": volume_ml * float(mean),
                      "centroid_index_zyx": tuple(centroid + offset)})
    found.sort(key=lambda r: r["score"], reverse=True)
    lookup = np.zeros(count + 1, np.int32)
    for rank, region in enumerate(found, start=1):
        lookup[region.pop("component")] = rank
        region.update(id=rank, rank=rank)
    ranks = lookup[members]
    regions[hot_index] = ranks
    if found:
        votes = np.bincount(ranks.astype(np.int64) * 3 + labels[hot_index],
                            minlength=(len(found) + 1) * 3).reshape(-1, 3)
        for region in found:
            region["dominant_label"] = int(np.argmax(votes[region["id"]]))
    return regions, found
