"""The metadata every exported bundle starts from: label table, terminology, inference defaults.

This is the one place label values, names, colours and terminology codes are written; the engine
and the Slicer module read them back from the bundle's ``metadata.json``.
"""

from __future__ import annotations

import copy
from typing import Any

from PancreasSSLSegLib.bundle import FORMAT_NAME, FORMAT_VERSION
from PancreasSSLSegLib.quality import DEFAULT_QUALITY

ANATOMICAL_STRUCTURE = {"scheme": "SCT", "code": "123037004", "meaning": "Anatomical Structure"}
ALTERED_STRUCTURE = {"scheme": "SCT", "code": "49755003",
                     "meaning": "Morphologically Altered Structure"}
LABELS = [
    {"value": 0, "name": "Background"},
    {"value": 1, "name": "Pancreas", "color": [249, 180, 111],
     "terminology": {"category": ANATOMICAL_STRUCTURE,
                     "type": {"scheme": "SCT", "code": "15776009", "meaning": "Pancreas"}}},
    {"value": 2, "name": "Pancreatic lesion", "color": [220, 40, 40],
     "terminology": {"category": ALTERED_STRUCTURE,
                     "type": {"scheme": "SCT", "code": "52988006", "meaning": "Lesion"}}},
]
# No standard code names "region the model is unsure about": a private scheme (DICOM's "99" prefix).
UNCERTAIN_REGION = {"name": "High-uncertainty region", "color": [255, 215, 0],
                    "terminology": {"category": {"scheme": "99PSSL", "code": "C001",
                                                 "meaning": "Model review region"},
                                    "type": {"scheme": "99PSSL", "code": "R001",
                                             "meaning": "High-uncertainty region"}}}
INFERENCE_DEFAULTS = {
    "tta_flips": [[], [2]],          # array axes of the canonical (z, y, x) volume to flip
    "mc_dropout_samples": 0,
    "uncertainty_threshold": 0.5,    # normalised predictive entropy
    "min_component_fraction": 0.1,   # pancreas components kept: >= this fraction of the largest
    "lesion_dilation_mm": 5.0,       # lesions kept only inside the pancreas dilated by this much
    "sw_overlap": 0.25,
    "region_min_volume_ml": 0.05,    # smaller uncertain components are not listed
    "quality": DEFAULT_QUALITY,      # the verdict's thresholds (export settings override keys)
}


def default_metadata(*, name: str, version: str, coarse: dict[str, Any] | None,
                     fine: dict[str, Any],
                     hu_window=(-200.0, 300.0), intensity_reference: str = "scan",
                     description: str = "",
                     license: str = "Apache-2.0", provenance: dict[str, Any] | None = None,
                     metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """Bundle metadata (all but ``weights``) for two stage specs.

    ``coarse``/``fine``: ``{"network": config, "spacing_mm": [x, y, z], "patch_size": [...]}``,
    the fine stage with ``"margin_mm"`` too.
    """
    return {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION,
        "name": name, "version": version, "description": description, "license": license,
        "labels": copy.deepcopy(LABELS), "uncertain_region": copy.deepcopy(UNCERTAIN_REGION),
        "intensity": {"hu_window": [float(hu_window[0]), float(hu_window[1])],
                      "normalization": "clip, minus soft-tissue median, / 100 HU",
                      "reference": intensity_reference},
        "stages": {"coarse": copy.deepcopy(coarse), "fine": copy.deepcopy(fine)},
        "inference": copy.deepcopy(INFERENCE_DEFAULTS),
        "provenance": provenance or {}, "metrics": metrics or {},
    }
