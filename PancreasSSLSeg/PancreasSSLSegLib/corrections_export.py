"""Save a corrected case for fine-tuning: ``<root>/<case>/image.nii.gz``, ``labels.nii.gz``
(uint8 0/1/2 on the CT grid) and ``correction.json``, the layout the training package reads.

Written by the engine's one writer (``pancreas_ssl_seg.corrections``: atomic, checks the grid and
the label values), which needs no training package: a stock Slicer writes what a developer
install writes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

import slicer
from pancreas_ssl_seg.case_names import safe_case_name
from pancreas_ssl_seg.corrections import write_correction_case
from pancreas_ssl_seg.labels import LESION, PANCREAS

from .volume_io import sitk_from_array, volume_to_sitk


def corrected_labels(segmentation_node, reference_volume,
                     segment_ids: dict[int, str]) -> np.ndarray:
    """(k, j, i) uint8 label map from the Pancreas and Pancreatic lesion segments (lesion wins)."""
    labels = np.zeros(slicer.util.arrayFromVolume(reference_volume).shape, np.uint8)
    for value in (PANCREAS, LESION):
        if value in segment_ids:
            mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation_node, segment_ids[value],
                                                              reference_volume)
            labels[mask > 0] = value
    return labels


def export_case(root, case: str, volume_node, segmentation_node, segment_ids: dict[int, str],
                model_name: str, model_version: str, edited_segments) -> Path:
    """Write the case folder (``case`` made folder-safe); returns it."""
    case = safe_case_name(case)
    image = volume_to_sitk(volume_node)
    labels = sitk_from_array(corrected_labels(segmentation_node, volume_node, segment_ids),
                             volume_node)
    return write_correction_case(root, case, image, labels, model_name=model_name,
                                 model_version=model_version,
                                 edited_segments=sorted(edited_segments))
