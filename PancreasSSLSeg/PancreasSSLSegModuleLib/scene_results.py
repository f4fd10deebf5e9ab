"""Engine outputs → MRML: the segmentation node and the uncertainty overlay.

Segment names, colours and terminology come only from the engine report's ``segments`` and
``uncertain_region`` entries (which the engine copies from the bundle metadata).
"""

from __future__ import annotations

import hashlib

import numpy as np

import slicer

# Marks a node this module created, the input it belongs to, and its content when loaded.
ATTR_SOURCE_VOLUME = "PancreasSSLSeg.SourceVolumeID"
ATTR_LOADED_FINGERPRINT = "PancreasSSLSeg.LoadedFingerprint"
# Slicer's PET heat map exists in every Slicer and reads as "hotter = less sure".
UNCERTAINTY_COLOR_NODE_ID = "vtkMRMLPETProceduralColorNodePET-Heat"
UNCERTAINTY_HIDDEN_BELOW = 0.05  # below this, the overlay is transparent so the CT shows through
UNCERTAIN_SEGMENT_VALUE = -1     # key of the review segment in ``segment_ids``
UNCERTAIN_OPACITY_3D = 0.35


def _code(entry: dict | None) -> str:
    entry = entry or {}
    return "^".join(str(entry.get(key, "")) for key in ("scheme", "code", "meaning"))


def terminology_entry(terminology: dict) -> str:
    """Slicer's terminology string, the same entry the engine writes into ``.seg.nrrd``:
    context~category~type~type modifier~anatomic context~region~region modifier."""
    # imported here: the engine's writer needs slicerio, which Slicer may not have yet
    from PancreasSSLSegLib.outputs import ANATOMIC_CONTEXT, CODED_FIELDS, TERMINOLOGY_CONTEXT

    category, type_, modifier, region, region_modifier = (_code(terminology.get(field))
                                                          for field in CODED_FIELDS)
    return "~".join([TERMINOLOGY_CONTEXT, category, type_, modifier, ANATOMIC_CONTEXT, region,
                     region_modifier])


def _add_segment(segmentation, spec: dict) -> str:
    colour = [c / 255.0 for c in spec["color"]]
    segment_id = segmentation.AddEmptySegment(spec["name"], spec["name"], colour)
    if spec.get("terminology"):
        segmentation.GetSegment(segment_id).SetTerminology(terminology_entry(spec["terminology"]))
    return segment_id


def segment_specs(report: dict) -> list[dict]:
    """Foreground segments (label value > 0) as the report lists them."""
    return [spec for spec in report["segments"] if int(spec["value"]) > 0]


def fill_segmentation(segmentation_node, reference_volume, labels: np.ndarray,
                      regions: np.ndarray | None, report: dict) -> dict[int, str]:
    """Replace ``segmentation_node``'s segments with the engine's; returns value → segment ID."""
    segmentation = segmentation_node.GetSegmentation()
    segmentation.RemoveAllSegments()
    segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
    segment_ids = {}
    for spec in segment_specs(report):
        segment_ids[int(spec["value"])] = _add_segment(segmentation, spec)
    if regions is not None and report.get("uncertain_region"):
        segment_ids[UNCERTAIN_SEGMENT_VALUE] = _add_segment(segmentation,
                                                            report["uncertain_region"])
    for value, segment_id in segment_ids.items():
        mask = (regions > 0) if value == UNCERTAIN_SEGMENT_VALUE else (labels == value)
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask.astype(np.uint8), segmentation_node,
                                                         segment_id, reference_volume)
    segmentation_node.CreateClosedSurfaceRepresentation()  # 3-D surfaces on
    display = segmentation_node.GetDisplayNode()
    if display is not None and UNCERTAIN_SEGMENT_VALUE in segment_ids:
        # the review region wraps the organ: see-through, so the pancreas stays visible in 3-D
        display.SetSegmentOpacity3D(segment_ids[UNCERTAIN_SEGMENT_VALUE], UNCERTAIN_OPACITY_3D)
    segmentation_node.SetAttribute(ATTR_SOURCE_VOLUME, reference_volume.GetID())
    segmentation_node.SetAttribute(ATTR_LOADED_FINGERPRINT,
                                   segmentation_fingerprint(segmentation_node))
    return segment_ids


def segmentation_fingerprint(segmentation_node) -> str:
    """A hash of every segment's ID, extent and voxels: changes whenever the user edits anything.
    Reads each segment's own labelmap: exporting through a temporary labelmap node (as
    ``slicer.util.arrayFromSegmentBinaryLabelmap`` does) would leave display nodes in the scene."""
    from vtk.util.numpy_support import vtk_to_numpy

    digest = hashlib.sha1()
    segmentation = segmentation_node.GetSegmentation()
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        labelmap = slicer.vtkOrientedImageData()
        segmentation_node.GetBinaryLabelmapRepresentation(segment_id, labelmap)
        digest.update(f"{segment_id}{labelmap.GetExtent()}".encode())
        scalars = labelmap.GetPointData().GetScalars()
        if scalars is not None:
            digest.update(np.packbits(vtk_to_numpy(scalars) > 0).tobytes())
    return digest.hexdigest()


def was_edited(segmentation_node) -> bool:
    """True when the node holds content this module did not load (edited, or made elsewhere)."""
    loaded = segmentation_node.GetAttribute(ATTR_LOADED_FINGERPRINT)
    if segmentation_node.GetSegmentation().GetNumberOfSegments() == 0:
        return False
    return loaded != segmentation_fingerprint(segmentation_node)


def add_uncertainty_volume(scene, reference_volume, uncertainty: np.ndarray,
                           name: str):
    """A scalar volume on the input's grid holding ``uncertainty`` (0..1), with a heat colour map."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.CopyOrientation(reference_volume)
    slicer.util.updateVolumeFromArray(node, uncertainty.astype(np.float32))
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, 1.0)
    display.SetAndObserveColorNodeID(UNCERTAINTY_COLOR_NODE_ID)
    display.SetLowerThreshold(UNCERTAINTY_HIDDEN_BELOW)
    display.SetUpperThreshold(1.0)
    display.ApplyThresholdOn()
    node.SetAttribute(ATTR_SOURCE_VOLUME, reference_volume.GetID())
    return node


def show_overlay(scene, background_volume, uncertainty_node, opacity: float = 0.4) -> None:
    """Every slice view: the CT behind, the uncertainty map in front at ``opacity``."""
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
        composite = scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode")
        composite.SetBackgroundVolumeID(background_volume.GetID())
        composite.SetForegroundVolumeID(uncertainty_node.GetID() if uncertainty_node else None)
        composite.SetForegroundOpacity(opacity)
    colors = getattr(getattr(slicer, "modules", None), "colors", None)
    if uncertainty_node is not None and colors is not None:
        colors.logic().AddDefaultColorLegendDisplayNode(uncertainty_node)
