"""Reading and checking input CT: image files, DICOM series folders, SimpleITK images, arrays.

Everything the engine accepts passes through :func:`as_image`, which returns a float32 3-D scalar
``SimpleITK.Image`` or raises :class:`InputError` naming the file and the problem. Reading uses
SimpleITK (``ReadImage``, ``ImageSeriesReader``); this module only adds the checks and messages.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError

# Longest suffix first, so "x.nii.gz" loses ".nii.gz" and not only ".gz".
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
POSITION_TAG, MODALITY_TAG = "0020|0032", "0008|0060"
# A slice gap this far (relative) from the median gap means a missing or misplaced slice.
SLICE_GAP_TOLERANCE = 0.1
AIR_HU = -1000.0


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES)


def case_name(path: str | Path) -> str:
    """Case identifier for output names: file name without its image suffix; folder → its name."""
    path = Path(path)
    lower = path.name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix) and len(lower) > len(suffix):
            return path.name[: -len(suffix)]
    return path.name


def dicom_series_ids(folder: Path) -> tuple[str, ...]:
    """Series instance UIDs of the DICOM files directly in ``folder`` (empty if none)."""
    return tuple(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))


def read_image(path: str | Path, notes: list[str] | None = None) -> sitk.Image:
    """Read an image file (.nii/.nii.gz/.nrrd/.mha/.mhd) or a DICOM series folder, unchecked.

    ``notes`` (if given) receives remarks a user should see, e.g. which of several series was read.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path.is_dir():
        return _read_dicom_folder(path, notes if notes is not None else [])
    if not path.name.lower().endswith(IMAGE_SUFFIXES):
        raise InputError(f"{path.name}: unsupported file type; expected one of "
                         f"{', '.join(IMAGE_SUFFIXES)} or a DICOM series folder")
    if path.name.lower().endswith(".gz"):
        _check_gzip_complete(path)
    if path.name.lower().endswith((".nii", ".nii.gz")):
        _check_nifti_pixdim(path)
    try:
        with _itk_warnings_off():
            return sitk.ReadImage(str(path))
    except RuntimeError as error:
        reason = _itk_reason(error)
        raise InputError(f"{path.name}: cannot be read as an image ({reason})") from None


@contextmanager
def _itk_warnings_off():
    """ITK prints warnings straight to stderr; the checks here turn real problems into errors."""
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def _check_gzip_complete(path: Path) -> None:
    """ITK fills a truncated gzip's missing voxels silently; decompress once to catch that."""
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 24):
                pass
    except (EOFError, OSError, zlib.error) as error:
        raise InputError(f"{path.name}: compressed data is truncated or corrupt "
                         f"({error})") from None


def _check_nifti_pixdim(path: Path) -> None:
    """ITK's NIfTI reader replaces a zero voxel size by 1 mm; read the header to refuse instead.

    NIfTI-1 stores ``pixdim`` as 8 float32 at byte 76, NIfTI-2 as 8 float64 at byte 104;
    ``sizeof_hdr`` (348 or 540) tells the version and the byte order.
    """
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as stream:
        header = stream.read(540)
    for order in "<>":
        if len(header) >= 348 and struct.unpack(order + "i", header[:4])[0] == 348:
            pixdim = struct.unpack(order + "8f", header[76:108])[1:4]
            break
        if len(header) >= 540 and struct.unpack(order + "i", header[:4])[0] == 540:
            pixdim = struct.unpack(order + "8d", header[104:168])[1:4]
            break
    else:
        return  # not a NIfTI header: ITK reports the problem when it reads the file
    if not min(pixdim) > 0:
        raise InputError(f"{path.name}: header voxel spacing (pixdim) {list(pixdim)} mm; expected "
                         "positive values")


def _itk_reason(error: RuntimeError) -> str:
    """The informative line of an ITK exception (they span several lines with source paths)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for marker in ("ITK ERROR:", "Description:", "sitk::ERROR:"):
        for line in lines:
            if marker in line:
                reason = line.split(marker, 1)[1].strip()
                # "ITK ERROR: Image(0x...): text" → "text"
                return reason.split("): ", 1)[-1]
    return lines[-1] if lines else "unknown reason"


def _read_dicom_folder(folder: Path, notes: list[str]) -> sitk.Image:
    if not any(folder.iterdir()):
        raise InputError(f"{folder.name}: folder is empty; expected a DICOM series")
    series = dicom_series_ids(folder)
    if not series:
        raise InputError(f"{folder.name}: no DICOM series found in this folder")
    file_lists = {uid: sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)
                  for uid in series}
    chosen = max(series, key=lambda uid: (_modality(file_lists[uid][0]) == "CT",
                                          len(file_lists[uid])))
    if len(series) > 1:
        notes.append(f"{folder.name}: holds {len(series)} DICOM series; read the largest CT series "
                     f"{chosen or '(no UID)'} ({len(file_lists[chosen])} slices)")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(file_lists[chosen])
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        with _itk_warnings_off():
            image = reader.Execute()
    except RuntimeError as error:
        raise InputError(f"{folder.name}: DICOM series cannot be read, a slice may be corrupt "
                         f"({_itk_reason(error)})") from None
    _check_slice_positions(folder, image, reader)
    return image


def _modality(file_name: str) -> str:
    reader = sitk.ImageFileReader()
    reader.SetFileName(file_name)
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return ""
    return reader.GetMetaData(MODALITY_TAG).strip() if reader.HasMetaDataKey(MODALITY_TAG) else ""


def _check_slice_positions(folder: Path, image: sitk.Image, reader: sitk.ImageSeriesReader) -> None:
    """Refuse series with missing or duplicate slices: their voxel grid would be wrong."""
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
    gaps_mm = np.diff(np.sort(positions @ normal))
    median_gap_mm = float(np.median(gaps_mm))
    if median_gap_mm <= 0 or np.max(np.abs(gaps_mm - median_gap_mm)) > (
            SLICE_GAP_TOLERANCE * median_gap_mm):
        raise InputError(f"{folder.name}: DICOM slice positions are not uniformly spaced "
                         f"(gaps {gaps_mm.min():.2f}..{gaps_mm.max():.2f} mm); a slice is missing, "
                         "duplicated or corrupt")


def as_image(image, spacing_mm=None, origin=None, direction=None,
             notes: list[str] | None = None) -> sitk.Image:
    """Any accepted input → checked float32 3-D scalar ``SimpleITK.Image``.

    ``image``: a path (file or DICOM folder), a ``SimpleITK.Image``, or a numpy array with axes
    ``(z, y, x)``. Geometry arguments (SimpleITK order: ``spacing_mm`` (x, y, z), ``origin`` mm,
    ``direction`` 9 cosines) apply to arrays only; an array without ``spacing_mm`` is refused,
    since a guessed spacing would silently give wrong volumes.
    """
    if isinstance(image, np.ndarray):
        name = "input array"
        image = _array_to_image(image, spacing_mm, origin, direction)
    else:
        if spacing_mm is not None or origin is not None or direction is not None:
            raise ValueError("spacing_mm/origin/direction apply to numpy arrays only")
        if isinstance(image, sitk.Image):
            name = "input image"
        elif isinstance(image, (str, Path)):
            name = Path(image).name
            image = read_image(image, notes)
        else:
            raise InputError(f"unsupported input type {type(image).__name__}; expected a path, "
                             "a SimpleITK.Image or a numpy array")
    image = _squeeze_trailing_time(image)
    _check_image(image, name)
    return sitk.Cast(image, sitk.sitkFloat32)


def _array_to_image(array: np.ndarray, spacing_mm, origin, direction) -> sitk.Image:
    if array.ndim != 3:
        raise InputError(f"input array has {array.ndim} dimensions {array.shape}; expected a 3-D "
                         "(z, y, x) volume")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise InputError(f"input array has dtype {array.dtype}; expected integer or float values")
    if spacing_mm is None:
        raise InputError("input array: spacing_mm (x, y, z) is required for array input")
    spacing = np.asarray(spacing_mm, dtype=float)
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(f"input array: spacing_mm {list(spacing_mm)} must be 3 positive numbers")
    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    image.SetSpacing([float(s) for s in spacing])
    if origin is not None:
        image.SetOrigin([float(o) for o in origin])
    if direction is not None:
        image.SetDirection([float(d) for d in direction])
    return image


def _squeeze_trailing_time(image: sitk.Image) -> sitk.Image:
    """A 4-D image with a single time point is a 3-D volume (some NIfTI writers add the axis)."""
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        return sitk.Extract(image, [*image.GetSize()[:3], 0], [0, 0, 0, 0])
    return image


def _check_image(image: sitk.Image, name: str) -> None:
    if image.GetNumberOfComponentsPerPixel() > 1:
        raise InputError(f"{name}: has {image.GetNumberOfComponentsPerPixel()} components per "
                         "voxel (vector/RGB); expected a scalar CT volume")
    if image.GetDimension() != 3:
        raise InputError(f"{name}: is {image.GetDimension()}-D {list(image.GetSize())}; expected a "
                         "3-D CT volume")
    if min(image.GetSize()) < 2:
        raise InputError(f"{name}: size {list(image.GetSize())} has a single slice along an axis; "
                         "expected a 3-D CT volume")
    spacing = np.array(image.GetSpacing())
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(f"{name}: voxel spacing {list(spacing)} mm; expected positive values")
    values = sitk.GetArrayViewFromImage(image)
    # min/max propagate NaN, so two reductions cover NaN/inf without a full-size mask.
    low, high = float(np.min(values)), float(np.max(values))
    if not (np.isfinite(low) and np.isfinite(high)):
        raise InputError(f"{name}: contains NaN or infinite values")
    if low == high:
        raise InputError(f"{name}: every voxel has the value {low:g}; expected a CT volume")


def check_ct_intensities(image: sitk.Image) -> list[str]:
    """Warnings when the values do not look like CT Hounsfield units (e.g. MR, 0..1, raw counts).

    A torso CT contains air (about −1000 HU) outside the body and in the bowel; a volume whose
    darkest percentile is far above that is probably not in HU, and the model's intensity window
    would then be meaningless.
    """
    values = sitk.GetArrayViewFromImage(image)
    low_hu, high_hu = (float(v) for v in np.percentile(values, [1, 99]))
    warnings = []
    if low_hu > AIR_HU + 500:
        warnings.append(f"intensities are not like CT in Hounsfield units: 1st-99th percentile "
                        f"{low_hu:.0f}..{high_hu:.0f}, no air near {AIR_HU:.0f} HU (MR or "
                        "rescaled image?); results are unreliable")
    elif high_hu - low_hu < 200:
        warnings.append(f"intensity range is narrow for CT: 1st-99th percentile "
                        f"{low_hu:.0f}..{high_hu:.0f} HU; results are unreliable")
    return warnings
