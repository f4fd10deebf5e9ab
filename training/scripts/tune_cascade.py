"""Choose the cascade's inference settings on source (training) patients, never on held-out ones.

Grid: how the coarse stage's organ is read (argmax, or P(organ) >= a threshold), which coarse
components the box covers (the largest, or all >= 10 % of it) and the fine stage's margin. Each
setting runs the engine (``segment()`` and the per-stage diagnostics of the evaluation) on the
8-bit slices of the given source patients. Run from the repository root::

    python training/scripts/tune_cascade.py --bundle runs/bundle_a --out runs/tune_cascade.csv

Prints one row per setting (mean pancreas Dice of the cascade, box coverage, share of slices
whose box holds >= 95 % of the pancreas) and the setting with the best mean Dice.
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import itertools
import sys
from pathlib import Path

import numpy as np
import torch

from PancreasSSLSegLib.bundle import load_bundle
from pancreas_ssl_training.evaluation.evaluate import EvaluatedModel, evaluate_case

sys.path.insert(0, str(Path(__file__).resolve().parent))
from default_model_figures import _slices  # noqa: E402

SOURCE_PATIENTS = [f"{p:04d}" for p in range(1, 41, 2)]  # every other training patient
GRID = {"coarse_organ_threshold": [None, 0.3], "coarse_component_fraction": [1.0, 0.1],
        "margin_mm": [20.0, 30.0, 40.0]}


def variant(bundle, threshold, fraction, margin):
    metadata = copy.deepcopy(bundle.metadata)
    metadata["inference"].pop("coarse_organ_threshold", None)
    if threshold is not None:
        metadata["inference"]["coarse_organ_threshold"] = threshold
    metadata["inference"]["coarse_component_fraction"] = fraction
    metadata["stages"]["fine"]["margin_mm"] = margin
    return dataclasses.replace(bundle, metadata=metadata)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    bundle = load_bundle(args.bundle)
    cases = list(_slices(args.data, SOURCE_PATIENTS))
    rows = []
    for threshold, fraction, margin in itertools.product(*GRID.values()):
        model = EvaluatedModel(variant(bundle, threshold, fraction, margin), "tuning",
                               "cascade", "cascade")
        dice, coverage = [], []
        for _, image, truth in cases:
            case_rows, _ = evaluate_case(model, image, truth, 2.0, 0.5, torch.device("cpu"))
            pancreas = next(r for r in case_rows if r["region"] == "pancreas")
            dice.append(pancreas["dice"])
            coverage.append(pancreas["box_coverage"])
        row = {"coarse_organ_threshold": threshold, "coarse_component_fraction": fraction,
               "margin_mm": margin, "dice": round(float(np.mean(dice)), 4),
               "box_coverage": round(float(np.mean(coverage)), 4),
               "box_holds_95pct": round(float(np.mean(np.array(coverage) >= 0.95)), 4),
               "slices": len(cases)}
        print(row, flush=True)
        rows.append(row)
    with open(args.out, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print("best:", max(rows, key=lambda r: r["dice"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
