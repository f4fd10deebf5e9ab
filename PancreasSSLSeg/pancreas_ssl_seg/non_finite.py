"""Non-finite voxels (NaN, +-inf), whatever the input (file, array, SimpleITK image).

A volume with no finite voxel is refused; otherwise they are set to
``hounsfield.OUTSIDE_SCAN_HU`` (air, the value the engine also uses outside the scan) and a note
says how many there were, of which kind, on which slices (:func:`replace_non_finite`). ITK's NIfTI
reader silently turns them into 0 (an HU of water), so float NIfTI data is scanned byte-wise to
find them (:func:`nifti_non_finite`) and they are put back after ITK's read
(:func:`restore_non_finite`).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .nifti_header import NIFTI2_SIZE, parse_nifti_header
from .hounsfield import OUTSIDE_SCAN_HU


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


# NIfTI datatype codes of real floating-point voxels → numpy type (NaN/inf possible).
_NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8"}
_SCAN_CHUNK_BYTES = 1 << 24
# Codes of nifti_non_finite's array: which non-finite value a voxel held.
_NAN, _POS_INF, _NEG_INF = 1, 2, 3


def nifti_non_finite(path: Path) -> np.ndarray | None:
    """Where a float NIfTI's voxels are NaN/+inf/-inf (int8 codes in file order; ``None`` when
    every voxel is finite or the data are not float), read from the bytes because ITK's NIfTI
    reader replaces them with 0 without a word. A ``.nii.gz`` is decompressed to its end, which
    also refuses a truncated or corrupt one (as ``header_guards.check_gzip_complete``)."""
    compressed = path.name.lower().endswith(".gz")
    opener = gzip.open if compressed else open
    try:
        with opener(path, "rb") as stream:
            layout = _nifti_data_layout(stream.read(NIFTI2_SIZE))
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
    parsed = parse_nifti_header(header)
    if parsed is None or parsed.datatype not in _NIFTI_FLOAT_TYPES:
        return None
    count = parsed.voxel_count
    if count is None:
        return None
    dtype = np.dtype(parsed.order + _NIFTI_FLOAT_TYPES[parsed.datatype])
    return dtype, max(parsed.vox_offset, 0), count


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


def restore_non_finite(image: sitk.Image, codes: np.ndarray) -> sitk.Image:
    """Put back the NaN/inf values ITK replaced (``codes`` from :func:`nifti_non_finite`)."""
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
