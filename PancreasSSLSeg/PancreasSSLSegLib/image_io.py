"""Reading and checking input CT: image files, DICOM series folders, SimpleITK images, arrays.

Everything the engine accepts passes through :func:`as_image`, which returns a float32 3-D scalar
``SimpleITK.Image`` or raises :class:`InputError` naming the file and the problem. Reading uses
SimpleITK (``ImageFileReader``, ``ImageSeriesReader``); this module only adds the checks and
messages. Files are read header first: the declared size is checked against the data the file
holds and against the memory available (:class:`ResourceError`) before any voxel is allocated.

DICOM folders: the largest CT series is read (a note says so when there are several); localizer
(scout) images are left out with a note; a missing slice, uneven slice gaps or a gantry tilt
(slices sheared against their orientation) are refused rather than interpolated, because any
resampling would invent anatomy the scanner did not record.

Voxel size: spacings outside 0.05-20 mm (:data:`PLAUSIBLE_SPACING_MM`) are refused from the
header, before any voxel is read: they are wrong units (metres, micrometres) or broken headers, and
resampling such a scan to the model's grids would allocate absurd volumes.

Non-finite voxels (NaN, +-inf), whatever the input (file, array, SimpleITK image): a volume with no
finite voxel is refused; otherwise they are set to ``hounsfield.OUTSIDE_SCAN_HU`` (air, the value
the engine also uses outside the scan) and a note says how many there were, of which kind, on which
slices. ITK's NIfTI reader silently turns them into 0 (an HU of water), so float NIfTI data is
scanned byte-wise to find them.
"""

from __future__ import annotations

import gzip
import math
import os
import re
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np
import psutil
import SimpleITK as sitk

from .errors import InputError, ResourceError
from .hounsfield import AIR_HU, MAX_TISSUE_HU, MIN_CT_HU, OUTSIDE_SCAN_HU

# Longest suffix first, so "x.nii.gz" loses ".nii.gz" and not only ".gz".
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
POSITION_TAG, MODALITY_TAG, IMAGE_TYPE_TAG = "0020|0032", "0008|0060", "0008|0008"
SOP_INSTANCE_TAG = "0008|0018"
# A slice gap this far (relative) from the median gap means a missing or misplaced slice.
SLICE_GAP_TOLERANCE = 0.1
# Slices shifted sideways by more than this fraction of their gap (about 0.6 degrees) are tilted.
SLICE_SHEAR_TOLERANCE = 0.01
# Direction cosines written with 6 decimals are orthonormal to about 1e-6; a sheared grid is not.
DIRECTION_TOLERANCE = 1e-3
# A pancreas spans about 12-20 cm across and 4-8 cm head to foot: a scan thinner than this along
# any axis cannot hold it whole (the shared 20-slice DICOM slab is 40 mm thick).
SMALL_FOV_MM = 30.0
# Voxel sizes a CT can have (mm, every axis): 0.05 mm is below any clinical or micro-CT of a torso
# would need, 20 mm above any slice thickness in use.
PLAUSIBLE_SPACING_MM = (0.05, 20.0)
# A minimum shared by this fraction of voxels (or more) below air is padding outside the
# reconstructed field of view (-3024, -2048, -32768 are common), left out of the percentiles.
PADDING_FRACTION = 0.005

# ``check_grid(size_xyz, spacing_mm, name)`` is called with a file's declared 3-D size and spacing
# (x, y, z) before its voxels are read, for estimates of the grids a run resamples to
# (``memory.GridGuard``).
GridCheck = Callable[[tuple[int, int, int], tuple[float, float, float], str], None]


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
    with _itk_warnings_off():  # "No Series were found" would go straight to stderr
        return tuple(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))


def read_image(path: str | Path, notes: list[str] | None = None,
               check_grid: GridCheck | None = None) -> sitk.Image:
    """Read an image file (.nii/.nii.gz/.nrrd/.mha/.mhd) or a DICOM series folder, unchecked.

    ``notes`` (if given) receives remarks a user should see, e.g. which of several series was read.
    ``check_grid`` (if given) may refuse the declared size and spacing before the voxels are
    allocated; an implausible spacing is refused here first. Voxel values are those
    the file holds (NaN included: see :func:`_nifti_non_finite`).
    """
    path = Path(path)
    _check_path(path)
    if path.is_dir():
        return _read_dicom_folder(path, notes if notes is not None else [], check_grid)
    if not path.name.lower().endswith(IMAGE_SUFFIXES):
        raise InputError(f"{path.name}: unsupported file type; expected one of "
                         f"{', '.join(IMAGE_SUFFIXES)} or a DICOM series folder")
    _check_header_before_itk(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with _itk_warnings_off():
            reader.ReadImageInformation()
    except RuntimeError as error:
        raise InputError(f"{path.name}: cannot be read as an image "
                         f"({_itk_reason(error)})") from None
    size = tuple(reader.GetSize())
    data_bytes = math.prod(size) * _bytes_per_voxel(reader.GetPixelID(),
                                                    reader.GetNumberOfComponents())
    # ITK reports float voxels for NIfTI data it will scale (scl_slope/scl_inter); the file holds
    # the stored type (e.g. int16): compare the data with that.
    stored_bytes = _nifti_stored_bytes(path) if path.name.lower().endswith(".nii") else None
    _check_declared_data(path, size, data_bytes if stored_bytes is None else stored_bytes)
    _check_header_geometry(path.name, size, tuple(reader.GetSpacing()))
    check_read_memory(path.name, size, data_bytes)
    if check_grid is not None and len(size) >= 3:
        check_grid(size[:3], tuple(reader.GetSpacing())[:3], path.name)
    scan = None
    if path.name.lower().endswith((".nii", ".nii.gz")):
        scan = _nifti_non_finite  # also checks a .nii.gz decompresses to its end
    elif path.name.lower().endswith(".gz"):
        scan = _check_gzip_complete
    # The byte scan (zlib) and ITK's read both release the GIL, so they overlap on two cores
    # (512x512x224 int16 .nii.gz: 1.27 -> 0.98 s, benchmarks/NOTES.md). The scan's verdict comes
    # first: a truncated or corrupt file is refused with its message whatever ITK made of it.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="scan") as pool:
        scanned = pool.submit(scan, path) if scan is not None else None
        image, itk_error = None, None
        try:
            with _itk_warnings_off():
                image = reader.Execute()
        except RuntimeError as error:
            itk_error = error
        non_finite = scanned.result() if scanned is not None else None
    if itk_error is not None:
        raise InputError(f"{path.name}: cannot be read as an image "
                         f"({_itk_reason(itk_error)})") from None
    if notes is not None and path.name.lower().endswith((".nii", ".nii.gz")):
        notes += _nifti_orientation_notes(path, image)
    return image if non_finite is None else _restore_non_finite(image, non_finite)


def _nifti_header(path: Path) -> tuple[str, int, bytes] | None:
    """(byte order, header size 348 or 540, header bytes) of a NIfTI-1/2 file, else ``None``."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as stream:
            header = stream.read(540)
    except (EOFError, OSError, zlib.error):
        return None
    for order in "<>":
        if len(header) >= 348:
            size = struct.unpack(order + "i", header[:4])[0]
            if size == 348 or (size == 540 and len(header) >= 540):
                return order, size, header
    return None


def _nifti_stored_bytes(path: Path) -> int | None:
    """Bytes of voxel data a NIfTI header declares in its stored type (dims x bitpix)."""
    found = _nifti_header(path)
    if found is None:
        return None
    order, size, header = found
    if size == 348:
        ndim, dims = struct.unpack(order + "h", header[40:42])[0], struct.unpack(order + "7h",
                                                                                  header[42:56])
        bitpix = struct.unpack(order + "h", header[72:74])[0]
    else:
        ndim, dims = struct.unpack(order + "q", header[16:24])[0], struct.unpack(order + "7q",
                                                                                  header[24:80])
        bitpix = struct.unpack(order + "h", header[14:16])[0]
    if not 1 <= ndim <= 7 or min(dims[:ndim]) < 1 or bitpix <= 0 or bitpix % 8:
        return None
    return math.prod(dims[:ndim]) * bitpix // 8


def _nifti_orientation_notes(path: Path, image: sitk.Image) -> list[str]:
    """A note when a NIfTI header holds no orientation (qform_code = sform_code = 0, as ANALYZE
    conversions write): ITK then assumes an identity direction, and left/right may be swapped."""
    found = _nifti_header(path)
    if found is None:
        return []
    order, size, header = found
    codes = (struct.unpack(order + "2h", header[252:256]) if size == 348
             else struct.unpack(order + "2i", header[344:352]))
    if any(codes):
        return []
    return [f"{path.name}: the NIfTI header holds no orientation (qform_code and sform_code are "
            f"0); read with direction {np.round(image.GetDirection(), 3).tolist()} and origin "
            f"{np.round(image.GetOrigin(), 1).tolist()}: left/right and front/back may be wrong, "
            "check the result's orientation"]


def _check_header_geometry(name: str, size: tuple[int, ...], spacing: tuple[float, ...]) -> None:
    """The declared voxel size of a 3-D (or 4-D) image, refused when no CT can have it."""
    if len(size) >= 3:
        check_spacing(spacing[:3], name)


def check_spacing(spacing_mm, name: str) -> None:
    """Refuse voxel sizes outside :data:`PLAUSIBLE_SPACING_MM` (non-positive ones included)."""
    spacing = [float(s) for s in spacing_mm]
    low, high = PLAUSIBLE_SPACING_MM
    if not all(np.isfinite(spacing)) or min(spacing) <= 0:
        raise InputError(f"{name}: voxel spacing {spacing} mm; expected positive values")
    if min(spacing) < low or max(spacing) > high:
        raise InputError(f"{name}: voxel spacing {[round(s, 6) for s in spacing]} mm is not "
                         f"plausible for CT (expected {low:g} to {high:g} mm per axis; wrong "
                         "units in the header, e.g. metres or micrometres?)")


def _check_path(path: Path) -> None:
    """Refuse what is not a readable regular file or folder, before any reader touches it (a FIFO
    would block a reader forever)."""
    try:
        path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise InputError(f"{path}: symbolic link leads nowhere (broken link)") from None
        raise InputError(f"{path}: no such file or folder") from None
    except OSError as error:  # ELOOP: a symbolic link loop; EACCES: a folder on the way
        raise InputError(f"{path}: cannot be opened ({error.strerror})") from None
    if not (path.is_file() or path.is_dir()):
        raise InputError(f"{path.name}: is not a regular file or folder (a device, pipe or "
                         "socket); expected an image file or a DICOM series folder")
    if not os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0)):
        raise InputError(f"{path.name}: permission denied; the file or folder is not readable "
                         "by this user")


def _bytes_per_voxel(pixel_id: int, components: int) -> int:
    try:
        component_bytes = sitk.Image([1, 1], pixel_id).GetSizeOfPixelComponent()
    except RuntimeError:  # a pixel type SimpleITK cannot hold: reading will say so
        component_bytes = 1
    return component_bytes * max(1, components)


def check_read_memory(name: str, size: tuple[int, ...], data_bytes: int) -> None:
    """Refuse a declared volume whose voxels, plus their float32 copy, exceed free memory."""
    needed = data_bytes + math.prod(size) * 4
    available = int(psutil.virtual_memory().available)
    if needed > available:
        raise ResourceError(f"{name}: declares {list(size)} voxels, which need about "
                            f"{needed / 2**30:.1f} GiB to read but only "
                            f"{available / 2**30:.1f} GiB of memory is available")


def _check_declared_data(path: Path, size: tuple[int, ...], data_bytes: int) -> None:
    """An uncompressed file must hold every voxel its header declares: ITK's NIfTI reader fills
    the missing ones with zeros silently, and MetaIO prints to the console before failing."""
    available = _raw_data_bytes(path)
    if available is not None and available < data_bytes:
        raise InputError(f"{path.name}: header declares {list(size)} voxels ({data_bytes} bytes) "
                         f"but the file holds only {max(available, 0)} bytes of voxel data; it "
                         "is truncated or its header is wrong")


def _raw_data_bytes(path: Path) -> int | None:
    """Bytes of uncompressed voxel data a file holds after its header; ``None`` when compressed
    or in a form this check does not cover (ASCII NRRD, lists of data files, nonsense offsets:
    ITK reports those when it reads)."""
    try:
        return _raw_data_bytes_unchecked(path)
    except (OSError, ValueError, OverflowError):
        return None


def _raw_data_bytes_unchecked(path: Path) -> int | None:
    lower = path.name.lower()
    if lower.endswith(".gz"):
        return None
    with open(path, "rb") as stream:
        head = stream.read(1 << 16)
    if lower.endswith(".nii"):
        for order in "<>":
            if len(head) >= 348 and struct.unpack(order + "i", head[:4])[0] == 348:
                return path.stat().st_size - int(struct.unpack(order + "f", head[108:112])[0])
        return None  # NIfTI-2 or not NIfTI: ITK checks it
    if lower.endswith((".mha", ".mhd")):
        text = head.decode("latin-1")
        if re.search(r"^\s*CompressedData\s*=\s*True", text, re.M | re.I):
            return None
        match = re.search(r"^\s*ElementDataFile\s*=\s*(.*?)\s*$", text, re.M)
        if match is None:
            return None
        if match.group(1) == "LOCAL":
            return path.stat().st_size - len(text[:match.end()].encode("latin-1")) - 1
        if match.group(1).upper().startswith("LIST") or "%" in match.group(1):
            return None  # one file per slice: not covered here
        data_file = path.parent / match.group(1)
        if not data_file.is_file():  # MetaIO would print to the console before failing
            raise InputError(f"{path.name}: its voxel data file {match.group(1)} is missing")
        return data_file.stat().st_size
    if lower.endswith(".nrrd"):
        end = head.find(b"\n\n")
        text = head[:max(end, 0)].decode("latin-1")
        encoding = re.search(r"^encoding:\s*(\S+)", text, re.M)
        if end < 0 or re.search(r"^data ?file:", text, re.M) or encoding is None or (
                encoding.group(1).lower() != "raw"):
            return None
        return path.stat().st_size - (end + 2)
    return None


@contextmanager
def _itk_warnings_off():
    """ITK prints warnings straight to stderr; the checks here turn real problems into errors."""
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


# NIfTI datatype codes of real floating-point voxels → numpy type (NaN/inf possible).
_NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8"}
_SCAN_CHUNK_BYTES = 1 << 24
# Codes of _nifti_non_finite's array: which non-finite value a voxel held.
_NAN, _POS_INF, _NEG_INF = 1, 2, 3


def _nifti_non_finite(path: Path) -> np.ndarray | None:
    """Where a float NIfTI's voxels are NaN/+inf/-inf (int8 codes in file order; ``None`` when
    every voxel is finite or the data are not float), read from the bytes because ITK's NIfTI
    reader replaces them with 0 without a word. A ``.nii.gz`` is decompressed to its end, which
    also refuses a truncated or corrupt one (as :func:`_check_gzip_complete`)."""
    compressed = path.name.lower().endswith(".gz")
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rb") as stream:
            layout = _nifti_data_layout(stream.read(540))
            found = None
            if layout is not None:
                dtype, offset, count = layout
                stream.seek(offset)
                found = _scan_non_finite(stream, dtype, count)
            if compressed:
                while stream.read(_SCAN_CHUNK_BYTES):
                    pass
    except (EOFError, OSError, zlib.error, ValueError) as error:
        if compressed:
            raise InputError(f"{path.name}: compressed data is truncated or corrupt "
                             f"({error})") from None
        return None  # ITK reports an unreadable file when it reads it
    return found


def _nifti_data_layout(header: bytes) -> tuple[np.dtype, int, int] | None:
    """(voxel dtype, data offset, voxel count) of a float NIfTI-1/2 header, else ``None``."""
    for order in "<>":
        if len(header) < 348:
            return None
        size = struct.unpack(order + "i", header[:4])[0]
        if size == 348:
            ndim = struct.unpack(order + "h", header[40:42])[0]
            dims = struct.unpack(order + "7h", header[42:56])
            code = struct.unpack(order + "h", header[70:72])[0]
            offset = int(struct.unpack(order + "f", header[108:112])[0])
            break
        if size == 540 and len(header) >= 540:
            code = struct.unpack(order + "h", header[12:14])[0]
            ndim = struct.unpack(order + "q", header[16:24])[0]
            dims = struct.unpack(order + "7q", header[24:80])
            offset = struct.unpack(order + "q", header[168:176])[0]
            break
    else:
        return None
    if code not in _NIFTI_FLOAT_TYPES or not 1 <= ndim <= 7 or min(dims[:ndim]) < 1:
        return None
    return np.dtype(order + _NIFTI_FLOAT_TYPES[code]), max(offset, 0), math.prod(dims[:ndim])


def _scan_non_finite(stream, dtype: np.dtype, count: int) -> np.ndarray | None:
    """Read ``count`` voxels of ``dtype`` in chunks; codes of the non-finite ones, or ``None``."""
    codes = None
    per_chunk = max(1, _SCAN_CHUNK_BYTES // dtype.itemsize)
    for start in range(0, count, per_chunk):
        want = min(per_chunk, count - start)
        data = stream.read(want * dtype.itemsize)
        values = np.frombuffer(data[:len(data) - len(data) % dtype.itemsize], dtype)
        bad = ~np.isfinite(values)
        if bad.any():
            codes = np.zeros(count, np.int8) if codes is None else codes
            window = codes[start:start + len(values)]
            window[np.isnan(values)] = _NAN
            window[np.isposinf(values)] = _POS_INF
            window[np.isneginf(values)] = _NEG_INF
        if len(values) < want:
            break  # short data: the declared-size checks and ITK report it
    return codes


def _restore_non_finite(image: sitk.Image, codes: np.ndarray) -> sitk.Image:
    """Put back the NaN/inf values ITK replaced (``codes`` from :func:`_nifti_non_finite`)."""
    array = sitk.GetArrayFromImage(image)
    if array.size != codes.size or not np.issubdtype(array.dtype, np.floating):
        return image  # a layout this scan does not cover (e.g. vector data): left as read
    flat = array.reshape(-1)
    flat[codes == _NAN] = np.nan
    flat[codes == _POS_INF] = np.inf
    flat[codes == _NEG_INF] = -np.inf
    restored = sitk.GetImageFromArray(array, isVector=image.GetNumberOfComponentsPerPixel() > 1)
    restored.CopyInformation(image)
    return restored


def _check_gzip_complete(path: Path) -> None:
    """ITK fills a truncated gzip's missing voxels silently; decompress once to catch that."""
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 24):
                pass
    except (EOFError, OSError, zlib.error) as error:
        raise InputError(f"{path.name}: compressed data is truncated or corrupt "
                         f"({error})") from None


def _check_header_before_itk(path: Path) -> None:
    """Header values ITK's readers cannot survive, refused before ITK reads the header (found by
    fuzzing): a MetaImage ``NDims`` outside 1-5 crashes the process, a NIfTI orientation with
    infinite or astronomically large values makes the reader hang."""
    lower = path.name.lower()
    if lower.endswith((".nii", ".nii.gz")):
        _check_nifti_header(path)
    elif lower.endswith((".mha", ".mhd")):
        with open(path, "rb") as stream:
            head = stream.read(1 << 16).decode("latin-1")
        for value in re.findall(r"^\s*NDims\s*=\s*(\S*)", head, re.M):
            if value not in ("1", "2", "3", "4", "5"):
                raise InputError(f"{path.name}: header NDims = {value}; expected 1 to 5")


# NIfTI-1: ``sizeof_hdr`` 348, float32 fields; NIfTI-2: 540, float64. Byte offsets of pixdim
# (8 values) and of quatern_b..qoffset_z + srow_x/y/z (18 values, contiguous).
_NIFTI_LAYOUTS = {348: ("f", 76, 256), 540: ("d", 104, 352)}
# Larger than any scanner's coordinates (mm): ITK hangs on values near 1e16.
_MAX_NIFTI_GEOMETRY = 1e7


def _check_nifti_header(path: Path) -> None:
    """Voxel size and orientation from the header. ITK replaces a zero voxel size by 1 mm
    (refuse instead) and hangs on infinite orientation values."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as stream:
            header = stream.read(540)
    except (EOFError, OSError, zlib.error):
        return  # not readable as (compressed) NIfTI: the gzip check or ITK reports it
    for order in "<>":
        if len(header) < 348:
            return
        size = struct.unpack(order + "i", header[:4])[0]
        if size in _NIFTI_LAYOUTS and len(header) >= size:
            kind, pixdim_at, geometry_at = _NIFTI_LAYOUTS[size]
            break
    else:
        return  # not a NIfTI header: ITK reports the problem when it reads the file
    width = struct.calcsize(kind)
    pixdim = struct.unpack(order + "8" + kind, header[pixdim_at:pixdim_at + 8 * width])[1:4]
    if not min(pixdim) > 0:
        raise InputError(f"{path.name}: header voxel spacing (pixdim) {list(pixdim)} mm; expected "
                         "positive values")
    geometry = np.array(struct.unpack(order + "18" + kind,
                                      header[geometry_at:geometry_at + 18 * width]))
    if not (np.all(np.isfinite(geometry)) and np.all(np.abs(geometry) < _MAX_NIFTI_GEOMETRY)
            and np.all(np.isfinite(pixdim)) and max(pixdim) < _MAX_NIFTI_GEOMETRY):
        raise InputError(f"{path.name}: header orientation (quatern/srow) or spacing holds "
                         "infinite or impossibly large values")


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


def _read_dicom_folder(folder: Path, notes: list[str],
                       check_grid: GridCheck | None = None) -> sitk.Image:
    try:
        empty = not any(folder.iterdir())
    except OSError as error:
        raise InputError(f"{folder.name}: folder cannot be listed ({error.strerror})") from None
    if empty:
        raise InputError(f"{folder.name}: folder is empty; expected a DICOM series")
    series = dicom_series_ids(folder)
    if not series:
        raise InputError(f"{folder.name}: no DICOM series found in this folder")
    with _itk_warnings_off():
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
        with _itk_warnings_off():
            image = reader.Execute()
    except RuntimeError as error:
        raise InputError(f"{folder.name}: DICOM series cannot be read, a slice may be corrupt "
                         f"({_itk_reason(error)})") from None
    _check_slice_positions(folder, image, reader)
    return image


def _dicom_header(file_name: str) -> dict | None:
    """What choosing a series needs from one file's header; ``None`` if it is unreadable."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(file_name)
    try:
        with _itk_warnings_off():
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
            "voxel_bytes": _bytes_per_voxel(reader.GetPixelID(), reader.GetNumberOfComponents())}


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
        return float(fallback_mm)
    along = np.sort(np.array(positions) @ normal)
    gaps = np.diff(along)
    return float(np.median(gaps)) if np.median(gaps) > 0 else float(fallback_mm)


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


def as_image(image, spacing_mm=None, origin=None, direction=None,
             notes: list[str] | None = None, single_slice: bool = False,
             check_grid: GridCheck | None = None) -> sitk.Image:
    """Any accepted input → checked float32 3-D scalar ``SimpleITK.Image``.

    ``image``: a path (file or DICOM folder), a ``SimpleITK.Image``, or a numpy array with axes
    ``(z, y, x)``. Geometry arguments (SimpleITK order: ``spacing_mm`` (x, y, z), ``origin`` mm,
    ``direction`` 9 cosines) apply to arrays only; an array without ``spacing_mm`` is refused,
    since a guessed spacing would silently give wrong volumes. ``notes`` receives remarks for the
    user (series chosen, small field of view, non-finite voxels replaced); ``check_grid`` is called
    with the size and spacing before a file's voxels are read (see :func:`read_image`) and with an
    array's or image's.

    ``single_slice`` (for models whose stages are 2-D): one axial slice is accepted too, as a
    2-D image/file, a ``(y, x)`` array with ``spacing_mm`` (x, y), or a volume one slice thick;
    it becomes a 3-D image one slice thick (z spacing 1 mm when it had none).
    """
    grid_checked = False
    if isinstance(image, np.ndarray):
        name = "input array"
        if single_slice and image.ndim == 2:
            image = image[None]
            spacing_mm = None if spacing_mm is None else [*list(spacing_mm)[:2], 1.0]
        image = _array_to_image(image, spacing_mm, origin, direction)
    else:
        if spacing_mm is not None or origin is not None or direction is not None:
            raise ValueError("spacing_mm/origin/direction apply to numpy arrays only")
        if isinstance(image, sitk.Image):
            name = "input image"
        elif isinstance(image, (str, Path)):
            name = Path(image).name
            image = read_image(image, notes, check_grid)
            grid_checked = image.GetDimension() >= 3  # from the header, by read_image
        else:
            raise InputError(f"unsupported input type {type(image).__name__}; expected a path, "
                             "a SimpleITK.Image or a numpy array")
    image = _squeeze_trailing_time(image)
    if single_slice and image.GetDimension() == 2:
        image = sitk.JoinSeries(image)  # (x, y) -> (x, y, 1)
    _check_image(image, name, single_slice)
    if check_grid is not None and not grid_checked:
        check_grid(tuple(image.GetSize()), tuple(image.GetSpacing()), name)
    image, replaced = replace_non_finite(sitk.Cast(image, sitk.sitkFloat32), name)
    _check_not_constant(image, name)
    if notes is not None:
        notes += replaced + _field_of_view_notes(image, name)
    return image


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


def _is_axial_slice(image: sitk.Image, thin_axes: list[int]) -> bool:
    """One voxel thick along the axis that points (mostly) head to foot, and only that one."""
    if len(thin_axes) != 1:
        return False
    cosines = np.array(image.GetDirection()).reshape(3, 3)
    return int(np.argmax(np.abs(cosines[2]))) == thin_axes[0]  # row 2: S component of each axis


def _squeeze_trailing_time(image: sitk.Image) -> sitk.Image:
    """A 4-D image with a single time point is a 3-D volume (some NIfTI writers add the axis)."""
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        return sitk.Extract(image, [*image.GetSize()[:3], 0], [0, 0, 0, 0])
    return image


def _check_image(image: sitk.Image, name: str, single_slice: bool = False) -> None:
    if image.GetPixelID() in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        raise InputError(f"{name}: has complex voxel values; expected a real-valued CT volume")
    if image.GetNumberOfComponentsPerPixel() > 1:
        raise InputError(f"{name}: has {image.GetNumberOfComponentsPerPixel()} components per "
                         "voxel (vector/RGB); expected a scalar CT volume")
    if image.GetDimension() != 3:
        raise InputError(f"{name}: is {image.GetDimension()}-D {list(image.GetSize())}; expected a "
                         "3-D CT volume")
    thin_axes = [axis for axis, size in enumerate(image.GetSize()) if size < 2]
    if thin_axes and not (single_slice and _is_axial_slice(image, thin_axes)):
        raise InputError(f"{name}: size {list(image.GetSize())} has a single slice along an axis; "
                         "expected a 3-D CT volume" + (" or one axial slice" if single_slice
                                                       else ""))
    check_spacing(image.GetSpacing(), name)
    cosines = np.array(image.GetDirection()).reshape(3, 3)
    if not np.allclose(cosines.T @ cosines, np.eye(3), atol=DIRECTION_TOLERANCE):
        raise InputError(f"{name}: direction cosines {np.round(cosines, 4).tolist()} are not "
                         "orthonormal (a sheared grid); expected an orthogonal voxel grid")


def replace_non_finite(image: sitk.Image, name: str) -> tuple[sitk.Image, list[str]]:
    """NaN/inf voxels of a float32 3-D image → ``OUTSIDE_SCAN_HU``, with a note saying how
    many of each kind on which slices (array index k, the image's third axis); an image with no
    finite voxel is refused."""
    values = sitk.GetArrayViewFromImage(image)
    # min/max propagate NaN, so two reductions find NaN/inf without a full-size mask.
    if np.isfinite(np.min(values)) and np.isfinite(np.max(values)):
        return image, []
    array = sitk.GetArrayFromImage(image)
    bad = ~np.isfinite(array)
    total = int(np.count_nonzero(bad))
    if total == array.size:
        raise InputError(f"{name}: every voxel is NaN or infinite; expected a CT volume")
    kinds = {"NaN": int(np.count_nonzero(np.isnan(array))),
             "+inf": int(np.count_nonzero(np.isposinf(array))),
             "-inf": int(np.count_nonzero(np.isneginf(array)))}
    slices = np.flatnonzero(bad.any(axis=(1, 2)))
    array[bad] = OUTSIDE_SCAN_HU
    fixed = sitk.GetImageFromArray(array)
    fixed.CopyInformation(image)
    what = ", ".join(f"{kind} {count}" for kind, count in kinds.items() if count)
    note = (f"{name}: {total} voxel(s) are not finite numbers ({what}) on {len(slices)} of "
            f"{array.shape[0]} slice(s) (index k = {_index_ranges(slices)}); they were set to "
            f"{OUTSIDE_SCAN_HU:.0f} HU (air) before segmenting, results there are unreliable")
    return fixed, [note]


def _index_ranges(indices: np.ndarray, most: int = 8) -> str:
    """[0, 1, 2, 5, 7, 8] → "0-2, 5, 7-8" (at most ``most`` runs, then "...")."""
    runs: list[list[int]] = []
    for index in (int(i) for i in indices):
        if runs and index == runs[-1][1] + 1:
            runs[-1][1] = index
        else:
            runs.append([index, index])
    text = [f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:most]]
    return ", ".join(text) + (", ..." if len(runs) > most else "")


def _check_not_constant(image: sitk.Image, name: str) -> None:
    values = sitk.GetArrayViewFromImage(image)
    low, high = float(np.min(values)), float(np.max(values))
    if low == high:
        raise InputError(f"{name}: every voxel has the value {low:g}; expected a CT volume")


def _field_of_view_notes(image: sitk.Image, name: str) -> list[str]:
    """A warning when the scan is too small along some axis to contain a whole pancreas."""
    extent_mm = np.array(image.GetSize()) * np.array(image.GetSpacing())
    if extent_mm.min() >= SMALL_FOV_MM:
        return []
    return [f"{name}: field of view {' x '.join(f'{e:.0f}' for e in extent_mm)} mm is smaller "
            f"than {SMALL_FOV_MM:.0f} mm along an axis; a whole pancreas cannot fit in it, results "
            "are unreliable"]


def check_ct_intensities(image: sitk.Image) -> list[str]:
    """Warnings when the values do not look like CT Hounsfield units (e.g. MR, 0..1, raw counts,
    values scaled by a factor).

    A torso CT contains air (about -1000 HU) outside the body and in the bowel, and nothing denser
    than bone (below :data:`MAX_TISSUE_HU`): a darkest percentile far above air, a brightest far
    above bone, or a bulk darker than air (:data:`MIN_CT_HU`) means the values are not HU and the
    model's intensity window is meaningless. A minimum shared by many voxels below air is padding
    outside the field of view (e.g. -3024) and is left out first.
    """
    values = np.asarray(sitk.GetArrayViewFromImage(image)).ravel()
    lowest = float(values.min())
    if lowest < AIR_HU - 100 and (np.count_nonzero(values == lowest)
                                  >= PADDING_FRACTION * values.size):
        values = values[values > lowest]
        if values.size == 0:
            return []
    low_hu, mid_hu, high_hu = (float(v) for v in np.percentile(values, [1, 50, 99]))
    spread = f"1st/50th/99th percentile {low_hu:.0f}/{mid_hu:.0f}/{high_hu:.0f}"
    warnings = []
    if low_hu > AIR_HU + 500:
        warnings.append(f"intensities are not like CT in Hounsfield units: {spread}, no air near "
                        f"{AIR_HU:.0f} HU (MR, rescaled image, or stored values without the "
                        "rescale intercept?); results are unreliable")
    elif high_hu - low_hu < 200:
        warnings.append(f"intensity range is narrow for CT: {spread} HU; results are unreliable")
    outside = []
    if low_hu < MIN_CT_HU or mid_hu < AIR_HU - 100:
        outside.append(f"darker than air ({AIR_HU:.0f} HU)")
    if high_hu > MAX_TISSUE_HU:
        outside.append(f"brighter than any tissue (above {MAX_TISSUE_HU:.0f} HU)")
    if outside:
        warnings.append(f"intensities far outside CT's range: {spread} HU is "
                        f"{' and '.join(outside)} (values scaled by a factor, or not in HU?); "
                        "results are unreliable")
    return warnings
