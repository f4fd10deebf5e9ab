"""The files of one case in an output folder: their names, and whether the case is finished.

Plain Python (no torch, no ITK): the writer (:mod:`.outputs`), the batch summary, resuming a batch
and the Slicer module all find a case's files here.
"""

from __future__ import annotations

import json
from pathlib import Path

# Suffixes after the case name; the report last (it is written last: see outputs.py).
OUTPUT_SUFFIXES = {
    "labels": "_labels.nii.gz",
    "uncertainty": "_uncertainty.nii.gz",
    "regions": "_regions.nii.gz",
    "segmentation": ".seg.nrrd",
    "preview": "_preview.png",
    "report": "_report.json",
}
# Written only for DICOM series input (outputs.py); not needed for a case to count as finished
# unless its report lists it.
DICOM_SEG_KEY, DICOM_SEG_SUFFIX = "dicom_seg", "_seg.dcm"


def output_paths(out_dir: str | Path, case: str) -> dict[str, Path]:
    """Final path of each output of ``case``, keyed as in :data:`OUTPUT_SUFFIXES`."""
    return {key: Path(out_dir) / f"{case}{suffix}" for key, suffix in OUTPUT_SUFFIXES.items()}


def dicom_seg_path(out_dir: str | Path, case: str) -> Path:
    """Final path of the DICOM SEG of ``case`` (written for DICOM series input only)."""
    return Path(out_dir) / f"{case}{DICOM_SEG_SUFFIX}"


def case_is_complete(out_dir: str | Path, case: str) -> bool:
    """All six outputs of ``case`` exist, and every other file its report lists (the DICOM SEG):
    a finished case, skipped when a batch resumes."""
    paths = output_paths(out_dir, case)
    if not all(path.is_file() for path in paths.values()):
        return False
    try:
        listed = json.loads(paths["report"].read_text(encoding="utf-8")).get("outputs", {})
        names = [record["file"] for record in listed.values()]
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        return False
    return all((Path(out_dir) / Path(str(name)).name).is_file() for name in names)
