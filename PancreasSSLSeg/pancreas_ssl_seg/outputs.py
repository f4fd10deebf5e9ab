"""Write one case's result files, all or nothing.

The six files (names in :func:`output_paths`) are first written under temporary names in the
output folder and renamed only once every one of them was written; on any failure the temporaries
are removed and no new file of this case is left, so a folder never holds a report beside half a
case and :func:`case_is_complete` can drive resuming a batch. The report is the marker that the case
finished: an existing report is removed before the first rename and the new one is renamed last,
and it records the SHA-256 of the five other files (``outputs``), so a killed run never leaves a
report beside files it does not describe.

Several processes may write into one folder at once (two CLI runs, the Slicer module beside a
batch): temporaries are named and cleaned as :mod:`.temporaries` says, and on POSIX the rename step
holds an exclusive ``flock`` on the folder, so one case's six files always come from one writer.

The preview (matplotlib, about half of the writing time) is drawn in a worker thread while this
thread writes the volumes and the Slicer segmentation, whose SimpleITK and zlib work releases the
GIL (measured on the 512x512x224 CT, 1 torch thread: benchmarks/NOTES.md). The report is written
after both, since it records the others' checksums.

When the input was a DICOM series folder, a seventh file ``<case>_seg.dcm`` (DICOM SEG referencing
that series, :mod:`.dicom_seg`) is written with the others and listed in the report's
``outputs``; when the series cannot be referenced (anonymised UIDs, no slice-for-slice match) the
case's report gets a warning instead, and an older ``_seg.dcm`` of the case is removed.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from .case_files import (DICOM_SEG_KEY, dicom_seg_path,
                         output_paths)
from .hashing import sha256_of
from .seg_nrrd import write_seg_nrrd
from .temporaries import remove_stale, temporary_path, writer_token

try:
    import fcntl
except ImportError:  # Windows: no folder lock (see the module docstring)
    fcntl = None

# Written by the worker thread (see the module docstring). The uncertainty volume there too
# measured no faster (2 cores: zlib and matplotlib share them) and 250-300 MB more at the peak.
BESIDE = ("preview",)


def write_case_outputs(result, out_dir: str | Path, case: str,
                       dicom_folder: str | Path | None = None) -> dict[str, Path]:
    """Write ``result``'s six files for ``case`` into ``out_dir``; returns their paths.

    ``result`` is a ``SegmentationResult`` (``labels``, ``uncertainty``, ``regions`` arrays on the
    input grid, ``report`` dict, ``image``, ``to_sitk``). Existing files of the case are replaced.
    ``dicom_folder``: the DICOM series the result was read from; adds ``<case>_seg.dcm`` (key
    ``dicom_seg``), or, when it cannot be made, a warning in ``result.report["warnings"]``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = output_paths(out_dir, case)
    segmentation = _dicom_seg(result, dicom_folder) if dicom_folder is not None else None
    if segmentation is not None:  # before the report, which is renamed last
        final = {DICOM_SEG_KEY: dicom_seg_path(out_dir, case), **final}
    _remove_stale_temporaries({**final, DICOM_SEG_KEY: dicom_seg_path(out_dir, case)})
    token = writer_token()
    # The temporary name keeps the real suffix: the writers pick the format from it.
    temporary = {key: temporary_path(path, token) for key, path in final.items()}
    writers = {
        "labels": lambda path: _write_volume(result, result.labels, sitk.sitkUInt8, path),
        "uncertainty": lambda path: _write_volume(result, result.uncertainty, sitk.sitkFloat32,
                                                  path, own_gzip=True),
        "regions": lambda path: _write_volume(result, result.regions, sitk.sitkInt32, path),
        "segmentation": lambda path: write_seg_nrrd(result, path),
        "preview": lambda path: _write_preview(result, path),
        DICOM_SEG_KEY: lambda path: segmentation.save_as(str(path)),
        "report": lambda path: _write_report(
            {**result.report, "outputs": _file_records(temporary, final)}, path),
    }
    try:
        # Leaving the ``with`` waits for the preview, also when a writer here failed: no
        # temporary can appear after the clean-up below.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="preview") as pool:
            beside = pool.submit(lambda: [writers[key](temporary[key]) for key in BESIDE])
            for key, path in temporary.items():
                if key not in BESIDE and key != "report":
                    writers[key](path)
            beside.result()
        writers["report"](temporary["report"])
        with _folder_lock(out_dir):
            _rename_into_place(temporary, final)
            if segmentation is None:  # an older run's SEG would not match the new labels
                dicom_seg_path(out_dir, case).unlink(missing_ok=True)
    except BaseException:
        for path in temporary.values():
            path.unlink(missing_ok=True)
        raise
    return final


def _dicom_seg(result, folder: str | Path):
    """The DICOM SEG of ``result`` (a highdicom ``Segmentation``), or ``None`` with a warning
    appended to ``result.report["warnings"]``."""
    from .dicom_seg import DicomSegUnavailable, build_dicom_seg

    try:
        return build_dicom_seg(result, folder)
    except DicomSegUnavailable as error:  # incl. highdicom missing from this Python
        result.report.setdefault("warnings", []).append(f"DICOM SEG not written: {error}")
        return None


def _rename_into_place(temporary: dict[str, Path], final: dict[str, Path]) -> None:
    """Old report out, files in (report last); a failed rename takes back the ones it made.
    Runs under the folder lock, so the take-back cannot remove another writer's files."""
    final["report"].unlink(missing_ok=True)
    renamed: list[Path] = []
    try:
        for key, path in temporary.items():
            os.replace(path, final[key])
            renamed.append(final[key])
    except BaseException:
        for path in renamed:
            path.unlink(missing_ok=True)
        raise


def _remove_stale_temporaries(final: dict[str, Path]) -> None:
    """Temporaries of these files that a killed run left behind, the uncompressed NIfTI beside a
    ``.nii.gz`` (``_gzip_nifti``) included."""
    for path in final.values():
        names = [path.name] + ([_raw_name(path.name)] if path.name.endswith(".nii.gz") else [])
        for name in names:
            remove_stale(path.parent, name)


@contextmanager
def _folder_lock(out_dir: Path) -> Iterator[None]:
    """Exclusive lock on ``out_dir`` while one writer renames its files (POSIX ``flock`` on the
    folder itself: no lock file is left behind)."""
    if fcntl is None:
        yield
        return
    descriptor = os.open(out_dir, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def _file_records(temporary: dict[str, Path], final: dict[str, Path]) -> dict[str, dict]:
    """Final file name and SHA-256 of every output but the report (written before it)."""
    return {key: {"file": final[key].name, "sha256": sha256_of(path)}
            for key, path in temporary.items() if key != "report"}


# Voxel types of the volumes written, as numpy types: converting the array before making the image
# saves ``sitk.Cast``'s full-size copy (235 MB for a float32 512x512x224 grid), even to the same
# type.
_NUMPY_TYPES = {sitk.sitkUInt8: np.uint8, sitk.sitkInt32: np.int32, sitk.sitkFloat32: np.float32}


def _write_volume(result, array: np.ndarray, pixel_type: int, path: Path,
                  own_gzip: bool = False) -> None:
    """gzip NIfTI; ITK's NIfTI writer ignores the compression level (same bytes at 1, 6 and 9).
    ``own_gzip``: ITK writes the NIfTI uncompressed and :func:`_gzip_nifti` compresses it."""
    if pixel_type in _NUMPY_TYPES:
        image = result.to_sitk(np.asarray(array, _NUMPY_TYPES[pixel_type]))
    else:
        image = sitk.Cast(result.to_sitk(np.asarray(array)), pixel_type)
    if own_gzip:
        _gzip_nifti(image, path)
    else:
        sitk.WriteImage(image, str(path), useCompression=True)


# The uncertainty volume: float32 values that are almost all different (the coarse stage's
# uncertainty fills the scan), which deflate shrinks by ~10 % at ~22 MB/s on this project's 2-core
# CPU: ITK's writer took 10.2 s for the 512x512x224 CT's 235 MB (211 MB written). Stored deflate
# blocks write the same NIfTI bytes in ~1 s as a 235 MB file (benchmarks/NOTES.md). Volumes that
# do compress (no uncertainty, small boxes) keep zlib's default level.
# Stored blocks when level-1 samples shrink to more than this (the clinical CT's: 0.78, its last
# slices are air; no uncertainty: 0.001); below it the file would grow 2x or more if stored.
GZIP_STORE_ABOVE_RATIO = 0.5
GZIP_SAMPLES, GZIP_SAMPLE_BYTES, GZIP_CHUNK_BYTES = 16, 1 << 18, 1 << 24


def _raw_name(name: str) -> str:
    """The uncompressed NIfTI written beside a ``.nii.gz`` temporary (see ``_gzip_nifti``)."""
    return name.removesuffix(".gz")


def _gzip_level(path: Path) -> int:
    """0 (stored) when samples of ``path`` compress poorly at level 1, else zlib's default."""
    size = path.stat().st_size
    raw = packed = 0
    with open(path, "rb") as source:
        for k in range(GZIP_SAMPLES):
            source.seek(k * max(0, size - GZIP_SAMPLE_BYTES) // max(1, GZIP_SAMPLES - 1))
            sample = source.read(GZIP_SAMPLE_BYTES)
            raw, packed = raw + len(sample), packed + len(zlib.compress(sample, 1))
    return 0 if packed > GZIP_STORE_ABOVE_RATIO * raw else zlib.Z_DEFAULT_COMPRESSION


def _gzip_nifti(image: sitk.Image, path: Path) -> None:
    """``image`` as ``path`` (.nii.gz): ITK's uncompressed NIfTI bytes in one gzip member at
    :func:`_gzip_level`'s level (zlib releases the GIL, so the preview thread keeps drawing).
    The uncompressed file is a temporary of this writer (removed here, or as stale)."""
    raw = path.with_name(_raw_name(path.name))
    try:
        sitk.WriteImage(image, str(raw), useCompression=False)
        compressor = zlib.compressobj(_gzip_level(raw), zlib.DEFLATED, 31)  # 31: gzip header
        with open(raw, "rb") as source, open(path, "wb") as target:
            while chunk := source.read(GZIP_CHUNK_BYTES):
                target.write(compressor.compress(chunk))
            target.write(compressor.flush())
    finally:
        raw.unlink(missing_ok=True)


def _write_preview(result, path: Path) -> None:
    from .preview import write_preview  # imports matplotlib: only when a preview is written

    write_preview(result, path)


def _write_report(report: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(report, indent=2, default=_json_value) + "\n", encoding="utf-8")


def _json_value(value: Any) -> Any:
    """numpy scalars/arrays and paths in the report → plain JSON values."""
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"report value of type {type(value).__name__} is not JSON serialisable")
