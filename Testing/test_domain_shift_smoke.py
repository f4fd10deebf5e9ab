"""The domain-shift runner end to end on a tiny budget: plans, trains, evaluates, aggregates."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from pancreas_ssl_training.evaluation.tables import read_csv

RUNNER = REPO_ROOT / "training" / "experiments" / "domain_shift.py"


def _run(arguments: list[str]) -> None:
    completed = subprocess.run([sys.executable, str(RUNNER), *arguments], capture_output=True,
                               text=True, timeout=600, cwd=REPO_ROOT, encoding="utf-8")
    assert completed.returncode == 0, completed.stderr[-3000:]


@pytest.fixture(scope="module")
def tiny_experiment(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("domain_shift")
    _run(["--split", "report", "--preset", "tiny", "--methods", "baseline", "dual_task",
          "--seeds", "0", "1", "--jobs", "1", "--limit-patients", "1",
          "--runs", str(root / "runs"), "--results", str(root / "results"),
          "--data-root", str(shared_data)])
    return root


def test_every_arm_and_seed_is_trained_from_its_own_config(tiny_experiment):
    for arm in ("baseline", "dual_task"):
        for seed in (0, 1):
            run = tiny_experiment / "runs" / arm / f"seed{seed}"
            assert (run / "checkpoint" / "state.json").is_file()
            config = (run / "run_config.yaml").read_text(encoding="utf-8")
            assert f"{arm}.yaml" in config and f"seed: {seed}" in config
            log = read_csv(run / "train_log.csv")
            assert log[-1]["iteration"] == "3"
    dual_log = read_csv(tiny_experiment / "runs" / "dual_task" / "seed0" / "train_log.csv")
    assert "loss_dual_task" in " ".join(dual_log[0])  # the method's own loss terms were logged


def test_results_hold_per_case_rows_and_a_summary_over_seeds(tiny_experiment):
    results = tiny_experiment / "results"
    cases = read_csv(results / "domain_shift_report_cases.csv")
    # patient 0031 only (--limit-patients 1): 4 slices x 2 regions x (2 arms + the baseline
    # scored on mapped 8-bit slices) x 2 seeds
    assert {row["patient"] for row in cases} == {"0031"}
    assert len(cases) == 4 * 2 * 3 * 2
    assert {row["units"] for row in cases if row["method"] == "baseline_8bit_to_hu"} == \
        {"8bit-mapped-hu"}
    assert {row["units"] for row in cases if row["method"] != "baseline_8bit_to_hu"} == {"8bit"}
    summary = {row["method"]: row for row in read_csv(results / "domain_shift_report_summary.csv")}
    assert set(summary) == {"baseline", "dual_task", "baseline_8bit_to_hu"}
    assert summary["baseline"]["dice_mean_n"] == "2"  # one value per seed
    assert float(summary["baseline"]["dice_minus_baseline_mean"]) == 0.0
    table = (results / "domain_shift_report.md").read_text(encoding="utf-8")
    assert "| baseline |" in table and "| dual_task |" in table
    for name in ("dice", "hd95_mm"):
        assert (results / f"domain_shift_report_{name}.png").read_bytes()[:4] == b"\x89PNG"
    runs = read_csv(results / "domain_shift_report_runs.csv")
    assert len(runs) == 4 and all(float(r["eval_seconds"]) > 0 for r in runs)


def test_aggregate_only_rebuilds_tables_and_keeps_run_timings(tiny_experiment, shared_data):
    results = tiny_experiment / "results"
    timings = (results / "domain_shift_report_runs.csv").read_text(encoding="utf-8")
    (results / "domain_shift_report.md").unlink()
    _run(["--split", "report", "--preset", "tiny", "--methods", "baseline", "dual_task",
          "--seeds", "0", "1", "--limit-patients", "1", "--aggregate-only",
          "--runs", str(tiny_experiment / "runs"), "--results", str(results),
          "--data-root", str(shared_data)])
    assert "| dual_task |" in (results / "domain_shift_report.md").read_text(encoding="utf-8")
    assert (results / "domain_shift_report_runs.csv").read_text(encoding="utf-8") == timings
