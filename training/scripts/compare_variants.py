"""Compare model variants evaluated by ``default_model_figures.py``, each against a baseline.

Each ``--figures`` folder is one variant's ``--out`` of ``default_model_figures.py`` (its
``heldout/cases.csv``, optionally ``selection/cases.csv``, and ``figures.json``). Per variant and
set: mean pancreas Dice per slice of the cascade and of the fine stage given the true box, and
the paired per-slice difference from the baseline (the first folder) with a 95 % bootstrap
interval that resamples patients (slices of one patient are correlated). Run from the
repository root::

    python training/scripts/compare_variants.py --figures runs/fig_v040 runs/fig_E22 \
        --names 0.4.0 ensemble --out training/results/default_model/variants.md
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from pancreas_ssl_training.evaluation.statistics import compare_to_baseline
from pancreas_ssl_training.evaluation.tables import read_csv

SETS = (("heldout", "held-out 0041-0050"), ("selection", "source 0031-0040 (in-sample)"))
METRICS = (("dice", "cascade Dice"), ("dice_true_box", "Dice given the true box"))


def _pancreas_rows(folder: Path, name: str, method: str) -> list[dict]:
    """The pancreas rows of ``folder/name/cases.csv`` as ``statistics`` rows of ``method``."""
    path = folder / name / "cases.csv"
    if not path.is_file():
        return []
    return [{**row, "method": method, "seed": 0} for row in read_csv(path)
            if row["region"] == "pancreas"]


def paired_figures(rows: list[dict], metric: str, arm: str,
                   baseline: str) -> tuple[str, str | None]:
    """(mean of ``arm``'s finite ``metric``, its paired difference from ``baseline`` with the
    patient-bootstrap 95 % interval of ``compare_to_baseline``; ``None`` for the baseline)."""
    values = np.array([float(r[metric]) for r in rows if r["method"] == arm
                       and math.isfinite(_number(r.get(metric)))])
    if arm == baseline:
        return f"{values.mean():.3f}", None
    found = compare_to_baseline(rows, metric, arm, baseline)
    return f"{values.mean():.3f}", (f"{found[f'{metric}_diff_mean']:+.3f} "
                                    f"[{found[f'{metric}_diff_low']:+.3f}, "
                                    f"{found[f'{metric}_diff_high']:+.3f}]")


def _number(value) -> float:
    return math.nan if value in ("", "nan", None) else float(value)


def compare(folders: list[Path], names: list[str]) -> list[str]:
    """Markdown lines: one table per set, one row per variant."""
    lines = []
    for set_name, title in SETS:
        rows = [row for folder, name in zip(folders, names, strict=True)
                for row in _pancreas_rows(folder, set_name, name)]
        if not any(row["method"] == names[0] for row in rows):
            continue
        lines += [f"### {title}", "", "| variant | " + " | ".join(
            f"{label} (mean; paired difference from {names[0]}, 95 % CI)"
            for _, label in METRICS) + " |", "|---|" + "---|" * len(METRICS)]
        for name in names:
            cells = ["; ".join(filter(None, paired_figures(rows, metric, name, names[0])))
                     for metric, _ in METRICS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["### 3 mm example CT (in-sample), Accurate mode", "",
              "| variant | Dice vs TotalSegmentator's pancreas | max distance from it (mm) |",
              "|---|---|---|"]
    for folder, name in zip(folders, names, strict=True):
        ct = json.loads((folder / "figures.json").read_text(encoding="utf-8"))["ct3mm_in_sample"]
        lines.append(f"| {name} | {ct['dice']:.3f} | {ct['max_distance_mm_from_reference']} |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figures", type=Path, nargs="+", required=True,
                        help="default_model_figures.py output folders; the first is the baseline")
    parser.add_argument("--names", nargs="+", required=True, help="one name per folder")
    parser.add_argument("--out", type=Path, required=True, help="Markdown file to write")
    args = parser.parse_args(argv)
    if len(args.names) != len(args.figures):
        parser.error("give one --names entry per --figures folder")
    lines = compare(args.figures, args.names)
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
