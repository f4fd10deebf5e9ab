"""Geometry and intensity preprocessing shared by inference and training.

Geometry uses SimpleITK (``DICOMOrient``, ``Resample``); no hand-written resampler.
Intensity: :func:`normalize_ct` is the single transform both training and inference apply.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from .hounsfield import DEFAULT_REFERENCE_HU, OUTSIDE_SCAN_HU, SOFT_TISSUE_HU

CANONICAL_ORIENTATION = "LPS"
INTENSITY_SCALE_HU = 100.0


def to_canonical(image: sitk.Image) -> sitk.Image:
    """Reorient (permute/flip axes, no interpolation) so array axes are (z→S, y→P, x→L)."""
    return sitk.DICOMOrient(image, CANONICAL_ORIENTATION)


def resample_to_spacing(image: sitk.Image, spacing_mm: Sequence[float], *, is_label: bool = False,
                        default_value: float = OUTSIDE_SCAN_HU) -> sitk.Image:
    """Resample onto a grid of ``spacing_mm`` (x, y, z) covering the same physical extent."""
    spacing_in = np.array(image.GetSpacing())
    spacing_out = np.array(spacing_mm, dtype=float)
    size_out = np.maximum(1, np.round(np.array(image.GetSize()) * spacing_in / spacing_out))
    return resample_onto(image, size=[int(s) for s in size_out], spacing=spacing_out,
                         origin=image.GetOrigin(), direction=image.GetDirection(),
                         is_label=is_label, default_value=default_value)


def resample_onto(image: sitk.Image, *, size, spacing, origin, direction, is_label: bool = False,
                  default_value: float = 0.0) -> sitk.Image:
    """Resample ``image`` onto an explicit grid (linear for intensities, nearest for labels)."""
    interpolator = sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear
    return sitk.Resample(image, [int(s) for s in size], sitk.Transform(), interpolator,
                         [float(o) for o in origin], [float(s) for s in spacing],
                         [float(d) for d in direction], float(default_value),
                         image.GetPixelID())


def resample_like(image: sitk.Image, reference: sitk.Image, *, is_label: bool = False,
                  default_value: float = 0.0) -> sitk.Image:
    """Resample ``image`` onto ``reference``'s exact grid."""
    return resample_onto(image, size=reference.GetSize(), spacing=reference.GetSpacing(),
                         origin=reference.GetOrigin(), direction=reference.GetDirection(),
                         is_label=is_label, default_value=default_value)


def soft_tissue_reference(hu: np.ndarray) -> float:
    """Median HU of soft-tissue voxels ([-100, 200] HU): the per-scan intensity reference.

    Contrast enhancement and scanner calibration shift soft tissue by tens of HU; subtracting this
    reference aligns non-contrast and contrast scans. Falls back to 40 HU when a scan has
    fewer than 100 soft-tissue voxels.
    """
    values = hu[(hu > SOFT_TISSUE_HU[0]) & (hu < SOFT_TISSUE_HU[1])]
    return float(np.median(values)) if values.size >= 100 else DEFAULT_REFERENCE_HU


def normalize_ct(hu: np.ndarray, hu_window: Sequence[float],
                 reference_hu: float | None = None) -> np.ndarray:
    """Clip to ``hu_window``, subtract the soft-tissue reference, divide by 100 HU; float32."""
    if reference_hu is None:
        reference_hu = soft_tissue_reference(hu)
    clipped = np.clip(hu.astype(np.float32), hu_window[0], hu_window[1])
    return (clipped - np.float32(reference_hu)) / np.float32(INTENSITY_SCALE_HU)
