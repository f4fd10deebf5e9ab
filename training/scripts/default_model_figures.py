"""Every figure of the default model's card, through the engine's own predictor.

Run from the repository root (the bundle, its two training runs, the shared data)::

    python training/scripts/default_model_figures.py --bundle Resources/Models/pancreas-demo \
        --runs runs/coarse runs/fine --data ../shared/data --out runs/figures [--fast] \
        [--selection] [--lesion-curve [--validation-bundle runs/bundle_valA]]

``runs/bundle_valA``: the fine stage of ``training/configs/valsplit_a.yaml`` (trained without
0031-0040) behind the bundle's coarse stage, with the shipped inference settings::

    pancreas-ssl-train export --config training/configs/default_model.yaml \
        --checkpoint runs/valsplit/run_a/checkpoint --checkpoint Resources/Models/pancreas-demo \
        --out runs/bundle_valA

Writes to ``--out``:
- ``heldout/`` — ``pancreas-ssl-train evaluate`` of the bundle on the held-out NIH patients
  0041-0050 (``training/configs/eval_heldout_nih.yaml``): the engine's cascade on each slice;
  ``heldout_fast/`` the same in Fast mode (``--fast``); ``selection/`` on source patients
  0031-0040 (``--selection``; in-sample, where settings are chosen);
- ``figures.json`` — held-out pancreas Dice per slice and per patient, the per-stage diagnosis
  (coarse hit rate, box coverage, fine-stage Dice given the true box), lesion false positives,
  the 3 mm CT figures (its slices were training data), the lesion operating curve;
- ``learning_curves.png`` — training loss and held-out / training-slice figures of the
  snapshots saved during training (``train.snapshot_every``);
- ``ct3mm_levels.png`` — per axial level of the 3 mm CT: coarse-stage, engine and reference
  pancreas area;
- ``lesion_operating_curve.png`` / ``.csv`` — with ``--lesion-curve``: false-positive slices
  against synthetic-lesion detection per operating point, on source patients 0031-0040 (where
  the point is chosen: with ``--validation-bundle`` on that bundle's curve, a model of the same
  recipe whose fine stage was trained without them) and the held-out patients (where it is
  reported).

Per-patient Dice pools a patient's slices (2·|P∩T| / (|P|+|T|) over all its slices), the closest
thing to a volume Dice these slice folders allow.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from scipy import ndimage  # noqa: E402

from pancreas_ssl_seg import segment  # noqa: E402
from pancreas_ssl_seg.bundle import load_bundle  # noqa: E402
from pancreas_ssl_seg.cascade import run_coarse  # noqa: E402
from pancreas_ssl_seg.labels import LESION, PANCREAS  # noqa: E402
from pancreas_ssl_seg.pipeline import onto_input_grid  # noqa: E402
from pancreas_ssl_training.config import resolve_config  # noqa: E402
from pancreas_ssl_training.data.slice_datasets import ASSUMED_NIH_SPACING_MM  # noqa: E402
from pancreas_ssl_training.data.intensity_mapping import estimate_grey_mapping, to_hu  # noqa: E402
from pancreas_ssl_training.data.slices import load_nih_8bit_slices, read_canonical  # noqa: E402
from pancreas_ssl_training.evaluation import lesion_detection  # noqa: E402
from pancreas_ssl_training.evaluation.evaluate import (EvaluatedModel, _slice_image,  # noqa: E402
                                                       run_evaluation, stage_diagnostics)
from pancreas_ssl_training.evaluation.statistics import bootstrap_interval  # noqa: E402
from pancreas_ssl_training.evaluation.tables import read_csv  # noqa: E402
from pancreas_ssl_training.export import in_memory_bundle  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
HELD_OUT = [f"{p:04d}" for p in range(41, 51)]
SELECTION = [f"{p:04d}" for p in range(31, 41)]  # source patients: where choices are made
CURVE_TRAINING_PATIENTS = [f"{p:04d}" for p in range(4, 41, 4)]
REFERENCE_PANCREAS_LABEL = 7
CURVE_EVERY = 1000  # iterations between the snapshots a learning curve evaluates


def _float(value) -> float:
    return float("nan") if value in ("", None, "nan") else float(value)


def summary(values) -> dict[str, float]:
    array = np.asarray([v for v in values if not math.isnan(v)], float)
    if array.size == 0:
        return {"mean": None, "sd": None, "median": None, "n": 0}
    return {"mean": round(float(array.mean()), 3),
            "sd": round(float(array.std(ddof=1)), 3) if array.size > 1 else 0.0,
            "median": round(float(np.median(array)), 3), "n": int(array.size)}


def _share_at_least(values, threshold: float) -> float:
    """Share of ``values`` at or above ``threshold`` (NaN counts as below)."""
    return round(float(np.mean([v >= threshold for v in values])), 3)


def held_out_figures(bundle: Path, out: Path, spec: str = "eval_heldout_nih",
                     folder: str = "heldout") -> dict:
    """The evaluation of ``training/configs/<spec>.yaml`` through the engine, summarised."""
    run_evaluation(bundle, REPO / "training" / "configs" / f"{spec}.yaml", out / folder)
    rows = read_csv(out / folder / "cases.csv")
    pancreas = [r for r in rows if r["region"] == "pancreas"]
    lesion = [r for r in rows if r["region"] == "lesion"]
    pooled = defaultdict(lambda: [0.0, 0.0])
    for row in pancreas:  # 2|P n T| = Dice (|P| + |T|), exact from the row's counts
        total = _float(row["pred_voxels"]) + _float(row["true_voxels"])
        pooled[row["patient"]][0] += _float(row["dice"]) * total
        pooled[row["patient"]][1] += total
    per_patient = {p: a / b for p, (a, b) in sorted(pooled.items())}
    coverage = [_float(r["box_coverage"]) for r in pancreas]
    # what the fine stage finally looked at: the coarse box grown to its patch (and, with the
    # bundle's box_growth_mm, where the organ reached its sides); absent in older tables
    fine_coverage = [_float(r.get("fine_box_coverage", "nan")) for r in pancreas]
    return {
        "slices": len(pancreas), "patients": len(per_patient),
        "pancreas_dice_per_slice": summary(_float(r["dice"]) for r in pancreas),
        # 95 % bootstrap interval of that mean, resampling patients (their slices correlate)
        "pancreas_dice_per_slice_ci95": [round(v, 3) for v in bootstrap_interval(
            [_float(r["dice"]) for r in pancreas], [r["patient"] for r in pancreas])],
        "pancreas_dice_per_patient": summary(per_patient.values()),
        "pancreas_dice_per_patient_values": {p: round(v, 3) for p, v in per_patient.items()},
        "hd95_mm_per_slice": summary(_float(r["hd95_mm"]) for r in pancreas),
        "coarse_hit_rate": summary(_float(r["coarse_hit"]) for r in pancreas)["mean"],
        "box_coverage": summary(coverage),
        "box_holds_95pct_on_fraction_of_slices": _share_at_least(coverage, 0.95),
        "fine_box_coverage": summary(fine_coverage),
        "fine_box_holds_95pct_on_fraction_of_slices": _share_at_least(fine_coverage, 0.95),
        "fine_dice_true_box": summary(_float(r["dice_true_box"]) for r in pancreas),
        "lesion_free_slices_with_lesion": sum(_float(r["pred_voxels"]) > 0 for r in lesion),
        "lesion_free_slices": len(lesion),
    }


def ct3mm_figures(bundle_path: Path, data_root: Path, out: Path) -> dict:
    """The engine on the 3 mm CT against its reference pancreas (model-made), per level too."""
    ct_path = data_root / "ct-abdomen-3mm" / "example_ct.nii.gz"
    reference_path = data_root / "ct-abdomen-3mm" / "example_seg_fast_force_split.nii.gz"
    result = segment(ct_path, model=bundle_path, device="cpu")
    reference = sitk.GetArrayFromImage(sitk.ReadImage(str(reference_path))) \
        == REFERENCE_PANCREAS_LABEL
    predicted = result.labels >= PANCREAS
    spacing_zyx = result.image.GetSpacing()[::-1]
    distance = ndimage.distance_transform_edt(~reference, sampling=spacing_zyx)
    dice = 2 * (predicted & reference).sum() / max(1, predicted.sum() + reference.sum())
    # The coarse stage's own output per level, on the same canonical grid (LPS input here).
    canonical = read_canonical(ct_path, "CT image")
    bundle = load_bundle(bundle_path)  # Accurate mode, as segment() above: every coarse network
    coarse = run_coarse(canonical, bundle, torch.device("cpu"), 0.25,
                        members=bundle.members("coarse"))
    coarse_mask = onto_input_grid(coarse.foreground.astype(np.uint8), coarse.grid, canonical,
                                  is_label=True) > 0
    reference_canonical = sitk.GetArrayFromImage(read_canonical(reference_path, "labels")) \
        == REFERENCE_PANCREAS_LABEL
    engine_canonical = sitk.GetArrayFromImage(
        sitk.DICOMOrient(result.to_sitk(result.labels), "LPS")) >= PANCREAS
    z_mm = np.arange(canonical.GetSize()[2]) * canonical.GetSpacing()[2]
    fig, ax = plt.subplots(figsize=(6, 4))
    pixel_cm2 = canonical.GetSpacing()[0] * canonical.GetSpacing()[1] / 100
    for mask, name in ((reference_canonical, "reference (TotalSegmentator)"),
                       (coarse_mask, "coarse stage"), (engine_canonical, "engine output")):
        ax.plot(z_mm, mask.sum(axis=(1, 2)) * pixel_cm2, label=name)
    ax.set_xlabel("axial level (mm from the first slice, foot to head)")
    ax.set_ylabel("pancreas area (cm²)")
    ax.set_title("3 mm example CT: where each stage finds pancreas")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "ct3mm_levels.png", dpi=110)
    plt.close(fig)
    levels = lambda mask: np.flatnonzero(mask.any(axis=(1, 2)))  # noqa: E731
    return {"dice": round(float(dice), 3),
            "predicted_ml": round(float(predicted.sum() * np.prod(spacing_zyx) / 1000), 2),
            "reference_ml": round(float(reference.sum() * np.prod(spacing_zyx) / 1000), 2),
            "max_distance_mm_from_reference": round(float(distance[predicted].max()), 1)
            if predicted.any() else None,
            "predicted_lesion_ml": round(float((result.labels == LESION).sum()
                                               * np.prod(spacing_zyx) / 1000), 2),
            "coarse_levels": [int(levels(coarse_mask).min()), int(levels(coarse_mask).max())]
            if coarse_mask.any() else None,
            "reference_levels": [int(levels(reference_canonical).min()),
                                 int(levels(reference_canonical).max())]}


def _slices(data_root: Path, patients):
    """(case name, canonical one-slice HU image, labels (1, y, x)) of 8-bit NIH slices."""
    mapping = estimate_grey_mapping(data_root, "percentile")
    for sample in load_nih_8bit_slices(data_root / "nih-pancreas-slices-8bit", patients):
        yield sample.case, _slice_image(to_hu(sample.image, mapping), ASSUMED_NIH_SPACING_MM), \
            sample.label[None]


def _snapshots(run: Path, stage: str) -> dict[int, Path]:
    pattern = re.compile(rf"{stage}-(\d+)\.safetensors$")
    return {int(m.group(1)): p for p in (run / "snapshots").glob(f"{stage}-*.safetensors")
            if (m := pattern.search(p.name))}


def learning_curves(runs: list[Path], bundle_path: Path, data_root: Path, out: Path) -> dict:
    """Held-out and training-slice figures of every snapshot, and the training loss."""
    configs = {}
    for run in runs:
        config = resolve_config(json.loads(json.dumps(
            __import__("yaml").safe_load((run / "config.yaml").read_text(encoding="utf-8")))))
        for stage in config["stages"]:
            configs[stage] = (run, config)
    final = load_bundle(bundle_path)
    sets = {"held-out": list(_slices(data_root, HELD_OUT)),
            "training": list(_slices(data_root, CURVE_TRAINING_PATIENTS))}
    device = torch.device("cpu")
    curves: dict[str, dict[str, list]] = {}
    for stage, key in (("coarse", "coarse_hit"), ("fine", "dice_true_box")):
        run, config = configs[stage]
        for iteration, path in sorted(_snapshots(run, stage).items()):
            if iteration % CURVE_EVERY:
                continue
            states = {name: {k.removeprefix(f"{name}."): v
                             for k, v in final.stage_weights[name].items()}
                      for name in ("coarse", "fine")}
            states[stage] = load_file(str(path))
            bundle = in_memory_bundle({**config, "stages": {
                name: configs[name][1]["stages"][name] for name in ("coarse", "fine")}}, states)
            # Fast mode (one pass): the curve's shape, at a third of Accurate's cost.
            model = EvaluatedModel(bundle, f"{stage} snapshot {iteration}", "cascade", "cascade",
                                   tta_flip=False)
            for name, cases in sets.items():
                rows = [stage_diagnostics(model, image, truth, device)
                        for _, image, truth in cases]
                values = [r.get(key, float("nan")) for r in rows]
                curve = curves.setdefault(f"{stage} {key} ({name})", {"iteration": [], "value": []})
                curve["iteration"].append(iteration)
                curve["value"].append(summary(values)["mean"])
                if stage == "coarse":
                    coverage = curves.setdefault(f"coarse box_coverage ({name})",
                                                 {"iteration": [], "value": []})
                    coverage["iteration"].append(iteration)
                    coverage["value"].append(summary(r["box_coverage"] for r in rows)["mean"])
    losses = {}
    for stage, (run, _) in configs.items():
        with open(run / "train_log.csv", newline="", encoding="utf-8") as handle:
            rows = [r for r in csv.DictReader(handle) if r["stage"] == stage]
        losses[stage] = ([int(r["iteration"]) for r in rows],
                         [float(r["loss_total"]) for r in rows])
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for stage, (its, values) in losses.items():
        window = max(1, len(values) // 50)
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        axes[0].plot(its[window - 1:], smooth, label=f"{stage} (running mean)")
    axes[0].set_title("training loss (Dice + CE)")
    for name, curve in curves.items():
        ax = axes[1] if name.startswith("coarse") else axes[2]
        ax.plot(curve["iteration"], curve["value"], marker="o", label=name)
    axes[1].set_title("coarse stage: hit rate and box coverage")
    axes[2].set_title("fine stage: pancreas Dice given the true box")
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "learning_curves.png", dpi=110)
    plt.close(fig)
    return curves


LESION_CURVE_LABELS = {"selection": "source 0031-0040 (in-sample)",
                       "validation": "source 0031-0040, fine stage trained without them",
                       "held-out": "held-out 0041-0050"}


def lesion_curve(bundle_path: Path, data_root: Path, out: Path,
                 validation_bundle: Path | None = None) -> dict:
    """The operating curve on source patients 0031-0040 and held-out patients (report). The
    point is chosen on the source patients: with ``validation_bundle`` (the same recipe trained
    without them, ``valsplit_a.yaml``) on that bundle's curve there, whose fine stage has not
    seen them; else on the shipped bundle's own (in-sample) curve."""
    device = torch.device("cpu")
    curves = [("selection", bundle_path, SELECTION), ("held-out", bundle_path, HELD_OUT)]
    if validation_bundle is not None:
        curves.insert(1, ("validation", validation_bundle, SELECTION))
    rows = {}
    for name, path, patients in curves:
        cases = [lesion_detection.SliceCase(case, image, truth >= PANCREAS)
                 for case, image, truth in _slices(data_root, patients)]
        rows[name] = lesion_detection.operating_curve(load_bundle(path), cases, device)
    chosen_on = "validation" if validation_bundle is not None else "selection"
    chosen = lesion_detection.choose_operating_point(rows[chosen_on])
    point = (chosen["lesion_probability_threshold"], chosen["lesion_min_area_mm2"])
    reported = next(r for r in rows["held-out"]
                    if (r["lesion_probability_threshold"], r["lesion_min_area_mm2"]) == point)
    with open(out / "lesion_operating_curve.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["set", *rows["selection"][0]])
        writer.writeheader()
        for name, table in rows.items():
            writer.writerows({"set": name, **r} for r in table)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for name, marker in zip(rows, "o^s"):
        ax.scatter([r["false_positive_rate"] for r in rows[name]],
                   [r["detection_rate"] for r in rows[name]], marker=marker, alpha=0.6,
                   label=LESION_CURVE_LABELS[name])
    ax.scatter([reported["false_positive_rate"]], [reported["detection_rate"]], s=150,
               facecolors="none", edgecolors="red", label=f"chosen {point} (held-out)")
    ax.axvline(0.1, color="grey", ls="--", lw=0.8)
    ax.axhline(0.9, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("lesion-free slices with a predicted lesion")
    ax.set_ylabel("synthetic lesions (variant, >= 10 mm) found")
    ax.set_title("Lesion operating points (threshold, min. area mm²)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "lesion_operating_curve.png", dpi=110)
    plt.close(fig)
    return {f"chosen_on_{chosen_on}": chosen, "held_out_at_chosen": reported}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--runs", type=Path, nargs="*", default=[],
                        help="training run folders (learning curves from their snapshots)")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--lesion-curve", action="store_true",
                        help="also measure the lesion operating curve (slow)")
    parser.add_argument("--validation-bundle", type=Path,
                        help="choose the lesion operating point on this bundle's curve on "
                             "0031-0040 (its fine stage trained without them)")
    parser.add_argument("--fast", action="store_true",
                        help="also the held-out figures of Fast mode")
    parser.add_argument("--selection", action="store_true",
                        help="also the figures on source patients 0031-0040 (in-sample; where "
                             "inference settings are chosen)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    figures = {"bundle": str(args.bundle), "held_out": held_out_figures(args.bundle, args.out)}
    if args.fast:
        figures["held_out_fast"] = held_out_figures(args.bundle, args.out,
                                                    "eval_heldout_nih_fast", "heldout_fast")
    if args.selection:
        figures["selection_in_sample"] = held_out_figures(args.bundle, args.out,
                                                          "eval_selection_nih", "selection")
    figures["ct3mm_in_sample"] = ct3mm_figures(args.bundle, args.data, args.out)
    if args.lesion_curve:
        figures["lesion_operating_point"] = lesion_curve(args.bundle, args.data, args.out,
                                                         args.validation_bundle)
    if args.runs:
        figures["learning_curves"] = learning_curves(args.runs, args.bundle, args.data, args.out)
    (args.out / "figures.json").write_text(json.dumps(figures, indent=2) + "\n",
                                           encoding="utf-8")
    print(json.dumps({k: v for k, v in figures.items() if k != "learning_curves"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
