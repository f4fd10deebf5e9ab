"""The batch summary: one row per case, the cases a person must look at first.

A run over several cases (``segment`` given a folder or several inputs; the Slicer module's
``segmentFiles``) writes ``summary.csv`` and ``summary.json`` into its output folder; a run that is
one part of ``--num-parts N`` writes ``summary-part-I-of-N.csv``/``.json`` instead (parts may run
at once in one folder), and ``pancreas-ssl-seg summary OUTDIR`` (:func:`folder_rows`) builds
``summary.csv``/``.json`` from every ``<case>_report.json`` in the folder, merging the parts.

A row (:data:`COLUMNS`) holds the run status (``ok``, ``error``, ``skipped``: finished by an
earlier run, read from its report), the quality verdict (status, score, reasons), the pancreas
volume, the lesion count, total volume and largest diameter, the error message of a failed case,
the input and the output files (names in the summary's folder). Rows are sorted by
:func:`sort_rows`: run errors, then verdicts ``failed``, ``check``, none (a report from an engine
before the verdict), ``ok``; within each by ascending score, then by case name. Both files are
written under temporary names and renamed into place, so a reader never sees half a summary.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .case_files import DICOM_SEG_KEY, OUTPUT_SUFFIXES, output_paths
from .display import QUALITY_STATUSES
from .errors import InputError
from .temporaries import is_temporary, remove_stale, temporary_path, writer_token

SUMMARY_STEM = "summary"
REPORT_SUFFIX = OUTPUT_SUFFIXES["report"]
RUN_STATUSES = ("ok", "error", "skipped")
# Output files, most useful first: a case's files (case_files) and its DICOM SEG.
OUTPUT_KEYS = ("report", "preview", "segmentation", "labels", "uncertainty", "regions",
               DICOM_SEG_KEY)
COLUMNS = ("case", "run_status", "quality_status", "quality_score", "quality_reasons",
           "pancreas_volume_ml", "lesion_count", "lesion_total_volume_ml",
           "largest_lesion_diameter_mm", "message", "input",
           *(f"{key}_file" for key in OUTPUT_KEYS))
ORDER = ("run errors first, then quality failed, check, no verdict, ok; within each by "
         "ascending score, then case name")
# Sort rank of a row: run error, then the verdict's status (None: the report has no verdict).
_RANK = {"error": 0, "failed": 1, "check": 2, None: 3, "ok": 4}


def summary_stem(num_parts: int = 1, part_id: int = 0) -> str:
    """``summary``, or ``summary-part-I-of-N`` for one part of a ``--num-parts`` run."""
    return SUMMARY_STEM if num_parts <= 1 else f"{SUMMARY_STEM}-part-{part_id}-of-{num_parts}"


def report_path(out_dir: str | Path, case: str) -> Path:
    return output_paths(out_dir, case)["report"]


def _rounded(value: Any, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


def report_row(report: dict[str, Any], case: str, run_status: str = "ok") -> dict[str, Any]:
    """The row of a case from its report (a dict as in ``<case>_report.json``). Missing parts
    (a report from an older engine) stay empty."""
    quality = report.get("quality") or {}
    pancreas = report.get("pancreas") or {}
    lesions = report.get("lesions") or {}
    files = {key: str(record["file"]) for key, record in (report.get("outputs") or {}).items()
             if isinstance(record, dict) and "file" in record}
    files["report"] = f"{case}{REPORT_SUFFIX}"
    return {
        "case": case, "run_status": run_status,
        "quality_status": quality.get("status"),
        "quality_score": _rounded(quality.get("score"), 4),
        "quality_reasons": [str(reason) for reason in quality.get("reasons") or []],
        "pancreas_volume_ml": _rounded(pancreas.get("volume_ml"), 3),
        "lesion_count": lesions.get("count"),
        "lesion_total_volume_ml": _rounded(lesions.get("total_volume_ml"), 3),
        "largest_lesion_diameter_mm": _rounded(lesions.get("largest_diameter_mm"), 2),
        "message": None,
        "input": (report.get("input") or {}).get("path"),
        "outputs": {key: files[key] for key in (*OUTPUT_KEYS, *sorted(files)) if key in files},
    }


def error_row(case: str, message: str, input_path: str | Path | None = None) -> dict[str, Any]:
    """The row of a case that failed: no figures, the error message."""
    return {"case": case, "run_status": "error", "quality_status": None, "quality_score": None,
            "quality_reasons": [], "pancreas_volume_ml": None, "lesion_count": None,
            "lesion_total_volume_ml": None, "largest_lesion_diameter_mm": None,
            "message": message, "input": None if input_path is None else str(input_path),
            "outputs": {}}


def read_row(out_dir: str | Path, case: str, run_status: str = "ok") -> dict[str, Any]:
    """The row of a finished case from ``<case>_report.json`` in ``out_dir`` (an error row
    saying why when the report cannot be read)."""
    path = report_path(out_dir, case)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(report, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as error:
        return error_row(case, f"{path.name}: could not read the report: "
                               f"{getattr(error, 'strerror', None) or error}")
    return report_row(report, case, run_status)


def sort_rows(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cases to check first (see the module docstring)."""
    def key(row: dict[str, Any]) -> tuple:
        rank = _RANK["error"] if row["run_status"] == "error" else _RANK.get(
            row["quality_status"], _RANK[None])
        score = row["quality_score"]
        return (rank, score if score is not None else -1.0, row["case"])

    return sorted(rows, key=key)


def counts(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """``{"cases": n, "run": {ok, error, skipped}, "quality": {ok, check, failed}}``; the
    verdicts of the cases that have outputs (segmented or skipped), those without one uncounted."""
    rows = list(rows)
    done = [row for row in rows if row["run_status"] != "error"]
    return {"cases": len(rows),
            "run": {status: sum(row["run_status"] == status for row in rows)
                    for status in RUN_STATUSES},
            "quality": {status: sum(row["quality_status"] == status for row in done)
                        for status in QUALITY_STATUSES}}


def counts_line(rows: Iterable[dict[str, Any]], summary_file: str | Path | None = None) -> str:
    """One line for people: ``3 cases: 2 segmented, 1 skipped, 0 errors | quality: 1 ok,
    1 check, 0 failed | summary: OUT/summary.csv``."""
    numbers = counts(rows)
    run, quality = numbers["run"], numbers["quality"]
    line = (f"{numbers['cases']} case{'' if numbers['cases'] == 1 else 's'}: "
            f"{run['ok']} segmented, {run['skipped']} skipped, {run['error']} "
            f"error{'' if run['error'] == 1 else 's'} | quality: {quality['ok']} ok, "
            f"{quality['check']} check, {quality['failed']} failed")
    return line + (f" | summary: {summary_file}" if summary_file is not None else "")


def csv_record(row: dict[str, Any]) -> dict[str, Any]:
    """A row as :data:`COLUMNS` values: reasons joined by "; ", one column per output file,
    empty cells for missing values."""
    record = {column: row.get(column) for column in COLUMNS[:11]}
    record["quality_reasons"] = "; ".join(row["quality_reasons"])
    for key in OUTPUT_KEYS:
        record[f"{key}_file"] = row["outputs"].get(key)
    return {column: "" if value is None else value for column, value in record.items()}


def summary_text(rows: list[dict[str, Any]]) -> tuple[str, str]:
    """(CSV text, JSON text) of the sorted ``rows``."""
    rows = sort_rows(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(csv_record(row) for row in rows)
    document = {"counts": counts(rows), "order": ORDER, "columns": list(COLUMNS), "cases": rows}
    return buffer.getvalue(), json.dumps(document, indent=2) + "\n"


def write_summary(out_dir: str | Path, rows: list[dict[str, Any]],
                  stem: str = SUMMARY_STEM) -> dict[str, Path]:
    """Write ``<stem>.csv`` and ``<stem>.json`` into ``out_dir`` (each under a temporary name,
    then renamed over the old one); returns their paths (keys ``csv``, ``json``). Temporaries a
    killed writer left are removed first."""
    out_dir = Path(out_dir)
    texts = dict(zip(("csv", "json"), summary_text(rows)))
    paths = {kind: out_dir / f"{stem}.{kind}" for kind in texts}
    for path in paths.values():
        remove_stale(out_dir, path.name)
    for kind, text in texts.items():
        temporary = temporary_path(paths[kind], writer_token())
        try:
            with open(temporary, "w", encoding="utf-8", newline="") as stream:
                stream.write(text)
            os.replace(temporary, paths[kind])
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
    return paths


def folder_rows(out_dir: str | Path) -> list[dict[str, Any]]:
    """Rows of every case reported in ``out_dir`` (its ``<case>_report.json`` files, run status
    ``ok``), plus the failed cases the folder's summaries (``summary.json``, the parts'
    ``summary-part-*.json``) list and that still have no report: what ``pancreas-ssl-seg summary``
    writes. Raises ``InputError`` when the folder does not exist or names no case."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise InputError(f"{out_dir}: not a folder (expected the output folder of a segment run)")
    rows = [read_row(out_dir, path.name[:-len(REPORT_SUFFIX)])
            for path in sorted(out_dir.glob(f"*{REPORT_SUFFIX}"))
            if not is_temporary(path)]
    reported = {row["case"] for row in rows}
    for path in sorted(out_dir.glob(f"{SUMMARY_STEM}*.json")):
        try:
            listed = json.loads(path.read_text(encoding="utf-8")).get("cases", [])
        except (OSError, ValueError, AttributeError):
            continue  # not one of ours, or unreadable: the reports are the record
        for row in listed:
            if (isinstance(row, dict) and row.get("run_status") == "error"
                    and isinstance(row.get("case"), str) and row["case"] not in reported):
                rows.append(error_row(row["case"], str(row.get("message") or ""),
                                      row.get("input")))
                reported.add(row["case"])
    if not rows:
        raise InputError(f"{out_dir}: no <case>{REPORT_SUFFIX} found (nothing to summarise)")
    return sort_rows(rows)
