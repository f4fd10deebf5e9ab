"""The experiment runner end to end on its CI preset
(training/experiments/single_source_smoke.yaml): the stop rule halts after the baseline, then
the whole pipeline writes every table and plot. It checks the pipeline, not the science
(3 iterations of tiny networks)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from conftest import REPO_ROOT
from pancreas_ssl_training.cli import main
from pancreas_ssl_training.evaluation.corruptions import CORRUPTIONS
from pancreas_ssl_training.evaluation.tables import read_csv

SMOKE = REPO_ROOT / "training" / "experiments" / "single_source_smoke.yaml"
TARGETS = ["in_domain", "hu_slices", "other_mapping",
           *[f"{name}-{severity}" for name in CORRUPTIONS for severity in (1, 3)]]
SLICES = {"hu_slices": 3}  # one per HU patient; every other target: patient 0031's one slice


def _experiment(config, root, shared_data, *options: str) -> int:
    return main(["experiment", "--config", str(config), "--runs", str(root / "runs"),
                 "--results", str(root / "results"), "--data-root", str(shared_data), *options])


@pytest.fixture(scope="module")
def smoke(shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("experiment")
    strict = root / "strict.yaml"  # the same preset with the real stop rule's bar set high
    strict.write_text(yaml.safe_dump({"extends": str(SMOKE), "name": "strict", "stop_rule": {
        "arm": "baseline", "target": "in_domain", "min_dice": 0.99}}), encoding="utf-8")
    assert _experiment(strict, root, shared_data, "--jobs", "2") == 0  # the process pool
    stopped = {path.name: path.read_bytes() for path in (root / "results").iterdir()
               if path.is_file()}
    assert _experiment(SMOKE, root, shared_data) == 0
    return root, stopped


def test_stop_rule_halts_after_the_baseline_and_says_so(smoke):
    root, stopped = smoke
    report = stopped["strict.md"].decode("utf-8")
    assert "not passed: no comparison between arms is reported" in report
    assert "Dice minus the baseline" not in report
    summary = read_csv(root / "results" / "strict_summary.csv")
    assert {row["arm"] for row in summary} == {"baseline"}
    runs = read_csv(root / "results" / "strict_runs.csv")
    assert sorted((r["arm"], r["seed"]) for r in runs) == [("baseline", "0"), ("baseline", "1")]


def test_every_arm_and_seed_trains_from_the_recipe_on_the_source_only(smoke):
    root, _ = smoke
    for arm in ("baseline", "dual_ssl"):
        for seed in (0, 1):
            run = root / "runs" / arm / f"seed{seed}"
            config = yaml.safe_load((run / "run_config.yaml").read_text(encoding="utf-8"))
            assert config["extends"].endswith("training/configs/default_model.yaml")
            assert config["data"]["sources"]["nih_8bit"]["patients"] == \
                ["0004", "0005", "0006", "0007", "0008"]
            assert config["train"]["seed"] == seed
            log = read_csv(run / "train_log.csv")
            assert {row["stage"] for row in log} == {"coarse", "fine"}
    dual = yaml.safe_load((root / "runs" / "dual_ssl" / "seed1" / "run_config.yaml")
                          .read_text(encoding="utf-8"))
    assert dual["init_encoder"] == str(root.resolve() / "runs" / "pretrain" / "seed1" /
                                       "checkpoint")
    terms = set(read_csv(root / "runs" / "dual_ssl" / "seed0" / "train_log.csv")[0])
    assert {"loss_dual_task", "loss_view_output", "loss_structure_contrastive",
            "loss_restoration"} <= terms
    assert "loss_polycl" in read_csv(root / "runs" / "pretrain" / "seed0" / "train_log.csv")[0]
    pretrain = yaml.safe_load((root / "runs" / "pretrain" / "seed0" / "run_config.yaml")
                              .read_text(encoding="utf-8"))
    fine = pretrain["stages"]["fine"]  # the preset's sizing, the pre-training's own budget
    assert fine["patch_size"] == [64, 64] and fine["train"] == {"iterations": 3, "batch_size": 4}


def test_targets_are_prepared_once_with_the_clean_labels(smoke):
    root, _ = smoke
    folder = root / "runs" / "targets"
    with np.load(folder / "in_domain.npz") as clean:
        clean_label, clean_image = clean["label_0"], clean["image_0"]
    for name in TARGETS[3:]:
        with np.load(folder / f"{name}.npz") as target:
            assert np.array_equal(target["label_0"], clean_label)
            assert not np.array_equal(target["image_0"], clean_image)
        record = json.loads((folder / f"{name}.json").read_text(encoding="utf-8"))
        assert [row["patient"] for row in record["cases"]] == ["0031"]
        assert record["prepare_seconds"] > 0


def test_report_tables_have_one_row_per_target_and_arm(smoke):
    root, _ = smoke
    results = root / "results"
    summary = read_csv(results / "single_source_smoke_summary.csv")
    assert [(row["target"], row["arm"]) for row in summary] == \
        [(target, arm) for target in TARGETS for arm in ("baseline", "dual_ssl")]
    for row in summary:
        assert row["dice_seeds"] == "2"
        assert row["dice_cases"] == str(2 * SLICES.get(row["target"], 1))
        if row["arm"] == "dual_ssl":
            low, mean, high = (float(row[k]) for k in ("dice_diff_low", "dice_diff_mean",
                                                       "dice_diff_high"))
            assert low <= mean <= high
            assert row["dice_verdict"] in {"better", "worse", "indistinguishable"}
    cases = read_csv(results / "single_source_smoke_cases.csv")
    pancreas = [row for row in cases if row["region"] == "pancreas"]
    per_run = sum(SLICES.get(t, 1) for t in TARGETS)
    assert len(pancreas) == 4 * per_run  # 2 arms x 2 seeds
    assert {(r["corruption"], r["severity"]) for r in pancreas if r["target"] == "window-3"} == \
        {("window", "3")}
    report = (results / "single_source_smoke.md").read_text(encoding="utf-8")
    assert "(needs ≥ 0.0): passed" in report
    for target in TARGETS:
        assert f"| {target} | " in report and f"### `{target}`" in report
    runs = read_csv(results / "single_source_smoke_runs.csv")
    # The baseline's runs were made by the stopped experiment and kept.
    assert sorted((r["arm"], r["resumed"]) for r in runs) == [
        ("baseline", "True"), ("baseline", "True"), ("dual_ssl", ""), ("dual_ssl", ""),
        ("pretrain", ""), ("pretrain", "")]
    assert all(float(r["eval_seconds"]) > 0 for r in runs if r["arm"] == "dual_ssl")
    info = json.loads((results / "single_source_smoke_run.json").read_text(encoding="utf-8"))
    assert info["argv"] and info["wall_seconds"] > 0 and info["experiment"]["seeds"] == [0, 1]
    pictures = [results / "single_source_smoke_dice_vs_severity.png",
                *[results / "single_source_smoke_boxplots" / f"dice_{t}.png" for t in TARGETS]]
    for picture in pictures:
        assert picture.read_bytes()[:4] == b"\x89PNG", picture


def test_aggregate_only_rebuilds_the_report_and_keeps_the_run_timings(smoke, shared_data):
    root, _ = smoke
    results = root / "results"
    timings = (results / "single_source_smoke_runs.csv").read_text(encoding="utf-8")
    (results / "single_source_smoke.md").unlink()
    assert main(["experiment", "--config", str(SMOKE), "--runs", str(root / "runs"),
                 "--results", str(results), "--data-root", str(shared_data),
                 "--aggregate-only"]) == 0
    assert "| window-3 | " in (results / "single_source_smoke.md").read_text(encoding="utf-8")
    assert (results / "single_source_smoke_runs.csv").read_text(encoding="utf-8") == timings
