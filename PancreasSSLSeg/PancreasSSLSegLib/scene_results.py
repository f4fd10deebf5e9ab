"""Engine outputs → MRML: the segmentation node and the uncertainty overlay.

The segments come as the engine wrote them into ``<case>.seg.nrrd`` (names, colours, terminology
from the bundle metadata), loaded by Slicer's own segmentation reader; nothing is rebuilt here.
"""

from __future__ import annotations

import hashlib

import numpy as np

import slicer
from pancreas_ssl_seg.display import UNCERTAINTY_SHOWN_FROM

# Marks a node this module created, the input it belongs to, and its content when loaded.
ATTR_SOURCE_VOLUME = "PancreasSSLSeg.SourceVolumeID"
ATTR_LOADED_FINGERPRINT = "PancreasSSLSeg.LoadedFingerprint"
# Slicer's PET heat map exists in every Slicer and reads as "hotter = less sure".
UNCERTAINTY_COLOR_NODE_ID = "vtkMRMLPETProceduralColorNodePET-Heat"
UNCERTAIN_SEGMENT_VALUE = -1     # key of the review segment in ``segment_ids``
UNCERTAIN_OPACITY_3D = 0.35


def load_segmentation(segmentation_node, seg_nrrd_path, reference_volume, report: dict,
                      with_regions: bool) -> dict[int, str]:
    """Replace ``segmentation_node``'s segments with those of the engine's ``.seg.nrrd``;
    returns label value → segment ID (the report's ``segments`` and ``uncertain_region`` name
    them; the review segment under ``UNCERTAIN_SEGMENT_VALUE``, dropped when the run made no
    regions, ``with_regions`` False)."""
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(seg_nrrd_path))
    if not storage.ReadData(segmentation_node):
        raise RuntimeError(f"Slicer could not read the engine's segmentation {seg_nrrd_path}")
    segmentation = segmentation_node.GetSegmentation()
    segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
    named = {int(spec["value"]): spec["name"] for spec in report["segments"]
             if int(spec["value"]) > 0}
    named[UNCERTAIN_SEGMENT_VALUE] = report["uncertain_region"]["name"]
    segment_ids = {}
    for value, name in named.items():
        segment_id = segmentation.GetSegmentIdBySegmentName(name)
        if not segment_id:
            raise RuntimeError(f"{seg_nrrd_path}: no segment named '{name}'")
        segment_ids[value] = segment_id
    if not with_regions:
        segmentation.RemoveSegment(segment_ids.pop(UNCERTAIN_SEGMENT_VALUE))
    segmentation_node.CreateDefaultDisplayNodes()
    segmentation_node.CreateClosedSurfaceRepresentation()  # 3-D surfaces on
    display = segmentation_node.GetDisplayNode()
    if UNCERTAIN_SEGMENT_VALUE in segment_ids:
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


def add_uncertainty_volume(scene, reference_volume, uncertainty: np.ndarray, name: str):
    """A scalar volume on the input's grid holding ``uncertainty`` (0..1), in a heat colour
    map."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    node.CopyOrientation(reference_volume)
    slicer.util.updateVolumeFromArray(node, uncertainty.astype(np.float32))
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, 1.0)
    display.SetAndObserveColorNodeID(UNCERTAINTY_COLOR_NODE_ID)
    display.SetLowerThreshold(UNCERTAINTY_SHOWN_FROM)  # the CT shows through
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
