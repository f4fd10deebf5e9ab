"""What a held-out Dice looks like: held-out slices from the worst to the best, as users get them.

Picks slices of the held-out NIH patients 0041-0050 at evenly spaced ranks of their pancreas Dice
(from an evaluation's ``cases.csv``), runs each through ``segment()`` (the engine's own predictor,
Accurate mode) and draws the CT around the pancreas with the reference outline (manual, green)
and the model's pancreas (orange) and lesion (red) outlines. Run from the repository root::

    python training/scripts/heldout_gallery.py --bundle Resources/Models/pancreas-demo \
        --cases training/results/default_model/heldout_cases.csv \
        --out training/results/default_model/heldout_gallery.png
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import SimpleITK as sitk  # noqa: E402
import torch  # noqa: E402

from pancreas_ssl_seg import segment  # noqa: E402
from pancreas_ssl_seg.display import SOFT_TISSUE_WINDOW_HU  # noqa: E402
from pancreas_ssl_seg.labels import LESION, PANCREAS  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from default_model_figures import HELD_OUT, _slices  # noqa: E402

CROP_MARGIN_PX = 40


def ranked_cases(cases_csv: Path, count: int) -> list[tuple[str, float]]:
    """(case, Dice) of ``count`` pancreas rows at evenly spaced ranks, worst first."""
    with open(cases_csv, newline="", encoding="utf-8") as handle:
        rows = sorted(((r["case"], float(r["dice"])) for r in csv.DictReader(handle)
                       if r["region"] == "pancreas"), key=lambda row: row[1])
    picks = np.unique(np.linspace(0, len(rows) - 1, count).round().astype(int))
    return [rows[i] for i in picks]


def crop_around(*masks: np.ndarray, margin: int = CROP_MARGIN_PX) -> tuple[slice, slice]:
    """Rows and columns covering every mask, grown by ``margin`` (the whole slice if empty)."""
    union = np.logical_or.reduce(masks)
    if not union.any():
        return slice(None), slice(None)
    rows, cols = np.flatnonzero(union.any(axis=1)), np.flatnonzero(union.any(axis=0))
    size = union.shape
    return (slice(max(0, rows[0] - margin), min(size[0], rows[-1] + margin + 1)),
            slice(max(0, cols[0] - margin), min(size[1], cols[-1] + margin + 1)))


def draw(ax, hu: np.ndarray, truth: np.ndarray, labels: np.ndarray, title: str) -> None:
    window = crop_around(truth, labels >= PANCREAS)
    ax.imshow(hu[window], cmap="gray", vmin=SOFT_TISSUE_WINDOW_HU[0],
              vmax=SOFT_TISSUE_WINDOW_HU[1])
    for mask, colour in ((truth, "lime"), (labels >= PANCREAS, "orange"),
                         (labels == LESION, "red")):
        if mask[window].any():
            ax.contour(mask[window].astype(float), levels=[0.5], colors=colour, linewidths=1.2)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--cases", type=Path, required=True,
                        help="cases.csv of the bundle's held-out evaluation")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    picks = ranked_cases(args.cases, args.count)
    slices = {case: (image, truth) for case, image, truth in _slices(args.data, HELD_OUT)}
    columns = 4
    rows = -(-len(picks) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.4 * rows + 0.6))
    for ax, (case, dice) in zip(np.ravel(axes), picks):
        image, truth = slices[case]
        result = segment(image, model=args.bundle, device="cpu")
        draw(ax, sitk.GetArrayFromImage(image)[0], truth[0] >= PANCREAS, result.labels[0],
             f"{case.removeprefix('PANCREAS_')}: Dice {dice:.2f}")
    for ax in np.ravel(axes)[len(picks):]:
        ax.axis("off")
    fig.suptitle("Held-out NIH slices, worst to best pancreas Dice (engine, Accurate mode)\n"
                 "green: manual reference, orange: model's pancreas, red: model's lesion",
                 fontsize=10)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(f"{len(picks)} slices drawn to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
