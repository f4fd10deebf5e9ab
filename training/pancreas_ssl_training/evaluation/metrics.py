"""Overlap and surface metrics per case and per region, with voxel spacing (MONAI metrics).

Regions, not raw label values, are scored: ``pancreas`` is every voxel labelled pancreas **or**
lesion (a lesion lies inside the organ, and manual pancreas masks include tumours), ``lesion`` is
label 2 alone. Conventions where a region is empty:

- truth and prediction both empty: every metric is NaN (nothing to score; averages skip it);
- one of them empty: Dice and surface Dice are 0, HD95 is NaN (no distance between an empty set
  and a surface; MONAI returns NaN or inf there and a table of millimetres must not average inf).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric, SurfaceDiceMetric

DEFAULT_REGIONS: dict[str, tuple[int, ...]] = {"pancreas": (1, 2), "lesion": (2,)}
DEFAULT_SURFACE_TOLERANCE_MM = 2.0
METRIC_NAMES = ("dice", "hd95_mm", "surface_dice")


def mask_dice(a: np.ndarray, b: np.ndarray, empty: float = math.nan) -> float:
    """Dice of two boolean masks; ``empty`` when both are empty (NaN: nothing to score).

    Plain numpy, not MONAI's ``DiceMetric`` (which :func:`case_metrics` uses): callers score
    single mask pairs in loops (quality calibration, fine-tuning) where one-hot tensors and the
    metric's batch buffers cost more than the count, and the empty case must be explicit."""
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    return 2.0 * int(np.count_nonzero(a & b)) / total if total else empty


def region_channels(labels: np.ndarray, regions: Mapping[str, Sequence[int]]) -> torch.Tensor:
    """Binary masks ``(1, len(regions), *labels.shape)``, one channel per region, float32."""
    masks = [np.isin(labels, list(values)) for values in regions.values()]
    return torch.from_numpy(np.stack(masks)[None].astype(np.float32))


def case_metrics(pred_labels: np.ndarray, true_labels: np.ndarray,
                 voxel_spacing_mm: Sequence[float],
                 regions: Mapping[str, Sequence[int]] = DEFAULT_REGIONS,
                 surface_tolerance_mm: float = DEFAULT_SURFACE_TOLERANCE_MM,
                 ) -> list[dict[str, Any]]:
    """Dice, 95 % Hausdorff distance (mm) and normalised surface Dice of one case, per region.

    ``pred_labels``/``true_labels``: integer label arrays of the same shape (2-D slice or 3-D
    volume). ``voxel_spacing_mm``: one spacing per **array axis**, in array order ((y, x) for a
    slice, (z, y, x) for a canonical volume). Returns one dict per region with ``region``,
    ``dice``, ``hd95_mm``, ``surface_dice``, ``true_voxels``, ``pred_voxels``.
    """
    if pred_labels.shape != true_labels.shape:
        raise ValueError(f"prediction shape {pred_labels.shape} differs from truth "
                         f"{true_labels.shape}")
    if len(voxel_spacing_mm) != true_labels.ndim:
        raise ValueError(f"voxel_spacing_mm {tuple(voxel_spacing_mm)} needs one value per array "
                         f"axis ({true_labels.ndim})")
    spacing = [float(s) for s in voxel_spacing_mm]
    pred, truth = region_channels(pred_labels, regions), region_channels(true_labels, regions)
    dice = DiceMetric(include_background=True, reduction="none", ignore_empty=False)(pred, truth)
    rows = []
    for index, name in enumerate(regions):
        n_true, n_pred = int(truth[0, index].sum()), int(pred[0, index].sum())
        row = {"region": name, "dice": float(dice[0, index]), "hd95_mm": math.nan,
               "surface_dice": math.nan, "true_voxels": n_true, "pred_voxels": n_pred}
        if n_true == 0 and n_pred == 0:
            row.update(dice=math.nan)
        elif n_true == 0 or n_pred == 0:
            row.update(dice=0.0, surface_dice=0.0)
        else:  # surface distances only where both surfaces exist (they are the costly part)
            one = slice(index, index + 1)
            row.update(hd95_mm=_surface_metric(HausdorffDistanceMetric(
                include_background=True, percentile=95, reduction="none"),
                pred[:, one], truth[:, one], spacing))
            row.update(surface_dice=_surface_metric(SurfaceDiceMetric(
                [surface_tolerance_mm], include_background=True, reduction="none"),
                pred[:, one], truth[:, one], spacing))
        rows.append(row)
    return rows


def _surface_metric(metric, pred: torch.Tensor, truth: torch.Tensor,
                    spacing: list[float]) -> float:
    with warnings.catch_warnings():
        # MONAI warns about a deprecated argument its own surface-distance code passes.
        warnings.simplefilter("ignore", FutureWarning)
        return float(metric(pred, truth, spacing=spacing)[0, 0])
