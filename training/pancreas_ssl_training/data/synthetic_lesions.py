"""Synthetic hypo-attenuating pancreatic lesions, 2-D or 3-D, for training without lesion labels.

No lesion label exists in the project's data; this paints one into the pancreas: an irregular
(noise-perturbed, randomly rotated) ellipsoid whose long axis is 5–30 mm (the outline noise moves
the local radius by at most ±25 %), darker than the surrounding pancreas
by 10–80 HU, with its own smooth texture and a blurred margin. The lesion label (2) lies inside the
original pancreas (label 1), and the image changes only within the blurred margin of the lesion,
which is itself kept inside the pancreas.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from pancreas_ssl_seg.labels import LESION, PANCREAS

DIAMETER_MM = (5.0, 30.0)
CONTRAST_HU = (-80.0, -10.0)
MARGIN_SIGMA_MM = (0.5, 2.0)
AXIS_RATIO = (0.6, 1.0)  # each axis' share of the longest, before normalising
TEXTURE_STD_HU = (0.0, 12.0)
# Outline noise: unit-std smooth field clipped at ±2, scaled by the roughness → ±25 % at most.
ROUGHNESS = (0.05, 0.125)
OUTLINE_NOISE_CLIP = 2.0
# scipy's gaussian_filter truncates its kernel at this many sigmas: the margin's exact reach.
BLUR_TRUNCATE = 4.0


def _rotation(ndim: int, rng: np.random.Generator) -> np.ndarray:
    if ndim == 2:
        angle = rng.uniform(0, np.pi)
        return np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return Rotation.random(random_state=rng).as_matrix()


def _smooth_noise(shape, sigma_voxels, rng: np.random.Generator) -> np.ndarray:
    """Gaussian random field with unit standard deviation."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma_voxels)
    return field / max(float(field.std()), 1e-6)


def insert_synthetic_lesion(image_hu: np.ndarray, label: np.ndarray, rng: np.random.Generator,
                            spacing_mm: Sequence[float] | None = None,
                            diameter_mm: tuple[float, float] = DIAMETER_MM,
                            contrast_hu: tuple[float, float] = CONTRAST_HU,
                            axis_ratio: tuple[float, float] = AXIS_RATIO,
                            roughness: tuple[float, float] = ROUGHNESS,
                            margin_sigma_mm: tuple[float, float] = MARGIN_SIGMA_MM,
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Return copies of ``(image_hu, label)`` with one lesion (label 2) inside the pancreas.

    image_hu: (H, W) or (D, H, W) float HU; label: same shape, 1 = pancreas.
    spacing_mm: (x, y[, z]) in SimpleITK order (reversed internally to array order); ``None``
    means 1 mm. Without pancreas voxels the inputs come back unchanged (as copies).
    The ranges default to the training synthesizer's; evaluation draws from others
    (``evaluation.lesion_detection.VARIANT``) so that it tests lesions training never showed.
    """
    image = np.asarray(image_hu, dtype=np.float32).copy()
    out_label = np.asarray(label).astype(np.uint8).copy()
    pancreas = out_label == PANCREAS
    if not pancreas.any():
        return image, out_label
    ndim = image.ndim
    spacing = np.ones(ndim) if spacing_mm is None else np.asarray(spacing_mm, float)[::-1]

    candidates = np.argwhere(pancreas)
    centre = candidates[rng.integers(len(candidates))]
    axis_ratios = rng.uniform(*axis_ratio, ndim)
    radii_mm = rng.uniform(diameter_mm[0], diameter_mm[1]) / 2 * axis_ratios / axis_ratios.max()
    margin_sigma_vox = rng.uniform(*margin_sigma_mm) / spacing
    # Work in a box around the centre that holds the largest perturbed shape and its margin.
    max_outline = 1.0 + roughness[1] * OUTLINE_NOISE_CLIP
    reach_vox = max_outline * radii_mm.max() / spacing + BLUR_TRUNCATE * margin_sigma_vox
    reach = np.ceil(reach_vox).astype(int) + 1
    low = np.maximum(centre - reach, 0)
    high = np.minimum(centre + reach + 1, image.shape)
    box = tuple(slice(lo, hi) for lo, hi in zip(low, high))
    box_pancreas = pancreas[box]

    grid = np.stack(np.meshgrid(*[np.arange(lo, hi) for lo, hi in zip(low, high)],
                                indexing="ij"), axis=-1)
    offsets_mm = (grid - centre) * spacing
    rotated = offsets_mm @ _rotation(ndim, rng).T
    radius = np.sqrt(np.sum((rotated / radii_mm) ** 2, axis=-1))
    # Irregular outline: the boundary radius varies smoothly around the ellipsoid's.
    outline = 1.0 + rng.uniform(*roughness) * np.clip(
        _smooth_noise(radius.shape, 2.0 / spacing, rng), -OUTLINE_NOISE_CLIP, OUTLINE_NOISE_CLIP)
    lesion = (radius < outline) & box_pancreas
    lesion[tuple(centre - low)] = True  # at least the centre voxel
    if not lesion.any():
        return image, out_label

    box_image = image[box]
    surrounding = box_image[box_pancreas & ~lesion]
    reference_hu = float(np.median(surrounding if surrounding.size else box_image[lesion]))
    contrast = rng.uniform(*contrast_hu)
    texture = rng.uniform(*TEXTURE_STD_HU) * _smooth_noise(lesion.shape, 1.0 / spacing, rng)
    target_hu = reference_hu + contrast + texture
    weight = ndimage.gaussian_filter(lesion.astype(np.float32), margin_sigma_vox,
                                     truncate=BLUR_TRUNCATE) * box_pancreas
    # Pull the pancreas towards the lesion intensity, fully at the core, partly in the margin.
    box_image += weight * (target_hu - box_image)
    out_label[box][lesion] = LESION
    return image, out_label
