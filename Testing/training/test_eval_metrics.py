"""Per-case metrics: spacing in mm, pancreas-includes-lesion regions, empty-region conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pancreas_ssl_training.evaluation.metrics import case_metrics, mask_dice


def _square(shape=(40, 40), rows=(10, 20), cols=(10, 20), value=1) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.uint8)
    labels[rows[0]:rows[1], cols[0]:cols[1]] = value
    return labels


def _by_region(rows):
    return {row["region"]: row for row in rows}


def test_identical_masks_are_perfect():
    truth = _square()
    pancreas = _by_region(case_metrics(truth, truth, (1.0, 1.0)))["pancreas"]
    assert pancreas["dice"] == pytest.approx(1.0)
    assert pancreas["hd95_mm"] == pytest.approx(0.0)
    assert pancreas["surface_dice"] == pytest.approx(1.0)


def test_shift_gives_known_dice_and_hd95_scaled_by_spacing_of_the_shift_axis():
    truth, pred = _square(), _square(cols=(13, 23))  # 3 columns to the side
    unit = _by_region(case_metrics(pred, truth, (1.0, 1.0)))["pancreas"]
    assert unit["dice"] == pytest.approx(0.7)  # overlap 70 of 100 + 100 pixels
    assert unit["hd95_mm"] == pytest.approx(3.0)
    # spacing is per array axis: (rows, columns); only the column spacing stretches this shift
    assert _by_region(case_metrics(pred, truth, (1.0, 2.0)))["pancreas"]["hd95_mm"] == \
        pytest.approx(6.0)
    assert _by_region(case_metrics(pred, truth, (2.0, 1.0)))["pancreas"]["hd95_mm"] == \
        pytest.approx(3.0)


def test_surface_dice_depends_on_tolerance_in_mm():
    truth, pred = _square(), _square(cols=(13, 23))
    strict = _by_region(case_metrics(pred, truth, (1.0, 1.0), surface_tolerance_mm=1.0))
    loose = _by_region(case_metrics(pred, truth, (1.0, 1.0), surface_tolerance_mm=3.0))
    assert strict["pancreas"]["surface_dice"] < 0.8
    assert loose["pancreas"]["surface_dice"] == pytest.approx(1.0)


def test_pancreas_region_counts_lesion_voxels_as_pancreas():
    truth = _square()
    pred = truth.copy()
    pred[12:16, 12:16] = 2  # a lesion inside the predicted organ
    rows = _by_region(case_metrics(pred, truth, (0.8, 0.8)))
    assert rows["pancreas"]["dice"] == pytest.approx(1.0)
    # a lesion predicted where the truth has none: Dice 0, no distance to report
    assert rows["lesion"]["dice"] == 0.0
    assert rows["lesion"]["surface_dice"] == 0.0
    assert math.isnan(rows["lesion"]["hd95_mm"])
    assert rows["lesion"]["pred_voxels"] == 16 and rows["lesion"]["true_voxels"] == 0


def test_region_absent_in_both_is_nan_and_missed_organ_scores_zero():
    truth = _square()
    empty = np.zeros_like(truth)
    rows = _by_region(case_metrics(empty, truth, (1.0, 1.0)))
    assert rows["pancreas"]["dice"] == 0.0 and math.isnan(rows["pancreas"]["hd95_mm"])
    assert all(math.isnan(rows["lesion"][k]) for k in ("dice", "hd95_mm", "surface_dice"))


def test_volumes_use_three_spacings():
    truth = np.zeros((12, 30, 30), dtype=np.uint8)
    truth[3:8, 10:20, 10:20] = 1
    pred = np.roll(truth, 2, axis=0)  # two slices up
    pancreas = _by_region(case_metrics(pred, truth, (3.0, 0.7, 0.7)))["pancreas"]
    assert pancreas["dice"] == pytest.approx(0.6)
    assert pancreas["hd95_mm"] == pytest.approx(6.0)


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="shape"):
        case_metrics(np.zeros((4, 4)), np.zeros((4, 5)), (1.0, 1.0))
    with pytest.raises(ValueError, match="one value per array axis"):
        case_metrics(np.zeros((4, 4)), np.zeros((4, 4)), (1.0, 1.0, 1.0))


def test_mask_dice_counts_overlap_and_names_the_empty_case():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    assert np.isnan(mask_dice(a, b)) and mask_dice(a, b, empty=1.0) == 1.0
    a[0, :3] = True  # 3 voxels
    b[0, 1:] = True  # 3 voxels, 2 shared
    assert mask_dice(a, b) == pytest.approx(2 * 2 / 6)
    assert mask_dice(a, np.zeros_like(b)) == 0.0
