"""The corrections folder: cases a reviewer corrected in Slicer, written by the module, read for
fine-tuning.

Layout, one folder per case::

    <root>/<case>/image.nii.gz      the CT (HU) as reviewed
    <root>/<case>/labels.nii.gz     uint8 on the image grid: 0 background, 1 pancreas, 2 lesion
    <root>/<case>/correction.json   {"case", "model": {"name", "version"}, "edited_segments": [...],
                                     "date": ISO-8601, "source": "corrections"}

``write_correction_case`` writes into a temporary folder and renames it into place, so a reader
never sees half a case.
"""

from __future__ import annotations

import datetime
import json
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from PancreasSSLSegLib.errors import InputError

from .volumes import PROJECT_LABELS, VolumeCase

SOURCE = "corrections"
IMAGE_FILE, LABELS_FILE, RECORD_FILE = "image.nii.gz", "labels.nii.gz", "correction.json"
RECORD_KEYS = ("case", "model", "edited_segments", "date", "source")
# Case names become folder names: no separators, no leading dot.
_SAFE_CASE = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$")


def _check_case_name(case: str) -> str:
    if not _SAFE_CASE.match(case or ""):
        raise InputError(f"correction case name {case!r}: expected letters, digits, '_', '-', '.' "
                         "(it becomes a folder name)")
    return case


def _same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (a.GetSize() == b.GetSize()
            and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-4)
            and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=1e-3)
            and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-5))


def write_correction_case(root: str | Path, case: str, image: sitk.Image, labels: sitk.Image,
                          model_name: str, model_version: str,
                          edited_segments: Sequence[str],
                          date: datetime.datetime | None = None) -> Path:
    """Write (or replace) ``<root>/<case>/``; returns that folder.

    ``labels`` must lie on ``image``'s grid and hold only 0, 1, 2.
    """
    _check_case_name(case)
    if not _same_grid(image, labels):
        raise InputError(f"corrections/{case}: expected labels on the image grid "
                         f"{image.GetSize()}, got {labels.GetSize()}")
    values = set(np.unique(sitk.GetArrayViewFromImage(labels)).tolist())
    if not values <= {0, 1, 2}:
        raise InputError(f"corrections/{case}: expected label values 0, 1, 2, got {sorted(values)}")
    date = date or datetime.datetime.now(datetime.timezone.utc)
    record = {"case": case, "model": {"name": model_name, "version": model_version},
              "edited_segments": list(edited_segments), "date": date.isoformat(),
              "source": SOURCE}

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    target = root / case
    staging = Path(tempfile.mkdtemp(prefix=f".{case}.", dir=root))
    try:
        sitk.WriteImage(image, str(staging / IMAGE_FILE), useCompression=True)
        sitk.WriteImage(sitk.Cast(labels, sitk.sitkUInt8), str(staging / LABELS_FILE),
                        useCompression=True)
        (staging / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def read_correction_record(case_dir: Path) -> dict:
    """The validated ``correction.json`` of one case folder."""
    path = case_dir / RECORD_FILE
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: expected a readable JSON correction record ({error})") from error
    missing = [key for key in RECORD_KEYS if key not in record]
    if missing or not isinstance(record.get("model"), dict):
        raise InputError(f"{path}: expected keys {list(RECORD_KEYS)} with 'model' an object; "
                         f"missing {missing}")
    try:
        datetime.datetime.fromisoformat(record["date"])
    except (TypeError, ValueError) as error:
        raise InputError(f"{path}: expected an ISO-8601 'date', got {record['date']!r}") from error
    return record


def read_corrections(root: str | Path) -> list[VolumeCase]:
    """Every complete case folder under ``root`` (folders starting with '.' are in progress)."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: expected a corrections folder (<case>/image.nii.gz, …)")
    cases = []
    for case_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        record = read_correction_record(case_dir)
        for name in (IMAGE_FILE, LABELS_FILE):
            if not (case_dir / name).is_file():
                raise InputError(f"{case_dir / name}: expected the case's {name}")
        cases.append(VolumeCase(case_dir / IMAGE_FILE, case_dir / LABELS_FILE, record["case"],
                                SOURCE, dict(PROJECT_LABELS)))
    return cases
