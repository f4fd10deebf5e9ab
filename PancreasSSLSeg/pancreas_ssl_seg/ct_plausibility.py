"""Is this plausibly a CT of a torso? Voxel size, field of view, intensities in Hounsfield units.

Voxel size: spacings outside 0.05-20 mm (:data:`PLAUSIBLE_SPACING_MM`) are refused, from the
header before any voxel is read: they are wrong units (metres, micrometres) or broken headers, and
resampling such a scan to the model's grids would allocate absurd volumes. A field of view too
small for a pancreas and intensities unlike CT in HU only give warnings.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .hounsfield import AIR_HU, MAX_TISSUE_HU, MIN_CT_HU

# Voxel sizes a CT can have (mm, every axis): 0.05 mm is below any clinical or micro-CT of a torso
# would need, 20 mm above any slice thickness in use.
PLAUSIBLE_SPACING_MM = (0.05, 20.0)
# A pancreas spans about 12-20 cm across and 4-8 cm head to foot: a scan thinner than this along
# any axis cannot hold it whole (the shared 20-slice DICOM slab is 40 mm thick).
SMALL_FOV_MM = 30.0
# A minimum shared by this fraction of voxels (or more) below air is padding outside the
# reconstructed field of view (-3024, -2048, -32768 are common), left out of the percentiles.
PADDING_FRACTION = 0.005


def check_spacing(spacing_mm, name: str) -> None:
    """Refuse voxel sizes outside :data:`PLAUSIBLE_SPACING_MM` (non-positive ones included)."""
    spacing = [float(s) for s in spacing_mm]
    low, high = PLAUSIBLE_SPACING_MM
    if not all(np.isfinite(spacing)) or min(spacing) <= 0:
        raise InputError(f"{name}: voxel spacing {spacing} mm; expected positive values")
    if min(spacing) < low or max(spacing) > high:
        raise InputError(f"{name}: voxel spacing {[round(s, 6) for s in spacing]} mm is not "
                         f"plausible for CT (expected {low:g} to {high:g} mm per axis; wrong "
                         "units in the header, e.g. metres or micrometres?)")


def field_of_view_notes(image: sitk.Image, name: str) -> list[str]:
    """A warning when the scan is too small along some axis to contain a whole pancreas."""
    extent_mm = np.array(image.GetSize()) * np.array(image.GetSpacing())
    if extent_mm.min() >= SMALL_FOV_MM:
        return []
    return [f"{name}: field of view {' x '.join(f'{e:.0f}' for e in extent_mm)} mm is smaller "
            f"than {SMALL_FOV_MM:.0f} mm along an axis; a whole pancreas cannot fit in it, results "
            "are unreliable"]


def check_ct_intensities(image: sitk.Image) -> list[str]:
    """Warnings when the values do not look like CT Hounsfield units (e.g. MR, 0..1, raw counts,
    values scaled by a factor).

    A torso CT contains air (about -1000 HU) outside the body and in the bowel, and nothing denser
    than bone (below :data:`MAX_TISSUE_HU`): a darkest percentile far above air, a brightest far
    above bone, or a bulk darker than air (:data:`MIN_CT_HU`) means the values are not HU and the
    model's intensity window is meaningless. A minimum shared by many voxels below air is padding
    outside the field of view (e.g. -3024) and is left out first.
    """
    values = np.asarray(sitk.GetArrayViewFromImage(image)).ravel()
    lowest = float(values.min())
    if lowest < AIR_HU - 100 and (np.count_nonzero(values == lowest)
                                  >= PADDING_FRACTION * values.size):
        values = values[values > lowest]
        if values.size == 0:
            return []
    low_hu, mid_hu, high_hu = (float(v) for v in np.percentile(values, [1, 50, 99]))
    spread = f"1st/50th/99th percentile {low_hu:.0f}/{mid_hu:.0f}/{high_hu:.0f}"
    warnings = []
    if low_hu > AIR_HU + 500:
        warnings.append(f"intensities are not like CT in Hounsfield units: {spread}, no air near "
                        f"{AIR_HU:.0f} HU (MR, rescaled image, or stored values without the "
                        "rescale intercept?); results are unreliable")
    elif high_hu - low_hu < 200:
        warnings.append(f"intensity range is narrow for CT: {spread} HU; results are unreliable")
    outside = []
    if low_hu < MIN_CT_HU or mid_hu < AIR_HU - 100:
        outside.append(f"darker than air ({AIR_HU:.0f} HU)")
    if high_hu > MAX_TISSUE_HU:
        outside.append(f"brighter than any tissue (above {MAX_TISSUE_HU:.0f} HU)")
    if outside:
        warnings.append(f"intensities far outside CT's range: {spread} HU is "
                        f"{' and '.join(outside)} (values scaled by a factor, or not in HU?); "
                        "results are unreliable")
    return warnings
