"""Calibration: ECE separates calibrated from over-confident probabilities; error-uncertainty
overlap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pancreas_ssl_training.evaluation.calibration import (error_uncertainty_overlap,
                                                          expected_calibration_error)


def _two_class_probabilities(p_foreground: np.ndarray) -> np.ndarray:
    """(3, *shape) softmax-like probabilities with no lesion mass."""
    return np.stack([1 - p_foreground, p_foreground, np.zeros_like(p_foreground)])


def test_ece_is_small_for_calibrated_and_large_for_overconfident_probabilities():
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 1, size=(200, 200)).astype(np.float32)
    calibrated_truth = (rng.uniform(0, 1, size=p.shape) < p).astype(np.uint8)
    calibrated = expected_calibration_error(_two_class_probabilities(p), calibrated_truth)
    assert calibrated[1] < 0.02

    # says 99 % pancreas everywhere, right only half the time
    confident = np.full((200, 200), 0.99, dtype=np.float32)
    coin_truth = (rng.uniform(0, 1, size=p.shape) < 0.5).astype(np.uint8)
    overconfident = expected_calibration_error(_two_class_probabilities(confident), coin_truth)
    assert overconfident[1] == pytest.approx(0.49, abs=0.02)
    assert set(overconfident) == {1, 2}


def test_ece_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="do not match"):
        expected_calibration_error(np.zeros((3, 4, 4), np.float32), np.zeros((4, 5), np.uint8))


def test_uncertainty_on_exactly_the_errors_overlaps_perfectly():
    truth = np.zeros((20, 20), dtype=np.uint8)
    truth[5:15, 5:15] = 1
    pred = truth.copy()
    pred[5:15, 5:8] = 0  # three missed columns
    errors = (pred != truth).astype(np.float32)
    perfect = error_uncertainty_overlap(pred, truth, errors * 0.9, threshold=0.5)
    assert perfect["error_uncertainty_dice"] == pytest.approx(1.0)
    assert perfect["error_voxels"] == 30 and perfect["uncertain_voxels"] == 30

    elsewhere = np.zeros((20, 20), dtype=np.float32)
    elsewhere[0:3, 0:10] = 0.9  # uncertain far from the errors
    disjoint = error_uncertainty_overlap(pred, truth, elsewhere, threshold=0.5)
    assert disjoint["error_uncertainty_dice"] == 0.0
    assert disjoint["uncertain_precision"] == 0.0 and disjoint["error_recall"] == 0.0

    half = errors.copy()
    half[5:15, 5] = 0  # a third of the errors left unmarked
    partial = error_uncertainty_overlap(pred, truth, half, threshold=0.5)
    assert partial["error_recall"] == pytest.approx(2 / 3)
    assert partial["uncertain_precision"] == pytest.approx(1.0)


def test_overlap_is_nan_with_no_error_and_no_uncertainty():
    truth = np.ones((5, 5), dtype=np.uint8)
    result = error_uncertainty_overlap(truth, truth, np.zeros((5, 5)), threshold=0.5)
    assert math.isnan(result["error_uncertainty_dice"])
    assert math.isnan(result["uncertain_precision"]) and math.isnan(result["error_recall"])
