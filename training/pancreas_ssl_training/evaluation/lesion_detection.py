"""The lesion class's operating point: false-positive slices against synthetic lesions found.

No real lesion label exists here, so lesion detection is measured with synthetic lesions drawn
by a *variant* of the training synthesizer (``VARIANT``: longer, more lobulated shapes, wider
blurred margins and another contrast range than training used), inserted into labelled slices
whose pancreas the model has not seen as lesion. Every slice goes through the engine's own
cascade functions (coarse stage, box, fine stage, ``fine_labels``), so an operating point —
``lesion_probability_threshold`` and ``lesion_min_area_mm2`` in the bundle's ``inference`` —
is measured exactly as ``segment()`` applies it; the fine stage runs once per slice and every
operating point re-labels its probabilities.

Rates per operating point: ``false_positive_rate`` = fraction of lesion-free slices with any
predicted lesion; ``detection_rate`` = fraction of inserted lesions (at least ``min_diameter``
across) that a predicted lesion overlaps.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from pancreas_ssl_seg.bundle import ModelBundle
from pancreas_ssl_seg.cascade import (TtaSettings, box_around, fine_labels,
                                       run_coarse, run_fine_growing)
from pancreas_ssl_seg.labels import LESION
from pancreas_ssl_seg.pipeline import onto_input_grid

from ..data.synthetic_lesions import insert_synthetic_lesion

# Training draws 5-30 mm, contrast -80..-10 HU, axis ratios 0.6-1, roughness 0.05-0.125,
# margins 0.5-2 mm (data.synthetic_lesions); the variant differs in every shape parameter.
VARIANT = {"diameter_mm": (10.0, 30.0), "contrast_hu": (-70.0, -25.0),
           "axis_ratio": (0.35, 0.7), "roughness": (0.15, 0.25), "margin_sigma_mm": (2.0, 3.0)}
MIN_DIAMETER_MM = 10.0
THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MIN_AREAS_MM2 = (0.0, 10.0, 20.0, 40.0, 60.0, 80.0)


@dataclasses.dataclass
class SliceCase:
    """One labelled axial slice as the engine sees it (canonical, one slice thick)."""

    name: str
    image: sitk.Image          # HU
    pancreas: np.ndarray       # bool (1, y, x)


def _with_operating_point(bundle: ModelBundle, threshold: float, min_area: float) -> ModelBundle:
    metadata = copy.deepcopy(bundle.metadata)
    metadata["inference"].update(lesion_probability_threshold=float(threshold),
                                 lesion_min_area_mm2=float(min_area))
    return dataclasses.replace(bundle, metadata=metadata)


def _fine_result(bundle: ModelBundle, image: sitk.Image, device: torch.device):
    """The cascade up to the fine stage's probabilities (``None``: the coarse stage found
    nothing), with Accurate mode's test-time augmentation (no MC dropout: deterministic)."""
    overlap = float(bundle.inference["sw_overlap"])
    tta = dataclasses.replace(TtaSettings.of(bundle, fast=False), mc_dropout_samples=0)
    coarse = run_coarse(image, bundle, device, overlap, members=tta.coarse_members)
    box = box_around(coarse.grid, coarse.foreground, image, bundle.stage("fine").margin_mm)
    if box is None:
        return None
    return run_fine_growing(image, box, bundle, device, coarse, tta, overlap)[0]


def _lesion_masks(bundle: ModelBundle, fine, image: sitk.Image,
                  points: Iterable[tuple[float, float]]) -> dict[tuple[float, float], np.ndarray]:
    """Predicted lesion mask on the input grid for each operating point."""
    masks = {}
    for threshold, min_area in points:
        if fine is None:
            masks[threshold, min_area] = np.zeros(image.GetSize()[::-1], bool)
            continue
        labels = fine_labels(fine, _with_operating_point(bundle, threshold, min_area))
        masks[threshold, min_area] = onto_input_grid(labels, fine.grid, image,
                                                     is_label=True) == LESION
    return masks


def insert_variant_lesion(case: SliceCase, rng: np.random.Generator
                          ) -> tuple[sitk.Image, np.ndarray] | None:
    """(image with one variant lesion, its mask (1, y, x)); ``None`` when the drawn lesion came
    out under ``MIN_DIAMETER_MM`` across (clipped by a thin pancreas)."""
    hu = sitk.GetArrayFromImage(case.image)[0]
    spacing = case.image.GetSpacing()[:2]
    lesioned, label = insert_synthetic_lesion(hu, case.pancreas[0].astype(np.uint8), rng,
                                              spacing, **VARIANT)
    lesion = label == LESION
    rows, cols = np.nonzero(lesion)
    if rows.size == 0:
        return None
    extent_mm = max(np.ptp(cols) * spacing[0], np.ptp(rows) * spacing[1]) + min(spacing)
    if extent_mm < MIN_DIAMETER_MM:
        return None
    image = sitk.GetImageFromArray(lesioned[None])
    image.CopyInformation(case.image)
    return image, lesion[None]


def operating_curve(bundle: ModelBundle, cases: Sequence[SliceCase], device: torch.device,
                    lesions_per_slice: int = 2, seed: int = 0,
                    thresholds: Sequence[float] = THRESHOLDS,
                    min_areas: Sequence[float] = MIN_AREAS_MM2) -> list[dict[str, Any]]:
    """One row per operating point: rates over ``cases`` (lesion-free as given) and over the
    variant lesions inserted into them (``lesions_per_slice`` draws per slice)."""
    points = [(t, a) for t in thresholds for a in min_areas]
    false_positive = {p: 0 for p in points}
    detected = {p: 0 for p in points}
    n_lesions = 0
    rng = np.random.default_rng(seed)
    for case in cases:
        clean = _lesion_masks(bundle, _fine_result(bundle, case.image, device), case.image,
                              points)
        for point in points:
            false_positive[point] += bool(clean[point].any())
        for _ in range(lesions_per_slice):
            inserted = insert_variant_lesion(case, rng)
            if inserted is None:
                continue
            image, truth = inserted
            n_lesions += 1
            found = _lesion_masks(bundle, _fine_result(bundle, image, device), image, points)
            for point in points:
                detected[point] += bool((found[point] & truth).any())
    return [{"lesion_probability_threshold": t, "lesion_min_area_mm2": a,
             "false_positive_rate": false_positive[t, a] / max(1, len(cases)),
             "detection_rate": detected[t, a] / max(1, n_lesions),
             "slices": len(cases), "lesions": n_lesions} for t, a in points]


def choose_operating_point(rows: Sequence[dict[str, Any]], max_false_positive_rate: float = 0.1
                           ) -> dict[str, Any]:
    """The row with the highest detection rate among those within the false-positive limit
    (ties: fewer false positives, then the lower threshold and smaller minimum area); the row
    with the fewest false positives when none is within it."""
    within = [r for r in rows if r["false_positive_rate"] <= max_false_positive_rate]
    if not within:
        return min(rows, key=lambda r: (r["false_positive_rate"], -r["detection_rate"]))
    return max(within, key=lambda r: (r["detection_rate"], -r["false_positive_rate"],
                                      -r["lesion_probability_threshold"],
                                      -r["lesion_min_area_mm2"]))
