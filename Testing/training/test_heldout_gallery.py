"""The held-out gallery's choices: which slices it shows and what part of each it draws."""

from __future__ import annotations

import sys

import numpy as np

from conftest import REPO_ROOT
from pancreas_ssl_training.evaluation.tables import write_csv

sys.path.insert(0, str(REPO_ROOT / "training" / "scripts"))
import heldout_gallery  # noqa: E402


def test_slices_are_picked_at_evenly_spaced_ranks_worst_first(tmp_path):
    dice = [0.5, 0.9, 0.1, 0.7, 0.3, 0.0, 0.8, 0.6, 0.2]  # 9 slices
    rows = [{"case": f"c{i}", "region": region, "dice": value if region == "pancreas" else ""}
            for i, value in enumerate(dice) for region in ("pancreas", "lesion")]
    write_csv(rows, tmp_path / "cases.csv")
    picks = heldout_gallery.ranked_cases(tmp_path / "cases.csv", 3)
    assert picks == [("c5", 0.0), ("c0", 0.5), ("c1", 0.9)]  # ranks 0, 4 and 8 of 9
    assert len(heldout_gallery.ranked_cases(tmp_path / "cases.csv", 20)) == 9


def test_crop_covers_every_outline_with_a_margin_inside_the_slice():
    truth, predicted = np.zeros((100, 120), bool), np.zeros((100, 120), bool)
    truth[40:50, 30:60] = True
    predicted[45:70, 50:115] = True
    rows, cols = heldout_gallery.crop_around(truth, predicted, margin=10)
    assert (rows.start, rows.stop) == (30, 80) and (cols.start, cols.stop) == (20, 120)
    empty = np.zeros((100, 120), bool)
    assert heldout_gallery.crop_around(empty, empty) == (slice(None), slice(None))
