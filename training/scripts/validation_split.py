"""Fine-stage recipes compared where none of them was trained: source patients 0031-0040.

The default model trains on every NIH patient but the held-out 0041-0050, so its settings can only
be chosen on slices it has seen. Here each arm's fine stage is trained without 0031-0040
(``exclude_patients``), and scored on their slices by the fine stage's Dice given the box around
the true pancreas (the evaluation's ``dice_true_box``, Fast mode; the coarse network of
``--bundle`` runs in front, as in ``segment()``, but the true box does not depend on it). The
held-out patients are scored too, for the record, never for the choice. Run from the repository
root::

    python training/scripts/validation_split.py --bundle Resources/Models/pancreas-demo \
        --arm A training/configs/valsplit_a.yaml runs/valsplit/run_a \
        --arm B training/configs/valsplit_b.yaml runs/valsplit/run_b --out runs/valsplit/report

Writes ``slices.csv`` (one row per arm, set and slice) and ``report.md`` (mean per arm and set,
paired difference from the first arm with a 95 % interval that resamples patients).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from pancreas_ssl_seg.bundle import load_bundle
from pancreas_ssl_training.checkpoint import load_checkpoint
from pancreas_ssl_training.config import load_config
from pancreas_ssl_training.evaluation.evaluate import EvaluatedModel, stage_diagnostics
from pancreas_ssl_training.evaluation.tables import write_csv
from pancreas_ssl_training.export import in_memory_bundle

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_variants import paired_figures  # noqa: E402
from default_model_figures import HELD_OUT, SELECTION, _slices  # noqa: E402

SETS = {"validation 0031-0040": SELECTION, "held-out 0041-0050": HELD_OUT}


def arm_model(name: str, config_path: Path, run: Path, coarse_from) -> EvaluatedModel:
    """The arm's trained fine stage behind ``coarse_from``'s coarse network, in Fast mode."""
    config = load_config(config_path)  # coarse network = the bundle's (load_state_dict checks)
    states = {"coarse": coarse_from.stage_weights["coarse"],
              "fine": load_checkpoint(run / "checkpoint").network_states["fine"]}
    return EvaluatedModel(in_memory_bundle(config, states), name, "cascade", "cascade",
                          tta_flip=False)


def report(rows: list[dict], arms: list[str]) -> list[str]:
    lines = ["| arm | " + " | ".join(f"{s}: Dice given the true box (difference from "
                                      f"{arms[0]}, 95 % CI)" for s in SETS) + " |",
             "|---|" + "---|" * len(SETS)]
    for arm in arms:
        cells = []
        for set_name in SETS:
            mean, difference = paired_figures([r for r in rows if r["set"] == set_name],
                                              "dice_true_box", arm, arms[0])
            cells.append(mean if difference is None else f"{mean} ({difference})")
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True,
                        help="bundle whose coarse network sits in front of every arm")
    parser.add_argument("--arm", nargs=3, action="append", required=True,
                        metavar=("NAME", "CONFIG", "RUN"), help="the first arm is the reference")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    coarse_from = load_bundle(args.bundle)
    slices = {name: list(_slices(args.data, patients)) for name, patients in SETS.items()}
    rows = []
    for name, config, run in args.arm:
        model = arm_model(name, Path(config), Path(run), coarse_from)
        for set_name, cases in slices.items():
            for case, image, truth in cases:
                found = stage_diagnostics(model, image, truth, torch.device("cpu"))
                rows.append({"method": name, "seed": 0, "set": set_name, "case": case,
                             "patient": case.split("_")[1].split("-")[0],
                             "dice_true_box": found["dice_true_box"]})
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(rows, args.out / "slices.csv")
    lines = report(rows, [name for name, _, _ in args.arm])
    (args.out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
