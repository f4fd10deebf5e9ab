"""The corrections folder: cases a reviewer corrected, written by the Slicer module (or any caller
of the engine), read by the training package for fine-tuning. The one writer of this layout; it
needs only numpy and SimpleITK (no torch, no training package), so a stock Slicer writes exactly
what a developer install writes.

Layout, one folder per case::

    <root>/<case>/image.nii.gz      the CT (HU) as reviewed
    <root>/<case>/labels.nii.gz     uint8 on the image grid: 0 background, 1 pancreas, 2 lesion
    <root>/<case>/correction.json   {"case", "model": {"name", "version"}, "edited_segments": [...],
                                     "date": ISO-8601, "source": "corrections"}

Checks before anything is written (``InputError`` naming ``<root>/<case>`` and the problem): a
folder-safe case name (``case_names.check_case_name``), a 3-D scalar image, labels on the image's
exact grid (size, spacing, origin, direction) holding only whole values 0, 1, 2.

Atomic: the three files are written into ``<root>/.<case>.partial-<pid>-<token>`` and that folder
is renamed into place; a case being replaced is first renamed to ``.<case>.replaced-<pid>-<token>``
and removed after. Readers skip names starting with ".", so they see the old complete case or
the new one, never part of one. A writer killed between the two renames leaves the old case under
its ``.replaced`` name; the next write of that case puts it back first (when no new case took its
place) and removes leftovers of writers that are gone.
"""

from __future__ import annotations

import datetime
import json
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .case_names import check_case_name
from .errors import InputError
from .labels import LABEL_VALUES, LABEL_VALUES_TEXT
from .temporaries import process_is_running, writer_token

SOURCE = "corrections"
IMAGE_FILE, LABELS_FILE, RECORD_FILE = "image.nii.gz", "labels.nii.gz", "correction.json"
CASE_FILES = (IMAGE_FILE, LABELS_FILE, RECORD_FILE)
RECORD_KEYS = ("case", "model", "edited_segments", "date", "source")
_TEMPORARY = re.compile(r"^\.(?P<case>.+)\.(?P<kind>partial|replaced)-(?P<pid>\d+)-[0-9a-f]+$")
# Same tolerances as a DICOM/NIfTI round trip of the same grid.
SPACING_TOLERANCE_MM, ORIGIN_TOLERANCE_MM, DIRECTION_TOLERANCE = 1e-4, 1e-3, 1e-5


def same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (a.GetSize() == b.GetSize()
            and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=SPACING_TOLERANCE_MM)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=ORIGIN_TOLERANCE_MM)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=DIRECTION_TOLERANCE))


def _check_case(where: str, image: sitk.Image, labels: sitk.Image) -> sitk.Image:
    """The labels as uint8, after every check of the module docstring."""
    for what, volume in (("image", image), ("labels", labels)):
        if not isinstance(volume, sitk.Image):
            raise InputError(f"{where}: {what} is a {type(volume).__name__}; expected a "
                             "SimpleITK.Image")
        if volume.GetDimension() != 3 or volume.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(f"{where}: {what} is {volume.GetDimension()}-D with "
                             f"{volume.GetNumberOfComponentsPerPixel()} component(s); expected a "
                             "3-D scalar volume")
    if not same_grid(image, labels):
        raise InputError(
            f"{where}: labels are not on the image grid (image size {list(image.GetSize())}, "
            f"spacing {np.round(image.GetSpacing(), 4).tolist()}, origin "
            f"{np.round(image.GetOrigin(), 3).tolist()}; labels size {list(labels.GetSize())}, "
            f"spacing {np.round(labels.GetSpacing(), 4).tolist()}, origin "
            f"{np.round(labels.GetOrigin(), 3).tolist()}); expected the same grid")
    values = sitk.GetArrayViewFromImage(labels)
    found = np.unique(values)
    unexpected = [v for v in found.tolist() if v not in LABEL_VALUES]
    if unexpected:
        shown = ", ".join(f"{v:g}" for v in unexpected[:5]) + (", ..." if len(unexpected) > 5
                                                               else "")
        raise InputError(f"{where}: labels hold the value(s) {shown}; expected only "
                         f"{LABEL_VALUES_TEXT}")
    return sitk.Cast(labels, sitk.sitkUInt8)


def write_correction_case(root: str | Path, case: str, image: sitk.Image, labels: sitk.Image,
                          model_name: str, model_version: str,
                          edited_segments: Sequence[str],
                          date: datetime.datetime | None = None) -> Path:
    """Write (or replace) ``<root>/<case>/`` atomically; returns that folder."""
    check_case_name(case)
    root = Path(root)
    target = root / case
    labels = _check_case(str(target), image, labels)
    date = date or datetime.datetime.now(datetime.timezone.utc)
    record = {"case": case, "model": {"name": str(model_name), "version": str(model_version)},
              "edited_segments": [str(s) for s in edited_segments], "date": date.isoformat(),
              "source": SOURCE}
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"{root}: cannot create the corrections folder "
                         f"({error.strerror or error})") from None
    _clean_up_after_dead_writers(root, case)
    token = writer_token()
    staging = root / f".{case}.partial-{token}"
    replaced = root / f".{case}.replaced-{token}"
    try:
        staging.mkdir()
        sitk.WriteImage(image, str(staging / IMAGE_FILE), useCompression=True)
        sitk.WriteImage(labels, str(staging / LABELS_FILE), useCompression=True)
        (staging / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if target.exists():
            target.rename(replaced)
        try:
            staging.rename(target)
        except BaseException:
            if replaced.exists() and not target.exists():
                replaced.rename(target)  # put the old case back
            raise
    except (OSError, RuntimeError) as error:  # full disk, read-only folder; ITK says RuntimeError
        reason = error.strerror if isinstance(error, OSError) and error.strerror else (
            str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__)
        kept = ", the previous one is unchanged" if target.exists() else ""
        failure = OSError(f"{target}: could not write the corrected case ({reason}); nothing of "
                          f"it was kept{kept}")
        failure.errno = getattr(error, "errno", None)
        raise failure from None
    finally:
        for leftover in (staging, replaced):
            if leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
    return target


def _clean_up_after_dead_writers(root: Path, case: str) -> None:
    """Temporaries of this case left by writers that are gone: a ``.replaced`` copy is put back
    when the case folder is missing (the writer died between its two renames), the rest
    removed."""
    for path in sorted(root.iterdir()):
        match = _TEMPORARY.match(path.name)
        if match is None or match["case"] != case or process_is_running(int(match["pid"])):
            continue
        target = root / case
        if match["kind"] == "replaced" and not target.exists() and all(
                (path / name).is_file() for name in CASE_FILES):
            path.rename(target)
        else:
            shutil.rmtree(path, ignore_errors=True)


def read_correction_record(case_dir: str | Path) -> dict:
    """The validated ``correction.json`` of one case folder."""
    path = Path(case_dir) / RECORD_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: expected a readable JSON correction record ({error})") from None
    if not isinstance(record, dict):
        raise InputError(f"{path}: expected a JSON object, got {type(record).__name__}")
    missing = [key for key in RECORD_KEYS if key not in record]
    if missing or not isinstance(record.get("model"), dict):
        raise InputError(f"{path}: expected keys {list(RECORD_KEYS)} with 'model' an object; "
                         f"missing {missing}")
    try:
        datetime.datetime.fromisoformat(record["date"])
    except (TypeError, ValueError):
        raise InputError(f"{path}: expected an ISO-8601 'date', got {record['date']!r}") from None
    return record
