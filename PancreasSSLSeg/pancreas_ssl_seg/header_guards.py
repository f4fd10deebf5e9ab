"""Byte-level guards on image files, before or beside ITK's reader.

Some headers ITK cannot survive (found by fuzzing): a MetaImage ``NDims`` outside 1-5 crashes the
process, a NIfTI orientation with infinite or astronomically large values makes the reader hang;
they are refused before ITK reads the header (:func:`check_header_before_itk`). An uncompressed file
must hold every voxel its header declares (:func:`check_declared_data`: ITK fills missing ones
with zeros silently), and a truncated gzip is caught by decompressing it once
(:func:`check_gzip_complete`). NIfTI headers are also read here for what ITK does not say: the
stored data size of scaled data and a missing orientation.
"""

from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .nifti_header import NIFTI1_SIZE, parse_nifti_header, read_nifti_header


def check_header_before_itk(path: Path) -> None:
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


# Larger than any scanner's coordinates (mm): ITK hangs on values near 1e16.
_MAX_NIFTI_GEOMETRY = 1e7


def _check_nifti_header(path: Path) -> None:
    """Voxel size and orientation from the header. ITK replaces a zero voxel size by 1 mm
    (refuse instead) and hangs on infinite orientation values."""
    header = read_nifti_header(path)
    if header is None:
        return  # unreadable or not NIfTI: the gzip check or ITK reports it
    pixdim = header.pixdim
    if not min(pixdim) > 0:
        raise InputError(f"{path.name}: header voxel spacing (pixdim) {list(pixdim)} mm; expected "
                         "positive values")
    geometry = np.array(header.geometry)
    if not (np.all(np.isfinite(geometry)) and np.all(np.abs(geometry) < _MAX_NIFTI_GEOMETRY)
            and np.all(np.isfinite(pixdim)) and max(pixdim) < _MAX_NIFTI_GEOMETRY):
        raise InputError(f"{path.name}: header orientation (quatern/srow) or spacing holds "
                         "infinite or impossibly large values")


def check_declared_data(path: Path, size: tuple[int, ...], data_bytes: int) -> None:
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
        header = parse_nifti_header(head)
        if header is None or header.size != NIFTI1_SIZE:
            return None  # NIfTI-2 or not NIfTI: ITK checks it
        return path.stat().st_size - header.vox_offset
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


def nifti_stored_bytes(path: Path) -> int | None:
    """Bytes of voxel data a NIfTI header declares in its stored type (dims x bitpix)."""
    header = read_nifti_header(path)
    if header is None:
        return None
    count, bitpix = header.voxel_count, header.bitpix
    if count is None or bitpix <= 0 or bitpix % 8:
        return None
    return count * bitpix // 8


def nifti_orientation_notes(path: Path, image: sitk.Image) -> list[str]:
    """A note when a NIfTI header holds no orientation (qform_code = sform_code = 0, as ANALYZE
    conversions write): ITK then assumes an identity direction, and left/right may be swapped."""
    header = read_nifti_header(path)
    if header is None or any(header.orientation_codes):
        return []
    return [f"{path.name}: the NIfTI header holds no orientation (qform_code and sform_code are "
            f"0); read with direction {np.round(image.GetDirection(), 3).tolist()} and origin "
            f"{np.round(image.GetOrigin(), 1).tolist()}: left/right and front/back may be wrong, "
            "check the result's orientation"]


def check_gzip_complete(path: Path) -> None:
    """ITK fills a truncated gzip's missing voxels silently; decompress once to catch that."""
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(1 << 24):
                pass
    except (EOFError, OSError, zlib.error) as error:
        raise InputError(f"{path.name}: compressed data is truncated or corrupt "
                         f"({error})") from None
