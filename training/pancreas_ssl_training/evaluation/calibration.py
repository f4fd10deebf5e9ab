"""How well a model's probabilities and uncertainty match its actual errors.

- Expected calibration error (ECE) per class, one-vs-rest, with MONAI's ``CalibrationErrorMetric``:
  voxels binned by the predicted probability of a class; ECE is the voxel-weighted mean gap between
  each bin's mean probability and the fraction of its voxels that truly are that class.
- Error–uncertainty overlap: Dice between the error mask (prediction ≠ truth) and the
  high-uncertainty mask (uncertainty > threshold). 1 means the uncertainty marks exactly the wrong
  voxels, which is what a reviewer needs; precision and recall of the error mask are given too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import CalibrationErrorMetric, compute_dice

DEFAULT_BINS = 15


def expected_calibration_error(probabilities: np.ndarray, true_labels: np.ndarray,
                               classes: Sequence[int] = (1, 2),
                               n_bins: int = DEFAULT_BINS) -> dict[int, float]:
    """ECE of each class in ``classes``.

    ``probabilities``: ``(C, *spatial)`` softmax output; ``true_labels``: ``(*spatial)`` integers
    in ``0..C-1``. A class that no voxel has and that the model never gives probability still gets
    an ECE (near 0: it is confidently absent), which is the calibration it shows.
    """
    if probabilities.shape[1:] != true_labels.shape:
        raise ValueError(f"probabilities {probabilities.shape} do not match labels "
                         f"{true_labels.shape} (expected (C, *label shape))")
    n_classes = probabilities.shape[0]
    one_hot = np.stack([true_labels == c for c in range(n_classes)]).astype(np.float32)
    metric = CalibrationErrorMetric(num_bins=n_bins, include_background=True,
                                    calibration_reduction="expected", metric_reduction="none")
    ece = metric(torch.from_numpy(probabilities[None].astype(np.float32)),
                 torch.from_numpy(one_hot[None]))
    return {int(c): float(ece[0, c]) for c in classes}


def error_uncertainty_overlap(pred_labels: np.ndarray, true_labels: np.ndarray,
                              uncertainty: np.ndarray, threshold: float) -> dict[str, Any]:
    """Dice, precision and recall of the high-uncertainty mask against the error mask.

    NaN where undefined: Dice when there is neither error nor uncertainty, precision when nothing
    is uncertain, recall when there is no error.
    """
    if not pred_labels.shape == true_labels.shape == uncertainty.shape:
        raise ValueError(f"shapes differ: prediction {pred_labels.shape}, truth "
                         f"{true_labels.shape}, uncertainty {uncertainty.shape}")
    errors = pred_labels != true_labels
    uncertain = uncertainty > threshold
    n_errors, n_uncertain = int(errors.sum()), int(uncertain.sum())
    n_both = int(np.logical_and(errors, uncertain).sum())

    def ratio(numerator: float, denominator: float) -> float:
        return numerator / denominator if denominator else math.nan

    dice = math.nan if n_errors + n_uncertain == 0 else float(compute_dice(
        torch.from_numpy(uncertain[None, None]), torch.from_numpy(errors[None, None]),
        ignore_empty=False)[0, 0])
    return {"error_uncertainty_dice": dice,
            "uncertain_precision": ratio(n_both, n_uncertain),
            "error_recall": ratio(n_both, n_errors),
            "error_voxels": n_errors, "uncertain_voxels": n_uncertain}
