"""Choose the cascade's inference settings on source (training) patients, never on held-out ones.

Round "coarse": how the coarse stage's organ is read (argmax, or P(organ) >= a threshold), which
coarse components the box covers (the largest, or all >= 10 % of it) and the fine stage's margin;
round "postprocess": which fine-stage components are kept (share of the largest, axial gap). Each
setting runs the engine (``segment()`` and the per-stage diagnostics of the evaluation) on the
8-bit slices of the given source patients. Run from the repository root::

    python training/scripts/tune_cascade.py --bundle runs/bundle_a --out runs/tune_cascade.csv \
        [--round coarse|postprocess]

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

from pancreas_ssl_seg.bundle import load_bundle
from pancreas_ssl_training.evaluation.evaluate import EvaluatedModel, evaluate_case

sys.path.insert(0, str(Path(__file__).resolve().parent))
from default_model_figures import _slices  # noqa: E402

SOURCE_PATIENTS = [f"{p:04d}" for p in range(1, 41, 2)]  # every other training patient
# Two rounds (NOTES.md, session 4): the coarse reading and the margin first, then, with the
# winners fixed, the post-processing (the 3 mm CT, a source volume, showed stray components).
ROUNDS = {
    "coarse": {"coarse_organ_threshold": [None, 0.3], "coarse_component_fraction": [1.0, 0.1],
               "margin_mm": [20.0, 30.0, 40.0]},
    "postprocess": {"coarse_organ_threshold": [None], "coarse_component_fraction": [0.1],
                    "margin_mm": [30.0], "min_component_fraction": [0.1, 0.25],
                    "max_component_gap_mm": [None, 20.0]},
}


def variant(bundle, settings: dict):
    metadata = copy.deepcopy(bundle.metadata)
    for key, value in settings.items():
        if key == "margin_mm":
            metadata["stages"]["fine"]["margin_mm"] = value
        elif value is None:
            metadata["inference"].pop(key, None)
        else:
            metadata["inference"][key] = value
    return dataclasses.replace(bundle, metadata=metadata)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--round", choices=sorted(ROUNDS), default="coarse")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    bundle = load_bundle(args.bundle)
    cases = list(_slices(args.data, SOURCE_PATIENTS))
    rows = []
    grid = ROUNDS[args.round]
    for values in itertools.product(*grid.values()):
        settings = dict(zip(grid, values))
        model = EvaluatedModel(variant(bundle, settings), "tuning", "cascade", "cascade")
        dice, coverage = [], []
        for _, image, truth in cases:
            case_rows, _ = evaluate_case(model, image, truth, 2.0, 0.5, torch.device("cpu"))
            pancreas = next(r for r in case_rows if r["region"] == "pancreas")
            dice.append(pancreas["dice"])
            coverage.append(pancreas["box_coverage"])
        row = {**settings, "dice": round(float(np.mean(dice)), 4),
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
