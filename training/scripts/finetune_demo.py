"""The corrections -> fine-tuned model loop, end to end on the data we have.

Held-out NIH patients 0041-0045 play the reviewer's corrected cases: each of their slices (HU by
the same 8-bit mapping as the evaluation) is written as a corrected case with the engine's
corrections writer, as the Slicer module's *Export corrected case* would. The shipped model is
fine-tuned on them (``pancreas-ssl-train finetune``); parent and child are then measured through
the engine on the *other* held-out patients 0046-0050 and on the 3 mm CT (training data of the
parent: does fine-tuning make it forget?). Run from the repository root::

    python training/scripts/finetune_demo.py --bundle Resources/Models/pancreas-demo \
        --out runs/finetune_demo [--iterations 300] [--replay training/configs/default_model.yaml]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pancreas_ssl_seg.bundle import load_bundle
from pancreas_ssl_seg.corrections import write_correction_case
from pancreas_ssl_training.evaluation.evaluate import labelled_cases, read_data_spec
from pancreas_ssl_training.finetune import finetune, organ_dice

NIH_8BIT = "../shared/data/nih-pancreas-slices-8bit"
GREY_TO_HU = {"data_root": "../shared/data", "method": "percentile"}
CORRECTED = ["0041", "0042", "0043", "0044", "0045"]
OTHER = ["0046", "0047", "0048", "0049", "0050"]


def nih_spec(patients: list[str]) -> dict:
    return {"nih_8bit": {"path": NIH_8BIT, "patients": patients}, "grey_to_hu": GREY_TO_HU}


def write_corrections(root: Path, bundle) -> int:
    count = 0
    for info, image, labels in labelled_cases(nih_spec(CORRECTED)):
        label_image = sitk.GetImageFromArray(labels.astype(np.uint8))
        label_image.CopyInformation(image)
        write_correction_case(root, info["case"], image, label_image, bundle.name,
                              bundle.version, ["Pancreas"])
        count += 1
    return count


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--replay", type=Path, default=None,
                        help="training config to replay (e.g. training/configs/default_model.yaml)")
    args = parser.parse_args(argv)
    parent = load_bundle(args.bundle)
    corrections = args.out / "corrections"
    cases = write_corrections(corrections, parent) if not corrections.is_dir() else len(
        [p for p in corrections.iterdir() if p.is_dir()])
    started = time.time()
    record = finetune(parent.path, corrections, args.out / "bundle", iterations=args.iterations,
                      lr=args.lr, replay=args.replay)
    child = load_bundle(args.out / "bundle")
    ct3mm = read_data_spec("training/configs/eval_ct3mm.yaml")
    rows = []
    for name, spec in (("other held-out NIH patients 0046-0050 (slices)", nih_spec(OTHER)),
                       ("3 mm CT (parent's training data)", ct3mm)):
        pairs = [(image, labels) for _, image, labels in labelled_cases(spec)]
        rows.append({"data": name, "cases": len(pairs), "parent": organ_dice(parent, pairs),
                     "finetuned": organ_dice(child, pairs)})
    result = {"corrected_cases": cases, "iterations": args.iterations, "lr": args.lr,
              "seconds": round(time.time() - started, 1), "finetune": record, "rows": rows}
    (args.out / "result.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    print("| data | cases | parent Dice | fine-tuned Dice |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row['data']} | {row['cases']} | {row['parent']:.3f} | {row['finetuned']:.3f} |")
    print(f"validation part of the corrections ({len(record['validation_cases'])} slices): parent "
          f"{record['validation_dice_parent']:.3f}, fine-tuned "
          f"{record['validation_dice_finetuned']:.3f}; {result['seconds']} s in all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
