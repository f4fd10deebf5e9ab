"""Review the ranked uncertain regions: accept as pancreas, mark as lesion, or discard one.

Each action changes exactly the voxels of that region (the engine's region map) and is recorded in
Slicer's segment editor undo history first, so ``undo()`` restores the segmentation.
"""

from __future__ import annotations

from enum import Enum

import numpy as np

import slicer
from pancreas_ssl_seg.labels import LESION, PANCREAS

from .scene_results import UNCERTAIN_SEGMENT_VALUE
from .volume_io import ijk_to_ras, sitk_from_array


class ReviewAction(str, Enum):
    """What the user decides about one uncertain region (the value is shown in the table)."""

    ACCEPT_AS_PANCREAS = "accept"
    MARK_AS_LESION = "lesion"
    DISCARD = "discard"


class RegionReview:
    """The review state of one segmentation: its region map, table, and undo history."""

    def __init__(self, scene, segmentation_node, reference_volume, segment_ids: dict[int, str],
                 regions: np.ndarray, region_table: list[dict], app_logic=None):
        self.scene = scene
        self.segmentation_node = segmentation_node
        self.reference_volume = reference_volume
        self.segment_ids = segment_ids
        self.regions = regions
        self.region_table = sorted(region_table, key=lambda row: row["rank"])
        self.reviewed: dict[int, ReviewAction] = {}
        self.current_region_id: int | None = None  # the region the panel shows (select())
        self._history: list[int] = []  # region IDs in the order they were reviewed, for undo
        self.edited_segments: set[str] = set()
        self._editor_node = scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
        self._editor_node.SetAttribute("PancreasSSLSeg.Review", "1")
        self._editor = slicer.vtkSlicerSegmentEditorLogic()
        if app_logic is not None:
            self._editor.SetMRMLApplicationLogic(app_logic)
        self._editor.SetMRMLScene(scene)
        self._editor.SetSegmentEditorNode(self._editor_node)
        self._editor.SetSegmentationNode(segmentation_node)

    def region_mask(self, region_id: int) -> np.ndarray:
        return self.regions == region_id

    def _segment(self, value: int) -> np.ndarray | None:
        segment_id = self.segment_ids.get(value)
        if segment_id is None:
            return None
        return slicer.util.arrayFromSegmentBinaryLabelmap(
            self.segmentation_node, segment_id, self.reference_volume).astype(bool)

    def _write(self, value: int, mask: np.ndarray) -> None:
        slicer.util.updateSegmentBinaryLabelmapFromArray(
            mask.astype(np.uint8), self.segmentation_node, self.segment_ids[value],
            self.reference_volume)
        self.edited_segments.add(self.segment_ids[value])

    def apply(self, region_id: int, action: ReviewAction) -> None:
        """Accept the region as pancreas, mark it as lesion, or discard it (see module doc)."""
        action = ReviewAction(action)  # ValueError for anything else
        region = self.region_mask(region_id)
        if not region.any():
            raise ValueError(f"region {region_id} is not in the region map")
        self._editor.SaveStateForUndo()
        keep_as = {ReviewAction.ACCEPT_AS_PANCREAS: PANCREAS, ReviewAction.MARK_AS_LESION: LESION,
                   ReviewAction.DISCARD: None}[action]
        for value in (PANCREAS, LESION, UNCERTAIN_SEGMENT_VALUE):
            current = self._segment(value)
            if current is None:
                continue
            updated = (current | region) if value == keep_as else (current & ~region)
            if not np.array_equal(updated, current):
                self._write(value, updated)
        self.reviewed[region_id] = action
        self._history.append(region_id)

    def can_undo(self) -> bool:
        return bool(self._editor.CanUndo())

    def undo(self) -> None:
        """Undo the last change (a review action, or an edit saved in the same history)."""
        self._editor.Undo()
        if self._history:
            self.reviewed.pop(self._history.pop(), None)

    def next_region(self, after_region_id: int | None = None) -> dict | None:
        """The next row of the table not yet reviewed, after ``after_region_id`` (wrapping)."""
        ids = [row["id"] for row in self.region_table]
        start = ids.index(after_region_id) + 1 if after_region_id in ids else 0
        for row in self.region_table[start:] + self.region_table[:start]:
            if row["id"] not in self.reviewed:
                return row
        return None

    def select(self, region_id: int) -> list[float]:
        """Make ``region_id`` the current region and centre the views on it."""
        self.current_region_id = region_id
        return self.centre_views_on(region_id)

    def start(self) -> dict | None:
        """Begin the review at the highest-ranked region (rank 1: the most likely to hold an
        error): select it and centre the views on it. Returns its row (None: no regions)."""
        first = self.next_region(None)
        if first is not None:
            self.select(first["id"])
        return first

    def centre_views_on(self, region_id: int) -> list[float]:
        """Centre every slice view on the region (the report's centroid); returns that RAS point."""
        row = next((r for r in self.region_table if r["id"] == region_id), None)
        if row and row.get("centroid_ras_mm"):
            ras = [float(c) for c in row["centroid_ras_mm"]]
        else:
            k, j, i = np.argwhere(self.region_mask(region_id)).mean(axis=0)
            ras = (ijk_to_ras(self.reference_volume) @ [i, j, k, 1.0])[:3].tolist()
        for index in range(self.scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):
            self.scene.GetNthNodeByClass(index, "vtkMRMLSliceNode").JumpSliceByCentering(*ras)
        return ras

    def summary(self) -> dict:
        """Pancreas volume, lesion count/volume and largest lesion diameter, as edited now, by
        the engine's own definitions (``pancreas_ssl_seg.report``: the pancreas counts labels 1
        and 2, lesions are 26-connected, diameters are maximum Feret), so an unedited result
        reads as the engine's report does."""
        from pancreas_ssl_seg.geometry import voxel_volume_ml
        from pancreas_ssl_seg.report import lesion_items

        labels = np.zeros(self.regions.shape, np.uint8)
        for value in (PANCREAS, LESION):  # a lesion voxel is lesion even if also pancreas
            mask = self._segment(value)
            if mask is not None:
                labels[mask] = value
        image = sitk_from_array(labels, self.reference_volume)
        voxel_ml = voxel_volume_ml(image)
        lesions = lesion_items(labels, image)
        remaining = self._segment(UNCERTAIN_SEGMENT_VALUE)
        return {"pancreas_volume_ml": int(np.count_nonzero(labels)) * voxel_ml,
                "lesion_count": len(lesions),
                "lesion_volume_ml": float(sum(item["volume_ml"] for item in lesions)),
                "largest_lesion_diameter_mm": max((item["diameter_mm"] for item in lesions),
                                                  default=0.0),
                "regions_left": len(self.region_table) - len(self.reviewed),
                "uncertain_volume_ml": (0.0 if remaining is None
                                        else float(remaining.sum()) * voxel_ml)}
