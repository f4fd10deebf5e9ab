"""Statistics of the experiment report: paired differences, patient-cluster bootstrap intervals,
verdicts, mean ± sd over seeds and medians, checked against values computed another way."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pancreas_ssl_training.evaluation.statistics import (bootstrap_interval, compare_to_baseline,
                                                         over_seeds, paired_differences, verdict)


def _rows(method: str, dice: dict[tuple[int, str], float]) -> list[dict]:
    return [{"method": method, "seed": seed, "case": case, "patient": case.split("-")[0],
             "dice": value} for (seed, case), value in dice.items()]


def test_differences_pair_the_same_case_and_seed_and_skip_undefined_values():
    base = _rows("baseline", {(0, "p1-a"): 0.5, (0, "p1-b"): 0.6, (1, "p1-a"): 0.4,
                              (1, "p2-c"): math.nan})
    arm = _rows("dual_task", {(0, "p1-a"): 0.7, (0, "p1-b"): 0.5, (1, "p1-a"): 0.45,
                              (1, "p2-c"): 0.9, (2, "p1-a"): 0.8})  # seed 2: no baseline
    pairs = paired_differences(base + arm, "dice", "dual_task")
    got = {(p["seed"], p["case"]): p["difference"] for p in pairs}
    assert got == pytest.approx({("0", "p1-a"): 0.2, ("0", "p1-b"): -0.1, ("1", "p1-a"): 0.05})
    assert {p["patient"] for p in pairs} == {"p1"}


def test_a_constant_difference_has_a_zero_width_interval():
    low, high = bootstrap_interval([0.1] * 30, groups=[i // 3 for i in range(30)])
    assert (low, high) == pytest.approx((0.1, 0.1))


def test_interval_of_independent_values_matches_the_normal_approximation():
    values = np.random.default_rng(1).normal(0.05, 0.2, 400)
    low, high = bootstrap_interval(values, seed=3)
    half_width = 1.96 * values.std(ddof=1) / math.sqrt(values.size)
    assert low == pytest.approx(values.mean() - half_width, abs=0.15 * half_width)
    assert high == pytest.approx(values.mean() + half_width, abs=0.15 * half_width)
    assert bootstrap_interval(values, seed=3) == (low, high)  # fixed seed, same interval
    assert bootstrap_interval(values, seed=4) != (low, high)


def test_clustered_values_get_the_interval_of_their_cluster_means():
    rng = np.random.default_rng(2)
    offsets = rng.normal(0.0, 0.3, 20)  # 20 patients, 10 near-identical slices each
    values = np.repeat(offsets, 10) + rng.normal(0, 0.01, 200)
    groups = np.repeat(np.arange(20), 10)
    low, high = bootstrap_interval(values, groups, seed=0)
    cluster_half = 1.96 * offsets.std(ddof=1) / math.sqrt(20)
    assert (high - low) / 2 == pytest.approx(cluster_half, rel=0.25)
    naive_low, naive_high = bootstrap_interval(values, seed=0)
    assert naive_high - naive_low < 0.5 * (high - low)  # slices taken as independent: too narrow


def test_verdict_reads_the_interval():
    assert verdict(0.01, 0.05) == "better"
    assert verdict(-0.05, -0.01) == "worse"
    assert verdict(-0.01, 0.02) == "indistinguishable"
    assert verdict(0.01, 0.05, higher_is_better=False) == "worse"  # e.g. HD95
    assert verdict(math.nan, math.nan) == "–"


def test_comparison_of_an_arm_that_adds_a_known_amount():
    rng = np.random.default_rng(0)
    cases = [f"p{p}-{s}" for p in range(10) for s in range(4)]
    base = {(seed, case): float(rng.uniform(0.3, 0.8)) for seed in (0, 1, 2) for case in cases}
    arm = {key: value + 0.1 for key, value in base.items()}
    result = compare_to_baseline(_rows("baseline", base) + _rows("arm", arm), "dice", "arm")
    assert result["dice_diff_mean"] == pytest.approx(0.1)
    assert result["dice_diff_median"] == pytest.approx(0.1)
    assert (result["dice_diff_low"], result["dice_diff_high"]) == pytest.approx((0.1, 0.1))
    assert result["dice_verdict"] == "better"
    assert (result["dice_pairs"], result["dice_pair_patients"]) == (120, 10)


def test_over_seeds_is_the_spread_of_per_seed_means_and_the_pooled_median():
    rows = _rows("baseline", {(0, "p1-a"): 0.2, (0, "p1-b"): 0.4, (1, "p1-a"): 0.6,
                              (1, "p1-b"): 0.8, (2, "p1-a"): 0.5, (2, "p1-b"): math.nan})
    summary = over_seeds(rows, "dice")
    seed_means = [0.3, 0.7, 0.5]
    assert summary["dice_mean"] == pytest.approx(0.5)
    assert summary["dice_sd"] == pytest.approx(float(np.std(seed_means, ddof=1)))
    assert summary["dice_median"] == pytest.approx(0.5)  # of 0.2, 0.4, 0.5, 0.6, 0.8
    assert (summary["dice_seeds"], summary["dice_cases"]) == (3, 5)
