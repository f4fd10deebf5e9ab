"""A clinical-size CT built from the one real 3-D case: the input every benchmark step reads.

The 3 mm example CT (122 x 101 x 112 voxels) is resampled with the engine's resampler to
0.8 x 0.8 x 1.5 mm and padded with the engine's outside-the-scan value (-1024 HU) to a 512 x 512
axial matrix, the usual clinical reconstruction (FOV 409.6 mm).
"""

from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk

from pancreas_ssl_seg.hounsfield import OUTSIDE_SCAN_HU
from pancreas_ssl_seg.preprocessing import resample_to_spacing

CLINICAL_SPACING_MM = (0.8, 0.8, 1.5)
CLINICAL_MATRIX = 512


def pad_axial_matrix(image: sitk.Image, matrix: int,
                     value: float = OUTSIDE_SCAN_HU) -> sitk.Image:
    """Pad x and y symmetrically with ``value`` to ``matrix`` voxels (no-op where larger)."""
    extra = [max(0, matrix - n) for n in image.GetSize()[:2]]
    lower = [e // 2 for e in extra] + [0]
    upper = [e - e // 2 for e in extra] + [0]
    return sitk.ConstantPad(image, lower, upper, value)


def build_clinical_ct(source: Path, out_path: Path) -> dict:
    """Write the clinical-size CT (int16 HU NIfTI) and return its grid description."""
    image = sitk.Cast(sitk.ReadImage(str(source)), sitk.sitkInt16)
    clinical = pad_axial_matrix(resample_to_spacing(image, CLINICAL_SPACING_MM), CLINICAL_MATRIX)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(clinical, str(out_path), useCompression=True)
    return {"source": str(source), "path": str(out_path), "size": list(clinical.GetSize()),
            "spacing_mm": list(clinical.GetSpacing()), "pixel_type": "int16",
            "voxels_million": round(clinical.GetNumberOfPixels() / 1e6, 2)}
