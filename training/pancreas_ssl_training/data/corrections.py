"""The corrections folder: cases a reviewer corrected in Slicer, read for fine-tuning.

The layout, its checks and its one writer live in the engine (``PancreasSSLSegLib.corrections``:
the Slicer module writes with it, without this package); this module turns the folder into
``VolumeCase`` items. ``write_correction_case`` and ``read_correction_record`` are the engine's,
re-exported here for callers that import them from training.
"""

from __future__ import annotations

from pathlib import Path

from PancreasSSLSegLib.corrections import (CASE_FILES, IMAGE_FILE, LABELS_FILE,  # noqa: F401
                                           RECORD_FILE, RECORD_KEYS, SOURCE,
                                           read_correction_record, write_correction_case)
from PancreasSSLSegLib.errors import InputError

from .volumes import PROJECT_LABELS, VolumeCase


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
