"""Label clean-up: drop stray pancreas islands and lesions found away from the pancreas."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from .labels import LESION, PANCREAS

CONNECTIVITY_26 = np.ones((3, 3, 3), bool)


def clean_labels(labels: np.ndarray, spacing_mm: Sequence[float], min_component_fraction: float,
                 lesion_dilation_mm: float, max_gap_mm: float | None = None) -> np.ndarray:
    """Post-processed copy of a (z, y, x) 0/1/2 label map; ``spacing_mm`` is (x, y, z).

    Pancreas: the organ (labels 1 and 2 together) keeps its largest component and the components
    of at least ``min_component_fraction`` of its size (levels within ``max_gap_mm`` of the
    largest's, when given). Lesions: a lesion component is kept whole
    when it comes within ``lesion_dilation_mm`` of the kept pancreas (label 1) — i.e. it lies in
    the pancreas dilated by that distance — and removed otherwise.
    """
    organ = major_components(labels >= PANCREAS, min_component_fraction, max_gap_mm, spacing_mm)
    if not organ.any():
        return np.zeros(labels.shape, np.uint8)
    pancreas = organ & (labels == PANCREAS)
    cleaned = pancreas.astype(np.uint8)
    lesions, n_lesions = ndimage.label(labels == LESION, structure=CONNECTIVITY_26)
    if n_lesions == 0 or not pancreas.any():
        return cleaned
    # Distance (mm) to the nearest kept pancreas voxel, honouring anisotropic spacing.
    distance_mm = ndimage.distance_transform_edt(~pancreas, sampling=tuple(spacing_mm)[::-1])
    closest_mm = ndimage.minimum(distance_mm, lesions, np.arange(1, n_lesions + 1))
    kept_lesion = np.concatenate([[False], np.asarray(closest_mm) <= lesion_dilation_mm])
    cleaned[kept_lesion[lesions]] = LESION
    return cleaned


def major_components(mask: np.ndarray, min_fraction: float, max_gap_mm: float | None = None,
                     spacing_mm: Sequence[float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """The largest 26-connected component of ``mask`` and every other of at least
    ``min_fraction`` of its size (all False when empty; ``min_fraction`` 1: the largest only)
    whose axial levels, when ``max_gap_mm`` is given, come within that distance of the
    largest's (``spacing_mm`` (x, y, z)). Along z only: on one slice a pancreas often shows as
    head and tail far apart in the plane, both kept, while in a volume a look-alike in the
    pelvis or chest lies levels away from the pancreas."""
    components, count = ndimage.label(mask, structure=CONNECTIVITY_26)
    if count == 0:
        return np.zeros(mask.shape, bool)
    sizes = np.bincount(components.ravel())[1:]
    largest = 1 + int(np.argmax(sizes))
    keep = np.concatenate([[False], sizes >= min_fraction * sizes.max()])
    if min_fraction >= 1.0:  # ties too: exactly one component
        keep[1:] = False
    if max_gap_mm is not None and keep.sum() > 1:
        levels = np.array([(box[0].start, box[0].stop - 1)
                           for box in ndimage.find_objects(components)], float)
        levels *= float(spacing_mm[2])
        low, high = levels[largest - 1]
        gaps = np.maximum(0.0, np.maximum(levels[:, 0] - high, low - levels[:, 1]))
        keep[1:] &= gaps <= max_gap_mm
    keep[largest] = True
    return keep[components]


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of ``mask`` (all False when empty)."""
    return major_components(mask, 1.0)
