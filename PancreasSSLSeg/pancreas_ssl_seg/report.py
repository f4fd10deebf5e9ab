"""The per-case report: volumes, lesion sizes and positions, uncertainty summary.

Volumes: voxel count x voxel volume (product of the spacing, mm^3 / 1000 = mL). Pancreas volume
counts labels 1 and 2 (a lesion is part of the organ). Lesion diameter: largest distance between
two voxel centres of the lesion component (max Feret diameter) in physical mm. Positions: RAS mm
(LPS with x and y negated).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .geometry import (bounding_box, index_to_ras_mm, max_feret_diameter_mm,
                       physical_points_mm, voxel_volume_ml)
from .labels import LESION, PANCREAS
from .postprocess import CONNECTIVITY_26

PANCREAS_VOLUME_DEFINITION = ("pancreas volume_ml counts label 1 (pancreas) + label 2 (lesion) "
                              "voxels")


def lesion_items(labels: np.ndarray, image: sitk.Image) -> list[dict[str, Any]]:
    """One entry per 26-connected lesion component, largest first."""
    box = bounding_box(labels == LESION)
    if box is None:
        return []
    offset = [s.start for s in box]
    components, count = ndimage.label(labels[box] == LESION, structure=CONNECTIVITY_26)
    items = []
    for comp, sub in enumerate(ndimage.find_objects(components), start=1):
        mask = components[sub] == comp
        comp_offset = [o + s.start for o, s in zip(offset, sub)]
        points = physical_points_mm(image, mask, comp_offset)
        centroid = np.argwhere(mask).mean(axis=0) + comp_offset
        items.append({"volume_ml": int(mask.sum()) * voxel_volume_ml(image),
                      "diameter_mm": max_feret_diameter_mm(points),
                      "centroid_ras_mm": index_to_ras_mm(image, centroid)})
    items.sort(key=lambda item: item["volume_ml"], reverse=True)
    for number, item in enumerate(items, start=1):
        item["id"] = number
    return items


def geometry_entry(image: sitk.Image) -> dict[str, Any]:
    return {"size": list(image.GetSize()), "spacing_mm": list(image.GetSpacing()),
            "origin": list(image.GetOrigin()), "direction": list(image.GetDirection())}


def build_report(*, image: sitk.Image, labels: np.ndarray, uncertainty: np.ndarray | None,
                 regions: list[dict[str, Any]], metadata: dict[str, Any], engine_version: str,
                 device: str, mode: str, threshold: float, uncertainty_definition: str,
                 regions_score: str, quality: dict[str, Any], warnings: list[str],
                 timings_s: dict[str, float],
                 peak_memory_mb: float) -> dict[str, Any]:
    """The report dict (keys: see NOTES.md "Engine result"); arrays are on ``image``'s grid."""
    voxel_ml = voxel_volume_ml(image)
    organ = labels >= PANCREAS
    organ_voxels = int(np.count_nonzero(organ))
    lesions = lesion_items(labels, image)
    unc_entry: dict[str, Any] = {"enabled": uncertainty is not None,
                                 "definition": uncertainty_definition, "threshold": threshold,
                                 "regions_score": regions_score, "mean_in_pancreas": None,
                                 "high_uncertainty_volume_ml": 0.0}
    if uncertainty is not None:
        if organ_voxels:
            unc_entry["mean_in_pancreas"] = float(uncertainty[organ].mean())
        high_voxels = int(np.count_nonzero(uncertainty > threshold))
        unc_entry["high_uncertainty_volume_ml"] = high_voxels * voxel_ml
    region_entries = []
    for region in regions:
        entry = {k: v for k, v in region.items() if k != "centroid_index_zyx"}
        entry["centroid_ras_mm"] = index_to_ras_mm(image, region["centroid_index_zyx"])
        region_entries.append(entry)
    return {
        "case": None,
        "engine_version": engine_version,
        "model": {"name": metadata["name"], "version": metadata["version"]},
        "device": device,
        "mode": mode,
        "input": geometry_entry(image),
        "segments": metadata["labels"],
        "uncertain_region": metadata["uncertain_region"],
        "pancreas": {"found": organ_voxels > 0, "volume_ml": organ_voxels * voxel_ml,
                     "definition": PANCREAS_VOLUME_DEFINITION},
        "lesions": {"count": len(lesions),
                    "total_volume_ml": sum(item["volume_ml"] for item in lesions),
                    "largest_diameter_mm": max((item["diameter_mm"] for item in lesions),
                                               default=None),
                    "items": lesions},
        "uncertainty": unc_entry,
        "regions": region_entries,
        "quality": quality,
        "warnings": list(warnings),
        "timings_s": dict(timings_s),
        "peak_memory_mb": peak_memory_mb,
    }
