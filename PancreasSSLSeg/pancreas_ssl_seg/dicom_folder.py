"""Reading a DICOM series folder: which series, which files, and a grid that is really uniform.

The largest CT series is read (a note says so when there are several); localizer (scout) images
are left out with a note; a file repeating a slice already read is read once. A missing slice,
uneven slice gaps or a gantry tilt (slices sheared against their orientation) are refused rather
than interpolated, because any resampling would invent anatomy the scanner did not record. Size,
spacing and memory are checked from the headers before any voxel is read.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .ct_plausibility import check_spacing
from .errors import InputError
from .memory import GridCheck, check_read_memory
from .sitk_reading import bytes_per_voxel, itk_reason, itk_warnings_off

POSITION_TAG, MODALITY_TAG, IMAGE_TYPE_TAG = "0020|0032", "0008|0060", "0008|0008"
SOP_INSTANCE_TAG = "0008|0018"
# A slice gap this far (relative) from the median gap means a missing or misplaced slice.
SLICE_GAP_TOLERANCE = 0.1
# Slices shifted sideways by more than this fraction of their gap (about 0.6 degrees) are tilted.
SLICE_SHEAR_TOLERANCE = 0.01


def dicom_series_ids(folder: Path) -> tuple[str, ...]:
    """Series instance UIDs of the DICOM files directly in ``folder`` (empty if none)."""
    with itk_warnings_off():  # "No Series were found" would go straight to stderr
        return tuple(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))


def read_dicom_folder(folder: Path, notes: list[str],
                      check_grid: GridCheck | None = None) -> sitk.Image:
    """The series of ``folder`` to segment, as ITK reads it (see the module docstring); remarks
    for the user are appended to ``notes``; ``check_grid`` sees the size and spacing the headers
    declare before the voxels are read."""
    try:
        empty = not any(folder.iterdir())
    except OSError as error:
        raise InputError(f"{folder.name}: folder cannot be listed ({error.strerror})") from None
    if empty:
        raise InputError(f"{folder.name}: folder is empty; expected a DICOM series")
    series = dicom_series_ids(folder)
    if not series:
        raise InputError(f"{folder.name}: no DICOM series found in this folder")
    with itk_warnings_off():
        headers = {uid: [_dicom_header(name) for name in
                         sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)]
                   for uid in series}
    # Localizers (scouts) are projections at other angles: never slices of the volume.
    slices = {uid: [h for h in found if h is not None and not h["localizer"]]
              for uid, found in headers.items()}
    # The same instance twice (a PACS export copying a file under another name): read it once.
    duplicates = {uid: _drop_repeated_instances(found) for uid, found in slices.items()}
    chosen = max(series, key=lambda uid: (any(h["modality"] == "CT" for h in slices[uid]),
                                          len(slices[uid])))
    _sort_along_normal(slices[chosen])
    files = [h["file"] for h in slices[chosen]]
    if not files:
        raise InputError(f"{folder.name}: holds no readable slices, only localizer (scout) or "
                         "unreadable images; expected a CT series of axial slices")
    if len(series) > 1:
        notes.append(f"{folder.name}: holds {len(series)} DICOM series; read the largest CT series "
                     f"{chosen or '(no UID)'} ({len(files)} slices)")
    left_out = len(headers[chosen]) - len(files) - duplicates[chosen]
    if left_out:
        notes.append(f"{folder.name}: left out {left_out} localizer (scout) or unreadable "
                     "image(s) of the series read")
    if duplicates[chosen]:
        notes.append(f"{folder.name}: {duplicates[chosen]} file(s) repeat a slice already read "
                     "(same SOP Instance UID or identical file); each slice was read once")
    first = slices[chosen][0]
    size = (*first["size"][:2], first["size"][2] * len(files))
    spacing = (*first["spacing"][:2], _header_slice_gap(slices[chosen], first["spacing"][2]))
    check_spacing(spacing, folder.name)
    check_read_memory(folder.name, size, math.prod(size) * first["voxel_bytes"])
    if check_grid is not None:
        check_grid(size, spacing, folder.name)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        with itk_warnings_off():
            image = reader.Execute()
    except RuntimeError as error:
        raise InputError(f"{folder.name}: DICOM series cannot be read, a slice may be corrupt "
                         f"({itk_reason(error)})") from None
    _check_slice_positions(folder, image, reader)
    return image


def _dicom_header(file_name: str) -> dict | None:
    """What choosing a series needs from one file's header; ``None`` if it is unreadable."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(file_name)
    try:
        with itk_warnings_off():
            reader.ReadImageInformation()
    except RuntimeError:
        return None

    def tag(key: str) -> str:
        return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""

    size = tuple(reader.GetSize())
    spacing = tuple(reader.GetSpacing())
    try:
        position = [float(v) for v in tag(POSITION_TAG).split("\\")]
    except ValueError:
        position = []
    return {"file": file_name, "modality": tag(MODALITY_TAG), "sop_uid": tag(SOP_INSTANCE_TAG),
            "localizer": "LOCALIZER" in tag(IMAGE_TYPE_TAG).upper(),
            "size": size if len(size) == 3 else (*size[:2], 1),
            "spacing": spacing if len(spacing) == 3 else (*spacing[:2], 1.0),
            "normal": np.array(reader.GetDirection()).reshape(len(size), len(size))[:, -1][:3]
            if len(size) == 3 else None,
            "position": position if len(position) == 3 else None,
            "voxel_bytes": bytes_per_voxel(reader.GetPixelID(), reader.GetNumberOfComponents())}


def _drop_repeated_instances(headers: list[dict]) -> int:
    """Keep the first file of each instance (in place): the same SOP Instance UID, or, without
    UIDs (anonymised exports), a byte-identical file at the same position. Returns how many were
    dropped; files that only share a position stay (the position check refuses them)."""
    seen_uids, first_at, kept = set(), {}, []
    for header in headers:
        if header["sop_uid"]:
            if header["sop_uid"] in seen_uids:
                continue
            seen_uids.add(header["sop_uid"])
        position = tuple(header["position"]) if header["position"] is not None else None
        earlier = first_at.get(position)
        if earlier is not None and _same_bytes(earlier["file"], header["file"]):
            continue
        first_at.setdefault(position, header)
        kept.append(header)
    dropped = len(headers) - len(kept)
    headers[:] = kept
    return dropped


def _sort_along_normal(headers: list[dict]) -> None:
    """Order slices by position along their normal (in place). GDCM orders them so too, but falls
    back to file names when positions repeat, which can scramble the volume."""
    normal = headers[0]["normal"] if headers else None
    if normal is not None and all(h["position"] is not None for h in headers):
        headers.sort(key=lambda h: float(np.dot(h["position"], normal)))


def _same_bytes(first: str, second: str) -> bool:
    try:
        return (os.path.getsize(first) == os.path.getsize(second)
                and Path(first).read_bytes() == Path(second).read_bytes())
    except OSError:
        return False


def _header_slice_gap(headers: list[dict], fallback_mm: float) -> float:
    """Median gap (mm) between the slice positions of a series' headers, before reading it; the
    first file's own spacing for a single (multi-frame) file or unreadable positions."""
    normal = headers[0]["normal"]
    positions = [h["position"] for h in headers if h["position"] is not None]
    if len(headers) < 2 or len(positions) != len(headers) or normal is None:
        # An enhanced (multi-frame) CT whose frames run against the slice normal (head to feet,
        # as PACS converters write them) has a negative frame spacing in its header; the series
        # reader gives the same grid with a positive spacing and that axis reversed.
        return abs(float(fallback_mm))
    along = np.sort(np.array(positions) @ normal)
    gaps = np.diff(along)
    return float(np.median(gaps)) if np.median(gaps) > 0 else abs(float(fallback_mm))


def _check_slice_positions(folder: Path, image: sitk.Image, reader: sitk.ImageSeriesReader) -> None:
    """Refuse series with missing or duplicate slices, or sheared by a gantry tilt: their voxel
    grid would be wrong."""
    count = len(reader.GetFileNames())
    if count < 2:
        return
    try:
        positions = np.array([[float(v) for v in reader.GetMetaData(i, POSITION_TAG).split("\\")]
                              for i in range(count)])
    except (RuntimeError, ValueError):
        raise InputError(f"{folder.name}: DICOM slices lack a readable Image Position (Patient); "
                         "cannot check that no slice is missing") from None
    normal = np.array(image.GetDirection()).reshape(3, 3)[:, 2]
    positions = positions[np.argsort(positions @ normal)]
    gaps_mm = np.diff(positions @ normal)
    median_gap_mm = float(np.median(gaps_mm))
    if median_gap_mm <= 0 or np.max(np.abs(gaps_mm - median_gap_mm)) > (
            SLICE_GAP_TOLERANCE * median_gap_mm):
        raise InputError(f"{folder.name}: DICOM slice positions are not uniformly spaced "
                         f"(gaps {gaps_mm.min():.2f}..{gaps_mm.max():.2f} mm); a slice is missing, "
                         "duplicated or corrupt")
    steps = np.diff(positions, axis=0)
    sideways_mm = np.linalg.norm(steps - np.outer(steps @ normal, normal), axis=1)
    if np.max(sideways_mm) > SLICE_SHEAR_TOLERANCE * median_gap_mm:
        tilt_deg = math.degrees(math.atan2(float(np.median(sideways_mm)), median_gap_mm))
        raise InputError(f"{folder.name}: DICOM slices are shifted sideways along the series "
                         f"(gantry tilt about {tilt_deg:.1f} degrees); the grid would be sheared. "
                         "Resample the series to an untilted grid first")
