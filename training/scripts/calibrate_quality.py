"""Measure the quality verdict and the uncertainty map against a model's real errors.

Runs the engine (``segment()``, Accurate mode, the bundle's settings) on every case of an
evaluation data spec and writes, under ``--out``:

- ``cases.csv``: per case its pancreas Dice, the verdict (score, status, reasons) and its signals;
- ``coverage.csv`` / ``coverage.png``: for each uncertainty threshold t, the share of the error
  voxels (predicted label != reference label) inside ``uncertainty > t`` and the flagged volume
  over the predicted pancreas volume (1.0 = as much as the organ itself);
- ``summary.json`` also holds ``ranking``: the share of all error voxels in the rank-1 region
  and in all regions when the bundle's regions are ordered by each candidate key;
- ``summary.json``: AUROC of (1 - score) for "Dice < 0.5", statuses against Dice, the coverage at
  each threshold; and, for ``--sweep``, the same AUROC with each quality setting tuned on the
  other patients (leave one patient out), so the figure is not the one the settings were fit to.

    python training/scripts/calibrate_quality.py --bundle Resources/Models/pancreas-demo \
        --data training/configs/eval_heldout_nih.yaml --out runs/quality
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from scipy import ndimage

from pancreas_ssl_seg.bundle import load_bundle
from pancreas_ssl_seg.labels import PANCREAS
from pancreas_ssl_seg.pipeline import segment
from pancreas_ssl_seg.quality import DEFAULT_QUALITY, verdict
from pancreas_ssl_training.evaluation.evaluate import labelled_cases, read_data_spec
from pancreas_ssl_training.evaluation.metrics import mask_dice

THRESHOLDS = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
# candidate orders of the review regions (the engine ranks by "score" = volume x mean uncertainty)
RANKINGS = {"volume_x_mean_uncertainty": "score", "volume": "volume_ml",
            "mean_uncertainty": "mean_uncertainty", "max_uncertainty": "max_uncertainty"}
FAILED_DICE, BAD_DICE = 0.5, 0.3


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """P(score of a random positive > score of a random negative), ties counted half."""
    pos, neg = scores[positive], scores[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))


def errors_by_rank(regions: list[dict], region_map: np.ndarray, errors: np.ndarray
                   ) -> dict[str, np.ndarray]:
    """Per ranking: error voxels in its rank-1 region and in all regions."""
    if not regions:
        return {name: np.zeros(2) for name in RANKINGS}
    ids = np.array([r["id"] for r in regions])
    inside = np.asarray(ndimage.sum_labels(errors, region_map, ids))
    out = {}
    for name, key in RANKINGS.items():
        first = int(np.argmax([r[key] for r in regions]))
        out[name] = np.array([inside[first], inside.sum()])
    return out


def run_cases(bundle, spec) -> tuple[list[dict], list[dict], dict]:
    rows, coverage = [], np.zeros((len(THRESHOLDS), 3))  # errors inside, flagged, (totals below)
    totals = np.zeros(2)  # error voxels, predicted organ voxels
    ranked = {name: np.zeros(2) for name in RANKINGS}
    for info, image, truth in labelled_cases(spec):
        result = segment(image, model=bundle, device="cpu")
        predicted = result.labels
        errors = predicted != truth
        totals += [errors.sum(), (predicted >= PANCREAS).sum()]
        for name, found in errors_by_rank(result.report["regions"], result.regions,
                                          errors).items():
            ranked[name] += found
        for i, t in enumerate(THRESHOLDS):
            flagged = result.uncertainty > t
            coverage[i] += [(errors & flagged).sum(), flagged.sum(), 0]
        quality = result.report["quality"]
        rows.append({**info, "dice": mask_dice(predicted >= PANCREAS, truth >= PANCREAS, empty=1.0),
                     "score": quality["score"], "status": quality["status"],
                     "reasons": "; ".join(quality["reasons"]),
                     **{f"signal_{k}": v for k, v in quality["signals"].items()}})
        print(f"{info['case']}: Dice {rows[-1]['dice']:.3f} score {quality['score']:.2f} "
              f"{quality['status']}", flush=True)
    curve = [{"threshold": t, "error_share_flagged": inside / max(totals[0], 1),
              "flagged_over_pancreas": flagged / max(totals[1], 1)}
             for t, (inside, flagged, _) in zip(THRESHOLDS, coverage)]
    ranking = {name: {"rank1_error_share": v[0] / max(totals[0], 1),
                      "all_regions_error_share": v[1] / max(totals[0], 1)}
               for name, v in ranked.items()}
    return rows, curve, ranking


def signals_of(row: dict) -> dict:
    return {k[len("signal_"):]: (None if v == "" else v) for k, v in row.items()
            if k.startswith("signal_")}


def rescored(rows: list[dict], thresholds: dict) -> np.ndarray:
    return np.array([verdict(signals_of(r), thresholds)["score"] for r in rows])


SWEEP = {"outside_weight": [0.0, 0.25, 0.5, 0.75, 1.0, 1.5]}


def tuned(rows: list[dict], base: dict) -> dict:
    """The SWEEP setting with the best AUROC on ``rows`` (coordinate-wise, two passes; ties go
    to the value nearest the current one)."""
    best = dict(base)
    failed = np.array([r["dice"] < FAILED_DICE for r in rows])
    for _ in range(2):
        for key, values in SWEEP.items():
            scores = {v: auroc(1 - rescored(rows, {**best, key: v}), failed) for v in values}
            best[key] = max(values, key=lambda v: (np.nan_to_num(scores[v]), -abs(v - best[key])))
    return best


def summarise(rows: list[dict], curve: list[dict], ranking: dict, base: dict,
              sweep: bool) -> dict:
    d = np.array([r["dice"] for r in rows])
    failed = d < FAILED_DICE
    summary = {"cases": len(rows), "dice_below_0.5": int(failed.sum()),
               "auroc_dice_below_0.5": auroc(1 - np.array([r["score"] for r in rows]), failed),
               "dice_below_0.3_marked_ok": int(sum(r["status"] == "ok" and r["dice"] < BAD_DICE
                                                   for r in rows)),
               "status_counts": {s: int(sum(r["status"] == s for r in rows))
                                 for s in ("ok", "check", "failed")},
               "mean_dice_by_status": {s: float(d[[r["status"] == s for r in rows]].mean())
                                       for s in ("ok", "check", "failed")
                                       if any(r["status"] == s for r in rows)},
               "coverage": curve, "ranking": ranking}
    if sweep:
        patients = sorted({r["patient"] for r in rows})
        held_scores = np.zeros(len(rows))
        for patient in patients:
            train = [r for r in rows if r["patient"] != patient]
            setting = tuned(train, base)
            index = [i for i, r in enumerate(rows) if r["patient"] == patient]
            held_scores[index] = rescored([rows[i] for i in index], setting)
        summary["auroc_leave_one_patient_out"] = auroc(1 - held_scores, failed)
        summary["tuned_on_all"] = tuned(rows, base)
    return summary


def plot(curve: list[dict], out: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    x = [c["flagged_over_pancreas"] for c in curve]
    y = [c["error_share_flagged"] for c in curve]
    ax.plot(x, y, "o-")
    for c in curve:
        ax.annotate(f"t={c['threshold']}", (c["flagged_over_pancreas"], c["error_share_flagged"]),
                    fontsize=7)
    ax.axvline(1.0, color="grey", ls="--", lw=0.8)
    ax.axhline(0.6, color="grey", ls=":", lw=0.8)
    ax.set_xlabel("flagged volume / predicted pancreas volume")
    ax.set_ylabel("share of error voxels flagged")
    ax.set_title("Uncertainty > t against the model's errors")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sweep", action="store_true",
                        help="also tune the score's ramps (leave one patient out)")
    parser.add_argument("--cases-csv", type=Path,
                        help="re-score the cases of an earlier run instead of running the model")
    args = parser.parse_args(argv)
    bundle = load_bundle(args.bundle)
    base = {**DEFAULT_QUALITY, **bundle.inference.get("quality", {})}
    args.out.mkdir(parents=True, exist_ok=True)
    if args.cases_csv:
        with open(args.cases_csv, encoding="utf-8") as f:
            rows = [{k: _number(v) for k, v in r.items()} for r in csv.DictReader(f)]
        earlier = json.loads((args.cases_csv.parent / "summary.json").read_text())
        curve, ranking = earlier["coverage"], earlier["ranking"]
        for row, score in zip(rows, rescored(rows, base)):
            verdict_now = verdict(signals_of(row), base)
            row.update(score=score, status=verdict_now["status"])
    else:
        rows, curve, ranking = run_cases(bundle, read_data_spec(args.data))
        with open(args.out / "cases.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
            writer.writeheader()
            writer.writerows(rows)
        plot(curve, args.out / "coverage.png")
    summary = summarise(rows, curve, ranking, base, args.sweep)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(json.dumps({k: v for k, v in summary.items() if k not in ("coverage", "tuned_on_all")},
                     indent=1))
    for c in curve:
        print(f"t={c['threshold']}: errors flagged {c['error_share_flagged']:.3f}, flagged / "
              f"pancreas {c['flagged_over_pancreas']:.2f}")
    return 0


def _number(value: str):
    if value in ("True", "False"):
        return value == "True"
    try:
        return float(value)
    except ValueError:
        return value


if __name__ == "__main__":
    raise SystemExit(main())
