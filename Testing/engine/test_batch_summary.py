"""The batch summary (``summary.csv``/``.json``) of the real CLI with the tiny random bundle: one
row per case, run errors first, then quality failed, check, ok, each by ascending score; resumed
(skipped) cases read from their reports; ``--num-parts`` parts write their own summaries, merged
by ``pancreas-ssl-seg summary OUTDIR``; the files are replaced atomically.

Expectations are computed here from the reports the run wrote, not with the summary's own code.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from pancreas_ssl_seg import batch_summary, cli, cli_exit

STATUS_ORDER = {"failed": 1, "check": 2, "ok": 3}
OUTPUT_FILE_COLUMNS = {"report_file": "_report.json", "preview_file": "_preview.png",
                       "segmentation_file": ".seg.nrrd", "labels_file": "_labels.nii.gz",
                       "uncertainty_file": "_uncertainty.nii.gz", "regions_file": "_regions.nii.gz"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Three small abdomen-like volumes (body, fat patch in different places) and a file named
    like an image that is not one."""
    folder = tmp_path_factory.mktemp("cohort")
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:12, :40, :48]
    body = ((y - 20) / 17) ** 2 + ((x - 24) / 21) ** 2 < 1
    for index in range(3):
        hu = np.where(body, 40.0, -1000.0) + rng.normal(0, 20, body.shape)
        hu[body & (((y - 22) / 6) ** 2 + ((x - 18 - 3 * index) / 8) ** 2 < 1)] = -90.0
        image = sitk.GetImageFromArray(hu.astype(np.float32))
        image.SetSpacing((3.0, 3.0, 5.0))
        sitk.WriteImage(image, str(folder / f"case{index}.nii.gz"))
    (folder / "broken.nii.gz").write_text("not an image", encoding="utf-8")
    return folder


def run(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def segment(capsys, given, out_dir: Path, bundle: Path, *extra) -> tuple[int, str, str]:
    given = given if isinstance(given, list) else [given]
    return run(capsys, "segment", *given, "-o", out_dir, "--model", bundle, "--device", "cpu",
               "--fast", *extra)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as stream:
        return list(csv.DictReader(stream))


def report_of(out_dir: Path, case: str) -> dict:
    return json.loads((out_dir / f"{case}_report.json").read_text(encoding="utf-8"))


def expected_order(out_dir: Path, cases: list[str], errors: list[str]) -> list[str]:
    """Run errors, then by the verdict's status (failed, check, ok), then ascending score."""
    def key(case):
        quality = report_of(out_dir, case)["quality"]
        return (STATUS_ORDER[quality["status"]], quality["score"], case)

    return sorted(errors) + sorted(cases, key=key)


def status_counts(out_dir: Path, cases: list[str]) -> dict[str, int]:
    statuses = [report_of(out_dir, case)["quality"]["status"] for case in cases]
    return {status: statuses.count(status) for status in ("ok", "check", "failed")}


def assert_row_matches_report(row: dict[str, str], report: dict) -> None:
    quality, lesions = report["quality"], report["lesions"]
    assert row["quality_status"] == quality["status"]
    assert float(row["quality_score"]) == pytest.approx(quality["score"], abs=1e-4)
    assert row["quality_reasons"] == "; ".join(quality["reasons"])
    assert float(row["pancreas_volume_ml"]) == pytest.approx(report["pancreas"]["volume_ml"],
                                                              abs=1e-3)
    assert int(row["lesion_count"]) == lesions["count"]
    assert float(row["lesion_total_volume_ml"]) == pytest.approx(lesions["total_volume_ml"],
                                                                  abs=1e-3)
    if lesions["largest_diameter_mm"] is None:
        assert row["largest_lesion_diameter_mm"] == ""
    else:
        assert float(row["largest_lesion_diameter_mm"]) == pytest.approx(
            lesions["largest_diameter_mm"], abs=0.01)
    assert row["input"] == report["input"]["path"] and row["message"] == ""
    for column, suffix in OUTPUT_FILE_COLUMNS.items():
        assert row[column] == f"{row['case']}{suffix}", column


def test_batch_writes_a_summary_errors_first_then_by_verdict_and_score(capsys, tmp_path, inputs,
                                                                       random_bundle):
    out_dir = tmp_path / "out"
    given = [inputs / "case0.nii.gz", inputs / "broken.nii.gz", inputs / "case1.nii.gz"]
    code, out, err = segment(capsys, given, out_dir, random_bundle, "--progress", "json")
    assert code == cli_exit.EXIT_FAILED and err.startswith("error: ") and "broken.nii.gz" in err

    done = json.loads(out.splitlines()[-1])
    cases = ["case0", "case1"]
    assert done["quality"] == status_counts(out_dir, cases)
    assert done["summary"] == str(out_dir / "summary.csv")
    assert "Quality" not in out and not any(" cases: " in line for line in out.splitlines())

    rows = read_csv(out_dir / "summary.csv")
    assert [row["case"] for row in rows] == expected_order(out_dir, cases, ["broken"])
    error = rows[0]
    assert error["run_status"] == "error" and "broken.nii.gz" in error["message"]
    assert error["input"] == str(inputs / "broken.nii.gz")
    assert all(error[column] == "" for column in ("quality_status", "quality_score",
                                                  "pancreas_volume_ml", "report_file"))
    for row in rows[1:]:
        assert row["run_status"] == "ok"
        assert_row_matches_report(row, report_of(out_dir, row["case"]))
        assert all((out_dir / row[column]).is_file() for column in OUTPUT_FILE_COLUMNS)

    document = json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))
    assert [row["case"] for row in document["cases"]] == [row["case"] for row in rows]
    assert document["counts"] == {"cases": 3, "run": {"ok": 2, "error": 1, "skipped": 0},
                                  "quality": done["quality"]}
    for row in document["cases"][1:]:
        assert row["quality_reasons"] == report_of(out_dir, row["case"])["quality"]["reasons"]
        assert row["outputs"]["preview"] == f"{row['case']}_preview.png"
    assert not [p for p in out_dir.iterdir() if p.name.startswith(".")]  # no temporaries


def test_resumed_batch_reads_skipped_cases_from_their_reports(capsys, tmp_path, inputs,
                                                              random_bundle):
    out_dir = tmp_path / "out"
    code, out, _ = segment(capsys, inputs / "case0.nii.gz", out_dir, random_bundle,
                           "--progress", "none")
    status = report_of(out_dir, "case0")["quality"]["status"]
    counted = {name: int(name == status) for name in ("ok", "check", "failed")}
    assert (code, out) == (0, "1 case: 1 segmented, 0 skipped, 0 errors | quality: "
                              f"{counted['ok']} ok, {counted['check']} check, "
                              f"{counted['failed']} failed\n")
    assert not (out_dir / "summary.csv").exists()  # one case: no batch summary
    before = report_of(out_dir, "case0")

    given = [inputs / f"case{index}.nii.gz" for index in range(3)]
    code, out, err = segment(capsys, given, out_dir, random_bundle, "--progress", "none")
    assert (code, err) == (0, f"skipped case0: outputs exist in {out_dir} (--overwrite to "
                              "segment again)\n")
    cases = ["case0", "case1", "case2"]
    counts = status_counts(out_dir, cases)
    assert out == (f"3 cases: 2 segmented, 1 skipped, 0 errors | quality: {counts['ok']} ok, "
                   f"{counts['check']} check, {counts['failed']} failed | summary: "
                   f"{out_dir / 'summary.csv'}\n")
    rows = read_csv(out_dir / "summary.csv")
    assert [row["case"] for row in rows] == expected_order(out_dir, cases, [])
    by_case = {row["case"]: row for row in rows}
    assert {case: row["run_status"] for case, row in by_case.items()} == {
        "case0": "skipped", "case1": "ok", "case2": "ok"}
    assert report_of(out_dir, "case0") == before  # not segmented again...
    assert_row_matches_report(by_case["case0"], before)  # ...yet in the summary, whole


def test_parts_write_their_own_summaries_and_the_summary_command_merges_them(
        capsys, tmp_path, inputs, random_bundle):
    out_dir = tmp_path / "out"
    names = ["broken", "case0", "case1", "case2"]  # sorted: dealt out in turn to 2 parts
    for part in (0, 1):
        code, out, _ = segment(capsys, inputs, out_dir, random_bundle, "--progress", "none",
                               "--num-parts", "2", "--part-id", part)
        mine = names[part::2]
        assert code == (cli_exit.EXIT_FAILED if "broken" in mine else cli_exit.EXIT_OK)
        part_csv = out_dir / f"summary-part-{part}-of-2.csv"
        assert out.rstrip("\n").endswith(f"| summary: {part_csv}")
        assert sorted(row["case"] for row in read_csv(part_csv)) == mine
        assert (out_dir / f"summary-part-{part}-of-2.json").is_file()
    assert not (out_dir / "summary.csv").exists()  # no part claims to be the whole cohort

    code, out, err = run(capsys, "summary", out_dir)
    assert (code, err) == (0, "")
    cases = ["case0", "case1", "case2"]
    counts = status_counts(out_dir, cases)
    assert out == (f"4 cases: 3 segmented, 0 skipped, 1 error | quality: {counts['ok']} ok, "
                   f"{counts['check']} check, {counts['failed']} failed | summary: "
                   f"{out_dir / 'summary.csv'}\n")
    rows = read_csv(out_dir / "summary.csv")
    assert [row["case"] for row in rows] == expected_order(out_dir, cases, ["broken"])
    assert rows[0]["run_status"] == "error" and "broken.nii.gz" in rows[0]["message"]
    for row in rows[1:]:
        assert_row_matches_report(row, report_of(out_dir, row["case"]))

    # Verdicts made up in the reports: the rebuilt summary follows them, every status in turn.
    made_up = {"case0": ("ok", 0.9), "case1": ("check", 0.5), "case2": ("failed", 0.1),
               "case3": ("check", 0.3)}
    shutil.copy(out_dir / "case2_report.json", out_dir / "case3_report.json")
    for case, (status, score) in made_up.items():
        report = report_of(out_dir, case)
        report["case"], report["quality"] = case, {"score": score, "status": status,
                                                   "reasons": [f"{status} reason"], "signals": {}}
        (out_dir / f"{case}_report.json").write_text(json.dumps(report), encoding="utf-8")
    code, out, _ = run(capsys, "summary", out_dir)
    assert code == 0 and "quality: 1 ok, 2 check, 1 failed" in out
    rows = read_csv(out_dir / "summary.csv")
    assert [row["case"] for row in rows] == ["broken", "case2", "case3", "case1", "case0"]
    assert [row["quality_reasons"] for row in rows[1:]] == [
        "failed reason", "check reason", "check reason", "ok reason"]

    # Once the failed case has a report, its error row is gone.
    shutil.copy(out_dir / "case1_report.json", out_dir / "broken_report.json")
    run(capsys, "summary", out_dir)
    assert "error" not in {row["run_status"] for row in read_csv(out_dir / "summary.csv")}


def test_summary_command_needs_a_folder_with_reports(capsys, tmp_path):
    code, out, err = run(capsys, "summary", tmp_path / "missing")
    assert (code, out) == (cli_exit.EXIT_BAD_INPUT, "") and len(err.splitlines()) == 1
    assert err.startswith(f"error: {tmp_path / 'missing'}: not a folder")
    code, _, err = run(capsys, "summary", tmp_path)
    assert code == cli_exit.EXIT_BAD_INPUT and "no <case>_report.json" in err
    assert list(tmp_path.iterdir()) == []


def test_a_batch_where_every_case_failed_writes_no_summary(capsys, tmp_path, inputs,
                                                           random_bundle):
    out_dir = tmp_path / "out"
    given = [inputs / "broken.nii.gz", tmp_path / "missing.nii.gz"]
    code, out, err = segment(capsys, given, out_dir, random_bundle, "--progress", "none")
    assert (code, out) == (cli_exit.EXIT_BAD_INPUT, "") and len(err.splitlines()) == 2
    assert not out_dir.exists() or list(out_dir.iterdir()) == []
    code, out, _ = segment(capsys, given, out_dir, random_bundle, "--progress", "json")
    done = json.loads(out.splitlines()[-1])
    assert done["quality"] == {"ok": 0, "check": 0, "failed": 0} and "summary" not in done


def row(case: str, status: str | None, score: float | None) -> dict:
    report = {"quality": None if status is None else {"status": status, "score": score,
                                                       "reasons": []}}
    return batch_summary.report_row(report, case)


def test_summary_files_are_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    old = batch_summary.write_summary(tmp_path, [row("a", "ok", 0.9)])
    old_text = {kind: path.read_text(encoding="utf-8") for kind, path in old.items()}
    real_replace = os.replace

    def disk_full_on_csv(source, target):
        if str(target).endswith(".csv"):
            raise OSError(28, "No space left on device")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", disk_full_on_csv)
    with pytest.raises(OSError):
        batch_summary.write_summary(tmp_path, [row("a", "ok", 0.9), row("b", "check", 0.4)])
    monkeypatch.setattr(os, "replace", real_replace)
    assert old["csv"].read_text(encoding="utf-8") == old_text["csv"]  # the old one, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.csv", "summary.json"]

    # A temporary a killed writer left (its process is gone) is removed by the next write.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".partial-{dead.pid}-0123abcd-summary.csv"
    stale.write_text("half", encoding="utf-8")
    batch_summary.write_summary(tmp_path, [row("a", "ok", 0.9)])
    assert not stale.exists()


def test_rows_without_a_verdict_sort_between_check_and_ok():
    rows = [row("ok-high", "ok", 0.95), row("none", None, None), row("check", "check", 0.3),
            row("failed", "failed", 0.2), row("ok-low", "ok", 0.6),
            batch_summary.error_row("broken", "broken.nii.gz: unreadable")]
    assert [r["case"] for r in batch_summary.sort_rows(rows)] == [
        "broken", "failed", "check", "none", "ok-low", "ok-high"]
    record = batch_summary.csv_record(row("none", None, None))
    assert record["quality_status"] == "" and record["quality_reasons"] == ""


def test_summary_columns_name_every_file_a_case_can_have():
    """One file column per output the writer makes (case_files) plus the DICOM SEG, none other."""
    from pancreas_ssl_seg.case_files import DICOM_SEG_KEY, OUTPUT_SUFFIXES

    file_columns = {c[:-len("_file")] for c in batch_summary.COLUMNS if c.endswith("_file")}
    assert file_columns == {*OUTPUT_SUFFIXES, DICOM_SEG_KEY}
