"""Per-case quality verdict: is this result probably right, worth a look, or probably a failure?

Signals (``quality_signals``) come from what the cascade already has, on its canonical (LPS)
grids: the fine stage's labels and probabilities in its box, the coarse stage's probabilities and
HU on the whole scan. ``verdict`` turns them into a score in [0, 1] (higher: more trustworthy),
a status and the reasons behind it. The base score is the Dice the model expects of its own
organ (soft Dice of its probabilities against its labels) less a share of the unsure tissue next to
it (a part of the pancreas it may have missed); anatomical rules (size, position in the body,
lesion share) multiply it by a penalty factor, so one clear failure sign is enough, and the
reasons name every sign found. The
thresholds live in the bundle (``inference.quality``) and were chosen on held-out patients
(``training/scripts/calibrate_quality.py``; figures in the model card).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from .geometry import bounding_box, index_to_lps_mm, voxel_volume_ml
from .labels import LESION, PANCREAS
from .postprocess import CONNECTIVITY_26

# Used when a bundle has no ``inference.quality`` (bundles exported before the verdict existed).
DEFAULT_QUALITY = {
    # status: score >= ok_score -> "ok"; >= check_score -> "check"; below -> "failed"
    # (display.QUALITY_STATUSES)
    "ok_score": 0.55,
    "check_score": 0.25,
    # base score: the model's own expected Dice of its organ minus `outside_weight` x the
    # unsure volume (entropy > `outside_uncertainty`) next to it over the organ's volume (a part
    # of the pancreas the model may have missed)
    "outside_uncertainty": 0.3,
    "outside_weight": 0.5,
    # both judged within this distance of the organ (mm): the rest of the box is other anatomy
    "near_mm": 10.0,
    # largest axial cross-section of the organ (cm^2): adult pancreata span about 2-40 cm^2
    "min_area_cm2": 1.0,
    "max_area_cm2": 45.0,
    # organ volume (mL), judged only when the scan covers `full_coverage_mm` along z
    "min_volume_ml": 10.0,
    "max_volume_ml": 250.0,
    "full_coverage_mm": 200.0,
    # organ centroid within the body's box on its axial level (0 = patient right / anterior)
    "min_left_right": 0.3,
    "max_left_right": 0.85,
    "min_anterior_posterior": 0.2,
    "max_anterior_posterior": 0.75,
    # lesion volume / organ volume above this is implausible for this model's training data
    "max_lesion_fraction": 0.6,
}
BODY_HU = -500.0  # soft tissue and bone; air and lung below


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int(np.count_nonzero(a & b)) / total if total else 1.0


def coarse_on_fine(coarse_probabilities: np.ndarray, coarse_grid: sitk.Image,
                   fine_grid: sitk.Image) -> np.ndarray:
    """The coarse stage's organ (P(pancreas) + P(lesion) >= 0.5) on the fine grid."""
    organ = sitk.GetImageFromArray(np.ascontiguousarray(1.0 - coarse_probabilities[0],
                                                        dtype=np.float32))
    organ.CopyInformation(coarse_grid)
    resampled = sitk.Resample(organ, fine_grid, sitk.Transform(), sitk.sitkLinear, 0.0,
                              sitk.sitkFloat32, True)
    return sitk.GetArrayViewFromImage(resampled) >= 0.5


def body_position(coarse_grid: sitk.Image, point_lps: np.ndarray) -> tuple[float, float] | None:
    """(left-right, anterior-posterior) fractions of ``point_lps`` within the body's bounding
    box on its axial level of the canonical coarse grid (0: patient right / front); None
    when no body is seen there."""
    index = coarse_grid.TransformPhysicalPointToContinuousIndex([float(v) for v in point_lps])
    z = int(np.clip(round(index[2]), 0, coarse_grid.GetSize()[2] - 1))
    body = sitk.GetArrayViewFromImage(coarse_grid)[z] > BODY_HU
    components, count = ndimage.label(body)
    if count == 0:
        return None
    largest = np.argmax(np.bincount(components.ravel())[1:]) + 1
    ys, xs = np.nonzero(components == largest)
    if np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return None
    return (float((index[0] - xs.min()) / np.ptp(xs)), float((index[1] - ys.min()) / np.ptp(ys)))


def _within(organ: np.ndarray, spacing_zyx, distance_mm: float) -> np.ndarray:
    """Voxels within ``distance_mm`` of the organ (bool, ``organ``'s shape).

    The distance transform runs only in the organ's box grown by ``distance_mm`` (and a voxel):
    every voxel outside it is farther than that, and inside it the nearest organ voxel, hence
    the distance, is the one the whole grid would give (the fine box is several times larger:
    0.2 of 0.4 s on the 512x512x224 CT, benchmarks/NOTES.md)."""
    box = bounding_box(organ)
    grow = [int(np.ceil(distance_mm / float(s))) + 1 for s in spacing_zyx]
    crop = tuple(slice(max(0, b.start - g), min(n, b.stop + g))
                 for b, g, n in zip(box, grow, organ.shape))
    near = np.zeros(organ.shape, bool)
    near[crop] = ndimage.distance_transform_edt(~organ[crop], sampling=spacing_zyx) <= distance_mm
    return near


def quality_signals(fine_labels: np.ndarray, fine_probabilities: np.ndarray,
                    fine_uncertainty: np.ndarray, fine_grid: sitk.Image,
                    coarse_probabilities: np.ndarray, coarse_grid: sitk.Image,
                    scan_extent_z_mm: float, outside_uncertainty: float,
                    near_mm: float) -> dict[str, Any]:
    """What the verdict judges, from the fine stage's labels (after clean-up), probabilities
    and normalised entropy on ``fine_grid`` and the coarse stage's probabilities and HU on
    ``coarse_grid`` (both canonical LPS)."""
    organ = fine_labels >= PANCREAS
    signals: dict[str, Any] = {"found": bool(organ.any()), "scan_extent_z_mm": scan_extent_z_mm}
    if not signals["found"]:
        return signals
    spacing = fine_grid.GetSpacing()
    voxels = int(np.count_nonzero(organ))
    p_organ = 1.0 - fine_probabilities[0]
    signals["volume_ml"] = voxels * voxel_volume_ml(fine_grid)
    signals["largest_area_cm2"] = float(
        organ.reshape(organ.shape[0], -1).sum(axis=1).max() * spacing[0] * spacing[1] / 100.0)
    near = _within(organ, spacing[::-1], near_mm)
    # Dice the model expects of its own organ under its probabilities (soft Dice), and the
    # unsure tissue next to it, both within near_mm of the organ
    signals["expected_dice"] = float(2.0 * p_organ[organ].sum() / (p_organ[near].sum() + voxels))
    signals["uncertain_outside_ratio"] = float(
        np.count_nonzero((fine_uncertainty > outside_uncertainty) & near & ~organ) / voxels)
    signals["mean_uncertainty"] = float(fine_uncertainty[organ].mean())
    signals["coarse_fine_dice"] = _dice(
        coarse_on_fine(coarse_probabilities, coarse_grid, fine_grid), organ)
    signals["components"] = int(ndimage.label(organ, structure=CONNECTIVITY_26)[1])
    signals["lesion_fraction"] = float(np.count_nonzero(fine_labels == LESION) / voxels)
    point = index_to_lps_mm(fine_grid, np.argwhere(organ).mean(axis=0))
    position = body_position(coarse_grid, np.asarray(point))
    signals["left_right"], signals["anterior_posterior"] = position or (None, None)
    return signals


def _penalties(signals: dict[str, Any], t: dict[str, float]) -> list[tuple[float, str]]:
    """(factor, reason) of every anatomical rule that lowers the score."""
    out = []
    area = signals["largest_area_cm2"]
    if not t["min_area_cm2"] <= area <= t["max_area_cm2"]:
        out.append((0.5, f"largest cross-section {area:.1f} cm^2 is outside the adult range "
                         f"{t['min_area_cm2']:g}-{t['max_area_cm2']:g} cm^2"))
    volume = signals["volume_ml"]
    if (signals["scan_extent_z_mm"] >= t["full_coverage_mm"]
            and not t["min_volume_ml"] <= volume <= t["max_volume_ml"]):
        out.append((0.5, f"pancreas volume {volume:.1f} mL is outside the plausible range "
                         f"{t['min_volume_ml']:g}-{t['max_volume_ml']:g} mL"))
    lr, ap = signals["left_right"], signals["anterior_posterior"]
    if lr is None:
        out.append((0.5, "no body was found around the pancreas"))
    elif not (t["min_left_right"] <= lr <= t["max_left_right"]
              and t["min_anterior_posterior"] <= ap <= t["max_anterior_posterior"]):
        out.append((0.3, f"the pancreas lies where a pancreas is not expected (at {lr:.2f} "
                         f"left-right, {ap:.2f} front-back of the body)"))
    if signals["lesion_fraction"] > t["max_lesion_fraction"]:
        out.append((0.5, f"lesions make up {100 * signals['lesion_fraction']:.0f}% of the organ"))
    return out


def quality_thresholds(inference: dict[str, Any]) -> dict[str, float]:
    """A bundle's ``inference.quality`` over the defaults (older bundles have none)."""
    return {**DEFAULT_QUALITY, **inference.get("quality", {})}


def verdict(signals: dict[str, Any], thresholds: dict[str, float] | None = None
            ) -> dict[str, Any]:
    """``{"score", "status", "reasons", "signals"}`` of one case (see the module docstring)."""
    t = {**DEFAULT_QUALITY, **(thresholds or {})}
    if not signals["found"]:
        return {"score": 0.0, "status": "failed", "reasons": ["no pancreas was found"],
                "signals": signals}
    base = float(np.clip(signals["expected_dice"]
                         - t["outside_weight"] * signals["uncertain_outside_ratio"], 0.0, 1.0))
    reasons = []
    if signals["expected_dice"] < 0.7:
        reasons.append(f"the model is unsure of the outline (expected Dice "
                       f"{signals['expected_dice']:.2f})")
    if t["outside_weight"] * signals["uncertain_outside_ratio"] > 0.1:
        reasons.append("unsure tissue next to the pancreas "
                       f"({signals['uncertain_outside_ratio']:.2f} x its volume) may be missed "
                       "pancreas")
    penalties = _penalties(signals, t)
    score = base * float(np.prod([factor for factor, _ in penalties]))
    status = ("ok" if score >= t["ok_score"] else
              "check" if score >= t["check_score"] else "failed")
    return {"score": round(score, 4), "status": status,
            "reasons": reasons + [reason for _, reason in penalties], "signals": signals}
