"""The lesion operating point: variant synthetic lesions, the curve through the engine's cascade,
and the choice under a false-positive limit."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from pancreas_ssl_seg.bundle import load_bundle
from pancreas_ssl_training.evaluation.lesion_detection import (MIN_DIAMETER_MM, SliceCase,
                                                               choose_operating_point,
                                                               insert_variant_lesion,
                                                               operating_curve)


def _case(spacing=(0.8, 0.8)) -> SliceCase:
    rng = np.random.default_rng(0)
    hu = rng.normal(40, 8, (1, 160, 160)).astype(np.float32)
    pancreas = np.zeros((1, 160, 160), bool)
    pancreas[0, 50:110, 30:130] = True  # 48 x 80 mm at 0.8 mm
    hu[pancreas] += 60.0
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing((*spacing, 1.0))
    return SliceCase("case", image, pancreas)


def test_variant_lesions_lie_in_the_pancreas_and_are_at_least_the_minimum_size():
    case = _case()
    rng = np.random.default_rng(3)
    drawn = [insert_variant_lesion(case, rng) for _ in range(20)]
    kept = [d for d in drawn if d is not None]
    assert len(kept) >= 10
    before = sitk.GetArrayFromImage(case.image)
    for image, lesion in kept:
        assert lesion.any() and not (lesion & ~case.pancreas).any()
        rows, cols = np.nonzero(lesion[0])
        assert max(np.ptp(rows), np.ptp(cols)) * 0.8 + 0.8 >= MIN_DIAMETER_MM
        after = sitk.GetArrayFromImage(image)
        assert after[lesion].mean() < before[lesion].mean() - 15  # hypo-attenuating
        assert np.array_equal(after[~case.pancreas], before[~case.pancreas])


def _row(fp, det, t=0.5, a=0.0):
    return {"false_positive_rate": fp, "detection_rate": det, "lesion_probability_threshold": t,
            "lesion_min_area_mm2": a}


def test_choice_is_the_best_detection_within_the_false_positive_limit():
    rows = [_row(0.3, 1.0, 0.3), _row(0.1, 0.8, 0.5), _row(0.05, 0.8, 0.7), _row(0.0, 0.2, 0.9)]
    assert choose_operating_point(rows) == rows[2]  # same detection, fewer false positives
    assert choose_operating_point(rows, max_false_positive_rate=0.5) == rows[0]
    assert choose_operating_point([_row(0.4, 0.9), _row(0.2, 0.1)]) == _row(0.2, 0.1)  # none fits


def test_curve_runs_every_point_through_the_cascade(random_bundle):
    torch.set_num_threads(1)
    rows = operating_curve(load_bundle(random_bundle), [_case(), _case()], torch.device("cpu"),
                           lesions_per_slice=1, thresholds=(0.2, 0.9), min_areas=(0.0, 50.0))
    assert len(rows) == 4 and {r["slices"] for r in rows} == {2}
    assert all(0.0 <= r["false_positive_rate"] <= 1.0 and 0.0 <= r["detection_rate"] <= 1.0
               for r in rows)
    by_point = {(r["lesion_probability_threshold"], r["lesion_min_area_mm2"]): r for r in rows}
    # a stricter point never finds more, nor flags more lesion-free slices
    for key in ("false_positive_rate", "detection_rate"):
        assert by_point[0.9, 50.0][key] <= by_point[0.2, 0.0][key]
    assert pytest.approx(by_point[0.2, 0.0]["lesions"]) == by_point[0.9, 50.0]["lesions"]
