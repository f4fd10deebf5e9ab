"""The Slicer segmentation file ``<case>.seg.nrrd``: one segment per bundle label (its value,
name, colour, terminology) on the input grid, plus the high-uncertainty review region, which may
overlap them and then goes to a second layer, as Slicer stores overlapping segments."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import slicerio

from .geometry import bounding_box, ijk_to_lps
from .labels import slicer_terminology


def write_seg_nrrd(result, path: str | Path) -> None:
    """Write the segmentation of ``result`` (a ``SegmentationResult``; the review region is
    ``regions > 0``) to ``path``.

    Masks and extents are computed inside the box around everything segmented: on a 512x512x224
    input that box is a few per cent of the grid (slicerio's ``add_segment`` on the full grid
    took 2.4 s)."""
    report = result.report
    labels = np.asarray(result.labels, np.uint8)
    review = np.asarray(result.regions) > 0
    box = bounding_box(labels > 0, review)
    if box is None:  # nothing segmented: empty segments
        box = (slice(0, 0),) * labels.ndim
    segments = []
    for label in report["segments"]:
        value = int(label["value"])
        if value == 0:
            continue
        segments.append({**_segment_fields(label, f"label_{value}"), "labelValue": value,
                         "layer": 0, "extent": _extent(labels[box] == value, box)})
    layers = [labels]
    uncertain = report.get("uncertain_region")
    if uncertain is not None:
        overlaps = bool(np.any(labels[box][review[box]]))
        value = 1 if overlaps else max([s["labelValue"] for s in segments], default=0) + 1
        layers.append(np.zeros_like(labels) if overlaps else layers.pop().copy())
        layers[-1][box][review[box]] = value
        segments.append({**_segment_fields(uncertain, "uncertain_region"), "labelValue": value,
                         "layer": len(layers) - 1, "extent": _extent(review[box], box)})
    # slicerio voxels are indexed (i, j, k) = (x, y, z): the transpose of SimpleITK's array, and
    # pynrrd writes them in Fortran order; a transposed view is already laid out so, which spares
    # two full-size reordering copies (the file's bytes are the same).
    voxels = (np.stack(layers, axis=-1).transpose() if len(layers) > 1
              else layers[0].transpose())
    slicerio.write_segmentation(str(path), {"voxels": voxels, "segments": segments,
                                            "ijkToLPS": ijk_to_lps(result.image)})


def _segment_fields(spec: dict[str, Any], segment_id: str) -> dict[str, Any]:
    fields = {"id": segment_id, "name": spec["name"],
              "color": [round(c / 255.0, 6) for c in spec.get("color", (128, 128, 128))]}
    if "terminology" in spec:
        fields["terminology"] = slicer_terminology(spec["terminology"])
    return fields


def _extent(mask_in_box: np.ndarray, box: tuple[slice, ...]) -> list[int]:
    """Slicer extent [i_min, i_max, j_min, j_max, k_min, k_max] of a mask given inside ``box``
    of a (z, y, x) array; Slicer's empty extent if none."""
    if not mask_in_box.any():
        return [0, -1, 0, -1, 0, -1]
    indices = np.nonzero(mask_in_box)
    zyx = [(int(axis.min()) + part.start, int(axis.max()) + part.start)
           for axis, part in zip(indices, box)]
    return [v for low_high in zyx[::-1] for v in low_high]
