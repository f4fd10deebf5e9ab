"""Held-out figures for a slice-wise bundle's model card (the shipped ``pancreas-demo``).

Run from the repository root::

    python training/scripts/default_model_figures.py --bundle Resources/Models/pancreas-demo \
        --data ../shared/data --out figures.json [--engine-labels DEMO/example_ct_labels.nii.gz]

- fine stage: Dice (pancreas = labels 1 or 2) on the NIH 8-bit slices of the held-out patients,
  mapped to HU with the percentile fit the training used; slices with any lesion pixel predicted
  (none of these slices has a lesion).
- coarse stage on the same slices at its own spacing: hit rate (the prediction touches the
  manual pancreas) and coverage (fraction of manual pancreas pixels inside the predicted box grown
  by the fine stage's margin: what the cascade's fine stage would get to see).
- with ``--engine-labels``: Dice of the engine's labels on the 3 mm CT against that CT's
  label 7, a reference made by another model (TotalSegmentator), not a manual label.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

from pancreas_ssl_training.data.datasets import ASSUMED_NIH_SPACING_MM
from pancreas_ssl_training.data.intensity_mapping import estimate_grey_mapping, to_hu
from pancreas_ssl_training.data.slices import load_nih_8bit_slices, read_canonical
from pancreas_ssl_training.evaluation.evaluate import load_model, predict_probabilities
from pancreas_ssl_training.evaluation.metrics import case_metrics

HELD_OUT_PATIENTS = [f"{p:04d}" for p in range(41, 51)]
REFERENCE_PANCREAS_LABEL = 7


def mean_sd(values: list[float]) -> dict[str, float]:
    array = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    return {"mean": round(float(array.mean()), 3), "sd": round(float(array.std(ddof=1)), 3),
            "n": int(array.size)}


def box_coverage(prediction: np.ndarray, truth: np.ndarray, margin_px: int) -> float:
    """Fraction of ``truth`` inside the bounding box of ``prediction`` grown by ``margin_px``."""
    if not prediction.any():
        return 0.0
    rows, cols = np.nonzero(prediction)
    box = np.zeros_like(truth, dtype=bool)
    box[max(0, rows.min() - margin_px):rows.max() + margin_px + 1,
        max(0, cols.min() - margin_px):cols.max() + margin_px + 1] = True
    return float((box & truth).sum() / truth.sum())


def held_out_figures(bundle: Path, data_root: Path) -> dict:
    mapping = estimate_grey_mapping(data_root, "percentile")
    samples = load_nih_8bit_slices(data_root / "nih-pancreas-slices-8bit", HELD_OUT_PATIENTS)
    fine, coarse = load_model(bundle, "fine"), load_model(bundle, "coarse")
    margin_mm = json.loads((bundle / "metadata.json").read_text(encoding="utf-8"))["stages"]["fine"]["margin_mm"]
    margin_px = int(round(margin_mm / ASSUMED_NIH_SPACING_MM[0]))
    dice, lesion_slices, hits, coverage, per_patient = [], 0, 0, [], {}
    for sample in samples:
        image = sitk.GetImageFromArray(to_hu(sample.image, mapping))
        image.SetSpacing(ASSUMED_NIH_SPACING_MM)
        truth = sample.label > 0
        fine_labels = predict_probabilities(fine, image).argmax(axis=0)
        row = case_metrics(fine_labels, sample.label, ASSUMED_NIH_SPACING_MM[::-1])[0]
        dice.append(row["dice"])
        per_patient.setdefault(sample.patient, []).append(row["dice"])
        lesion_slices += int((fine_labels == 2).any())
        coarse_foreground = predict_probabilities(coarse, image).argmax(axis=0) > 0
        hits += int((coarse_foreground & truth).any())
        coverage.append(box_coverage(coarse_foreground, truth, margin_px))
    return {
        "held_out_patients": HELD_OUT_PATIENTS, "slices": len(samples),
        "nih_spacing_assumed_mm": list(ASSUMED_NIH_SPACING_MM),
        "grey_to_hu": mapping.to_dict(),
        "fine_pancreas_dice_per_slice": mean_sd(dice),
        "fine_pancreas_dice_per_patient": mean_sd([float(np.mean(v))
                                                   for v in per_patient.values()]),
        "fine_slices_with_predicted_lesion": lesion_slices,
        "coarse_hit_rate": round(hits / len(samples), 3),
        "coarse_box_coverage_with_margin": mean_sd(coverage),
    }


def engine_vs_reference(labels_path: Path, data_root: Path) -> dict:
    reference_path = data_root / "ct-abdomen-3mm" / "example_seg_fast_force_split.nii.gz"
    engine = sitk.GetArrayFromImage(read_canonical(labels_path, "engine label map"))
    reference = sitk.GetArrayFromImage(read_canonical(reference_path, "reference label map"))
    truth = (reference == REFERENCE_PANCREAS_LABEL).astype(np.uint8)
    spacing = read_canonical(reference_path, "reference label map").GetSpacing()[::-1]
    row = case_metrics(engine, truth, spacing)[0]
    components = ndimage.label(engine > 0)[1]
    return {"reference": "TotalSegmentator label 7 (model-made, not manual)",
            "pancreas_dice": round(row["dice"], 3), "hd95_mm": round(row["hd95_mm"], 1),
            "engine_pancreas_ml": round(float((engine > 0).sum()) * float(np.prod(spacing)) / 1000,
                                        1),
            "reference_pancreas_ml": round(float(truth.sum()) * float(np.prod(spacing)) / 1000, 1),
            "engine_lesion_voxels": int((engine == 2).sum()), "engine_components": int(components)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--engine-labels", type=Path, default=None,
                        help="the engine's <case>_labels.nii.gz for the 3 mm example CT")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the machine is shared with training runs
    figures = {"command": " ".join(["python", "training/scripts/default_model_figures.py",
                                    *(argv if argv is not None else sys.argv[1:])]),
               **held_out_figures(args.bundle, args.data)}
    if args.engine_labels is not None:
        figures["engine_on_3mm_ct"] = engine_vs_reference(args.engine_labels, args.data)
    args.out.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
