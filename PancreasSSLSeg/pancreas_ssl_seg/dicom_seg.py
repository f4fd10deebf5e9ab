"""DICOM Segmentation (SEG) objects for results whose input was a DICOM series, made with highdicom.

The SEG references the source series (Study, Series and SOP Instance UIDs, Frame of Reference):
each frame is one source slice (or one frame of a multi-frame source) and one segment. Segments
are the bundle's labels other than background, numbered by label value, with the bundle's names,
colours (as CIELab) and coded terminology, algorithm identification (model name and version) and
``content_qualification`` RESEARCH; the series description says it is not for clinical use.

The source slices are matched to the segmented grid by geometry, not by reading order: every
slice of the SEG must be a source file, or a frame of one multi-frame (enhanced) CT holding the
whole grid, whose position lies on a slice of the result's grid, with the same rows, columns and
orientation. When the folder holds no such complete series, or the series lacks what a SEG must
reference (anonymised exports often blank the UIDs), :func:`build_dicom_seg` raises
:class:`DicomSegUnavailable` with the reason: the caller writes the other outputs and records a
warning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SUFFIX = "_seg.dcm"
SERIES_NUMBER = 9100
# SeriesDescription is a DICOM LO: 64 characters at most.
SERIES_DESCRIPTION = "AI pancreas seg - research only, not for clinical use"
# What a SEG must copy or reference from its source slices.
REQUIRED_ATTRIBUTES = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
                       "FrameOfReferenceUID")
# Slice position tolerance, in voxels of the result grid.
POSITION_TOLERANCE = 0.01
ORIENTATION_TOLERANCE = 1e-4


class DicomSegUnavailable(Exception):
    """The result cannot become a DICOM SEG of its source series; the message says why."""


def source_frames(folder: str | Path, image) -> tuple[list, list[int]]:
    """Header-only pydicom datasets of ``folder`` that a SEG of ``image``'s grid references, and
    for each of their frames in order the grid slice it lies on (index k of the (z, y, x) array):
    single-frame slices in grid order (frame k is slice k), or one multi-frame (enhanced) image
    whose frames cover the grid, in its own frame order.

    A frame counts when its image's Rows/Columns equal the grid's size, its orientation equals
    the grid's first two axes and its position lies on the grid's slice k (within 0.01 voxel).
    Repeated instances (same SOP Instance UID, or the same slice again) are taken once.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    folder = Path(folder)
    size = image.GetSize()
    direction = np.array(image.GetDirection()).reshape(3, 3)
    found: dict[int, Any] = {}
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            dataset = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError):
            continue
        on_grid = [_grid_slice(dataset, orientation, position, image, direction, size)
                   for orientation, position in _frame_planes(dataset)]
        if len(on_grid) > 1:  # every frame on its own slice of the grid, or not this image
            if None not in on_grid and sorted(on_grid) == list(range(size[2])):
                return [dataset], on_grid
        elif on_grid and on_grid[0] is not None and on_grid[0] not in found:
            found[on_grid[0]] = dataset
    missing = [k for k in range(size[2]) if k not in found]
    if missing:
        raise DicomSegUnavailable(
            f"{folder.name}: no DICOM slice matches {len(missing)} of the {size[2]} slices of the "
            f"segmented grid (first: slice {missing[0]}); a SEG must reference one source slice "
            "per frame")
    return [found[k] for k in range(size[2])], list(range(size[2]))


def _frame_planes(dataset) -> list[tuple[Any, Any]]:
    """(ImageOrientationPatient, ImagePositionPatient) of each frame: the image's own, or, for a
    multi-frame (enhanced) image, each frame's from its functional groups (orientation shared
    or per frame)."""
    if "PerFrameFunctionalGroupsSequence" not in dataset:
        return [(getattr(dataset, "ImageOrientationPatient", None),
                 getattr(dataset, "ImagePositionPatient", None))]
    shared = (dataset.SharedFunctionalGroupsSequence[0]
              if "SharedFunctionalGroupsSequence" in dataset else {})
    planes = []
    for frame in dataset.PerFrameFunctionalGroupsSequence:
        groups = frame if "PlaneOrientationSequence" in frame else shared
        try:
            orientation = groups.PlaneOrientationSequence[0].ImageOrientationPatient
            position = frame.PlanePositionSequence[0].ImagePositionPatient
        except (AttributeError, IndexError):
            orientation = position = None
        planes.append((orientation, position))
    return planes


def _grid_slice(dataset, orientation, position, image, direction: np.ndarray,
                size: tuple[int, int, int]) -> int | None:
    try:
        rows, columns = int(dataset.Rows), int(dataset.Columns)
        orientation = np.array([float(v) for v in orientation])
        position = [float(v) for v in position]
    except (AttributeError, TypeError, ValueError):
        return None
    if (columns, rows) != size[:2] or orientation.shape != (6,) or len(position) != 3:
        return None
    if not np.allclose(orientation, np.concatenate([direction[:, 0], direction[:, 1]]),
                       atol=ORIENTATION_TOLERANCE):
        return None
    index = np.array(image.TransformPhysicalPointToContinuousIndex(position))
    k = int(round(index[2]))
    if np.any(np.abs(index[:2]) > POSITION_TOLERANCE) or abs(index[2] - k) > POSITION_TOLERANCE:
        return None
    return k if 0 <= k < size[2] else None


def check_references(folder: str | Path, slices: list) -> None:
    """Every slice has the UIDs a SEG copies or references, one study, one series and one frame
    of reference."""
    name = Path(folder).name
    absent = [key for key in REQUIRED_ATTRIBUTES
              if any(not str(getattr(s, key, "") or "").strip() for s in slices)]
    if absent:
        raise DicomSegUnavailable(
            f"{name}: the DICOM series lacks {', '.join(absent)} (blank or missing, as in many "
            "anonymised exports); a SEG must reference them")
    for key in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        if len({str(getattr(s, key)) for s in slices}) > 1:
            raise DicomSegUnavailable(f"{name}: the slices of the segmented grid come from more "
                                      f"than one {key}; a SEG references one series")


def segment_descriptions(report: dict[str, Any]) -> list:
    """One highdicom ``SegmentDescription`` per non-background label of the report's
    ``segments`` (the bundle's labels), numbered by label value."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    model = report.get("model", {})
    algorithm = hd.AlgorithmIdentificationSequence(
        name=str(model.get("name", "unknown")), version=str(model.get("version", "unknown")),
        family=codes.cid7162.ArtificialIntelligence, source="PancreasSSLSeg")
    descriptions = []
    for label in report["segments"]:
        value = int(label["value"])
        if value == 0:
            continue
        terminology = label.get("terminology", {})
        if "category" not in terminology or "type" not in terminology:
            raise DicomSegUnavailable(f"the model's label {value} ({label['name']}) has no "
                                      "category and type codes; a SEG segment needs them")
        regions = ([_code(terminology["anatomicRegion"])] if "anatomicRegion" in terminology
                   else None)
        color = label.get("color")
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=value, segment_label=str(label["name"])[:64],
            segmented_property_category=_code(terminology["category"]),
            segmented_property_type=_code(terminology["type"]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm, tracking_uid=hd.UID(),
            tracking_id=f"{label['name']} (label {value})"[:64], anatomic_regions=regions,
            display_color=hd.color.CIELabColor.from_rgb(*(float(c) for c in color))
            if color is not None else None))
    return descriptions


def _code(entry: dict[str, str]):
    from highdicom.sr.coding import CodedConcept

    return CodedConcept(value=str(entry["code"]), scheme_designator=str(entry["scheme"]),
                        meaning=str(entry["meaning"]))


def build_dicom_seg(result, folder: str | Path):
    """A highdicom ``Segmentation`` of ``result.labels`` (on ``result.image``'s grid) referencing
    the DICOM series in ``folder``; :class:`DicomSegUnavailable` when it cannot be made (also
    when highdicom or pydicom is missing: a Slicer Python set up before they were required)."""
    try:
        import highdicom as hd
        import pydicom  # noqa: F401 (source_frames reads the series with it)
    except ImportError as error:
        raise DicomSegUnavailable(f"highdicom is not installed ({error})") from None

    from . import __version__

    sources, frame_slices = source_frames(folder, result.image)
    check_references(folder, sources)
    labels = np.asarray(result.labels, np.uint8)[frame_slices]  # one frame per source frame
    descriptions = segment_descriptions(result.report)
    numbers = [d.SegmentNumber for d in descriptions]
    if numbers != list(range(1, len(numbers) + 1)):
        raise DicomSegUnavailable(f"the model's label values {numbers} are not 1, 2, …; SEG "
                                  "segment numbers must be")
    # Values outside the described segments (none expected) would name no segment.
    labels = np.where(labels <= len(numbers), labels, 0).astype(np.uint8)
    model = result.report.get("model", {})
    try:
        return hd.seg.Segmentation(
            source_images=sources, pixel_array=labels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions, series_instance_uid=hd.UID(),
            series_number=SERIES_NUMBER, sop_instance_uid=hd.UID(), instance_number=1,
            manufacturer="PancreasSSLSeg",
            manufacturer_model_name=str(model.get("name", "unknown")),
            software_versions=f"PancreasSSLSeg {__version__}, model {model.get('version', '?')}",
            device_serial_number="none", series_description=SERIES_DESCRIPTION,
            content_description="Pancreas and pancreatic lesion (research use)",
            content_label="PANCREAS_AI",
            content_qualification=hd.ContentQualificationValues.RESEARCH,
            # Frames without any segment are left out; with nothing segmented at all, every frame
            # is kept (a SEG needs frames; highdicom would otherwise log that it does so).
            omit_empty_frames=bool(labels.any()))
    except (ValueError, TypeError, AttributeError) as error:
        raise DicomSegUnavailable(f"{Path(folder).name}: highdicom could not build the SEG from "
                                  f"this series ({error})") from None
