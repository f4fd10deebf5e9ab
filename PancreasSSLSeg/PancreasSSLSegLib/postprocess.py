"""Label clean-up: drop stray pancreas islands and lesions found away from the pancreas."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

PANCREAS, LESION = 1, 2
CONNECTIVITY_26 = np.ones((3, 3, 3), bool)


def clean_labels(labels: np.ndarray, spacing_mm: Sequence[float], min_component_fraction: float,
                 lesion_dilation_mm: float) -> np.ndarray:
    """Post-processed copy of a (z, y, x) 0/1/2 label map; ``spacing_mm`` is (x, y, z).

    Pancreas: the organ (labels 1 and 2 together) keeps its largest component and the components
    of at least ``min_component_fraction`` of its size. Lesions: a lesion component is kept whole
    when it comes within ``lesion_dilation_mm`` of the kept pancreas (label 1) — i.e. it lies in
    the pancreas dilated by that distance — and removed otherwise.
    """
    organ = major_components(labels >= PANCREAS, min_component_fraction)
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


def major_components(mask: np.ndarray, min_fraction: float) -> np.ndarray:
    """The largest 26-connected component of ``mask`` and every other of at least
    ``min_fraction`` of its size (all False when empty; ``min_fraction`` 1: the largest only)."""
    components, count = ndimage.label(mask, structure=CONNECTIVITY_26)
    if count == 0:
        return np.zeros(mask.shape, bool)
    sizes = np.bincount(components.ravel())[1:]
    keep = np.concatenate([[False], sizes >= min_fraction * sizes.max()])
    if min_fraction >= 1.0:  # ties too: exactly one component
        keep[1:] = False
    keep[1 + int(np.argmax(sizes))] = True
    return keep[components]


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 26-connected component of ``mask`` (all False when empty)."""
    return major_components(mask, 1.0)
