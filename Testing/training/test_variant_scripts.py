"""The comparison scripts behind the model card's variant tables (training/scripts/)."""

from __future__ import annotations

import json
import sys

import pytest

from conftest import REPO_ROOT
from pancreas_ssl_training.evaluation.tables import write_csv

sys.path.insert(0, str(REPO_ROOT / "training" / "scripts"))
import compare_variants  # noqa: E402
import validation_split  # noqa: E402


def _figures_folder(root, name, dice, true_box, ct_dice):
    folder = root / name
    rows = [{"case": f"PANCREAS_00{p}-1{i}", "patient": f"00{p}", "region": region,
             "dice": dice[k] if region == "pancreas" else "nan",
             "dice_true_box": true_box[k] if region == "pancreas" else ""}
            for k, (p, i) in enumerate([(41, 1), (41, 2), (42, 1)])
            for region in ("pancreas", "lesion")]
    (folder / "heldout").mkdir(parents=True)
    write_csv(rows, folder / "heldout" / "cases.csv")
    (folder / "figures.json").write_text(json.dumps({"ct3mm_in_sample": {
        "dice": ct_dice, "max_distance_mm_from_reference": 9.0}}), encoding="utf-8")
    return folder


def test_variants_are_compared_slice_by_slice_with_the_baseline(tmp_path):
    base = _figures_folder(tmp_path, "base", [0.5, 0.6, 0.7], [0.6, 0.6, 0.6], 0.8)
    other = _figures_folder(tmp_path, "other", [0.6, 0.7, 0.5], [0.7, 0.7, 0.7], 0.4)
    lines = compare_variants.compare([base, other], ["A", "B"])
    row = next(line for line in lines if line.startswith("| B |"))
    # cascade: mean 0.6, paired differences +0.1, +0.1, -0.2 -> mean 0.000; true box +0.100
    assert "| B | 0.600; +0.000 [" in row and "0.700; +0.100 [+0.100, +0.100]" in row
    assert "| A | 0.600 | 0.600 |" in lines
    assert "| B | 0.400 | 9.0 |" in lines
    assert not any(line.startswith("### source") for line in lines)  # no selection/ folder


def test_validation_report_pairs_each_arm_with_the_first():
    rows = [{"method": arm, "seed": 0, "set": set_name, "case": f"c{i}", "patient": f"p{i % 2}",
             "dice_true_box": value + (0.05 if arm == "B" else 0.0)}
            for arm in ("A", "B") for set_name in validation_split.SETS
            for i, value in enumerate([0.4, 0.6, 0.8, 0.6])]
    lines = validation_split.report(rows, ["A", "B"])
    assert lines[2] == "| A | 0.600 | 0.600 |"
    assert lines[3].count("0.650 (+0.050 [+0.050, +0.050])") == len(validation_split.SETS)


def test_compare_variants_wants_one_name_per_folder(tmp_path, capsys):
    with pytest.raises(SystemExit):
        compare_variants.main(["--figures", str(tmp_path), "--names", "a", "b",
                               "--out", str(tmp_path / "x.md")])
    assert "one --names entry per --figures folder" in capsys.readouterr().err
