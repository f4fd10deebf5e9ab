"""Synthetic lesions: inside the pancreas, darker, 5–30 mm, irregular, change only their margin."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from pancreas_ssl_training.data.synthetic_lesions import (BLUR_TRUNCATE, MARGIN_SIGMA_MM,
                                                          insert_synthetic_lesion)


def _phantom(shape, rng):
    """Soft tissue at 40 HU with a 100 HU ellipsoidal 'pancreas' (label 1) and mild noise."""
    grid = np.indices(shape).astype(float)
    centre = np.array(shape, float)[:, None, None] / 2 if len(shape) == 2 else \
        np.array(shape, float)[:, None, None, None] / 2
    semi_axes = np.array(shape, float) * np.array([0.2, 0.35, 0.35][-len(shape):])
    inside = (((grid - centre) / semi_axes.reshape(centre.shape)) ** 2).sum(0) < 1
    image = 40.0 + 60.0 * inside + rng.normal(0, 5, shape)
    return image.astype(np.float32), inside.astype(np.uint8)


@pytest.mark.parametrize("shape,spacing_mm",
                         [((96, 96), (0.8, 0.8)), ((24, 48, 48), (1.5, 1.5, 3.0))])
@pytest.mark.parametrize("seed", range(4))
def test_lesion_properties(shape, spacing_mm, seed):
    rng = np.random.default_rng(seed)
    image, label = _phantom(shape, rng)
    new_image, new_label = insert_synthetic_lesion(image, label, rng, spacing_mm)
    lesion = new_label == 2
    assert lesion.any()
    assert not (lesion & (label == 0)).any()           # label 2 ⊂ original pancreas
    np.testing.assert_array_equal(new_label[~lesion], label[~lesion])
    # Darker than the surrounding pancreas, by no more than 80 HU plus texture.
    surrounding = np.median(image[(label == 1) & ~lesion])
    drop = surrounding - new_image[lesion].mean()
    assert 0 < drop < 80 + 15
    # Size: no wider than a 30 mm lesion with its ±25 % outline noise (array axes are z, y, x).
    spacing_zyx = np.array(spacing_mm)[::-1]
    extent_mm = (np.ptp(np.argwhere(lesion), axis=0) + 1) * spacing_zyx
    assert extent_mm.max() <= 1.25 * 30 + 2 * spacing_zyx.max()
    # Changes only within the blurred margin (and only in the pancreas).
    changed = new_image != image
    reach = np.ceil(BLUR_TRUNCATE * MARGIN_SIGMA_MM[1] / spacing_zyx.min()).astype(int) + 1
    # The Gaussian kernel is a box of half-width ``reach``: dilate with the full 3^n neighbourhood.
    box = ndimage.generate_binary_structure(lesion.ndim, lesion.ndim)
    margin = ndimage.binary_dilation(lesion, box, iterations=int(reach))
    assert changed.any() and not (changed & ~margin).any()
    assert not (changed & (label == 0)).any()
    # Inputs are not modified in place.
    assert not np.shares_memory(new_image, image)


def test_lesions_vary_in_size_and_contrast():
    rng = np.random.default_rng(1)
    image, label = _phantom((128, 128), rng)
    sizes, drops = [], []
    for _ in range(12):
        new_image, new_label = insert_synthetic_lesion(image, label, rng, (1.0, 1.0))
        lesion = new_label == 2
        sizes.append(lesion.sum())
        drops.append(100 - new_image[lesion].mean())
    assert max(sizes) > 3 * min(sizes)
    assert max(drops) - min(drops) > 20


def _moment_ellipse_iou(mask: np.ndarray) -> float:
    """IoU of a 2-D mask with the ellipse of the same centroid and second moments."""
    points = np.argwhere(mask).astype(float)
    offsets = np.indices(mask.shape).reshape(2, -1).T - points.mean(0)
    distance = np.einsum("ij,jk,ik->i", offsets, np.linalg.inv(np.cov(points.T)), offsets)
    ellipse = distance.reshape(mask.shape) <= 4  # a uniform ellipse has variance (semi-axis/2)²
    return float((ellipse & mask).sum() / (ellipse | mask).sum())


def test_lesions_in_a_large_pancreas_are_5_to_30_mm_and_irregular():
    """A pancreas much larger than any lesion, so no lesion is cut by the organ's edge."""
    image = np.full((200, 200), 100.0, np.float32)
    label = np.zeros((200, 200), np.uint8)
    label[20:180, 20:180] = 1
    rng = np.random.default_rng(0)
    extents_mm, ious = [], []
    for _ in range(20):
        _, new_label = insert_synthetic_lesion(image, label, rng, (0.5, 0.5))
        lesion = new_label == 2
        extents_mm.append((np.ptp(np.argwhere(lesion), axis=0) + 1).max() * 0.5)
        ious.append(_moment_ellipse_iou(lesion))
    assert 5 * 0.75 - 1 <= min(extents_mm) and max(extents_mm) <= 30 * 1.25 + 1
    assert max(extents_mm) - min(extents_mm) > 10
    # Digitised ellipses of these sizes score ≥ 0.97 against their moment ellipse.
    assert np.median(ious) < 0.96


def test_no_pancreas_returns_unchanged_copies():
    rng = np.random.default_rng(0)
    image = np.full((32, 32), 40.0, np.float32)
    label = np.zeros((32, 32), np.uint8)
    new_image, new_label = insert_synthetic_lesion(image, label, rng, (1.0, 1.0))
    np.testing.assert_array_equal(new_image, image)
    np.testing.assert_array_equal(new_label, label)
