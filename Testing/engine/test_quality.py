"""The per-case quality verdict and the uncertainty map outside the fine stage's box."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from pancreas_ssl_seg.bundle import load_bundle
from pancreas_ssl_seg.pipeline import segment
from pancreas_ssl_seg.quality import DEFAULT_QUALITY, quality_signals, verdict
from conftest import REPO_ROOT

SHIPPED = REPO_ROOT / "Resources" / "Models" / "pancreas-demo"
GOOD = {"found": True, "scan_extent_z_mm": 300.0, "volume_ml": 60.0, "largest_area_cm2": 12.0,
        "expected_dice": 0.9, "uncertain_outside_ratio": 0.0, "mean_uncertainty": 0.1,
        "coarse_fine_dice": 0.8, "components": 1, "lesion_fraction": 0.0, "left_right": 0.6,
        "anterior_posterior": 0.4}


def test_a_plausible_confident_result_is_ok_with_no_reasons():
    result = verdict(GOOD)
    assert (result["score"], result["status"], result["reasons"]) == (0.9, "ok", [])


def test_an_empty_result_fails():
    result = verdict({"found": False, "scan_extent_z_mm": 300.0})
    assert (result["score"], result["status"]) == (0.0, "failed")
    assert result["reasons"] == ["no pancreas was found"]


def test_an_implausible_volume_needs_a_check_only_when_the_scan_covers_the_organ():
    huge = verdict({**GOOD, "volume_ml": 400.0})
    assert huge["status"] == "check" and huge["score"] == pytest.approx(0.45)
    assert any("400.0 mL is outside" in reason for reason in huge["reasons"])
    # a 100 mm slab may cut the pancreas: its volume says nothing
    assert verdict({**GOOD, "volume_ml": 400.0, "scan_extent_z_mm": 100.0})["status"] == "ok"


def test_an_organ_outside_the_abdomen_is_flagged_and_a_doubtful_one_fails():
    at_the_back = {**GOOD, "left_right": 0.1, "anterior_posterior": 0.9}
    result = verdict(at_the_back)
    assert result["status"] == "check" and result["score"] == pytest.approx(0.27)
    assert "not expected" in result["reasons"][0]
    assert verdict({**at_the_back, "expected_dice": 0.6})["status"] == "failed"


def test_thresholds_come_from_the_bundle():
    assert verdict(GOOD, {"ok_score": 0.95})["status"] == "check"
    shipped = load_bundle(SHIPPED).inference["quality"]
    assert set(shipped) == set(DEFAULT_QUALITY)


def _grid(size: int = 40, spacing: float = 1.0) -> sitk.Image:
    image = sitk.Image([size] * 3, sitk.sitkFloat32)
    image.SetSpacing([spacing] * 3)
    return image


def _signals(p_organ: np.ndarray, labels: np.ndarray, hu: np.ndarray) -> dict:
    """quality_signals of a fine stage that reads ``p_organ`` with ``labels``; the coarse stage
    saw the same organ on the same grid, whose HU are ``hu``."""
    probabilities = np.stack([1 - p_organ, p_organ, np.zeros_like(p_organ)]).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(probabilities > 0, -probabilities * np.log(probabilities), 0.0)
    entropy = (terms.sum(axis=0) / np.log(3)).astype(np.float32)
    grid = _grid(labels.shape[0])
    coarse = sitk.GetImageFromArray(hu.astype(np.float32))
    return quality_signals(labels, probabilities, entropy, grid, probabilities, coarse,
                           scan_extent_z_mm=40.0, outside_uncertainty=0.3, near_mm=10.0)


def _body() -> np.ndarray:
    hu = np.full((40, 40, 40), -1000.0)
    hu[:, 5:35, 5:35] = 40.0  # body: y and x 5..34 (index), so fractions are (i - 5) / 29
    return hu


def test_passes_that_disagree_on_the_extent_lower_the_score():
    agree = np.zeros((40, 40, 40))
    agree[15:25, 15:25, 15:25] = 1.0
    labels = (agree > 0.5).astype(np.uint8)
    confident = _signals(agree, labels, _body())
    assert confident["expected_dice"] == pytest.approx(1.0)
    assert confident["uncertain_outside_ratio"] == 0.0
    assert (confident["left_right"], confident["anterior_posterior"]) == pytest.approx(
        ((19.5 - 5) / 29, (19.5 - 5) / 29))
    assert verdict(confident)["status"] == "ok"

    # half the passes saw a 14-voxel cube: mean probability 0.5 on a 2-voxel shell
    disagree = agree.copy()
    shell = np.zeros_like(agree, bool)
    shell[13:27, 13:27, 13:27] = True
    shell &= agree == 0
    disagree[shell] = 0.5
    inner, ring = int(labels.sum()), int(shell.sum())
    signals = _signals(disagree, labels, _body())
    assert signals["expected_dice"] == pytest.approx(2 * inner / (2 * inner + 0.5 * ring))
    assert signals["uncertain_outside_ratio"] == pytest.approx(ring / inner)
    result = verdict(signals)
    assert result["status"] == "failed"
    assert any("missed pancreas" in reason for reason in result["reasons"])


@pytest.fixture(scope="module")
def shipped_on_example(example_ct, tmp_path_factory):
    return {fast: segment(example_ct, model=SHIPPED, device="cpu", fast=fast)
            for fast in (True, False)}


def test_uncertainty_outside_the_fine_box_is_the_coarse_stages_not_zero(shipped_on_example):
    result = shipped_on_example[True]
    organ_slices = np.nonzero(result.labels.any(axis=(1, 2)))[0]
    far = np.ones(result.labels.shape[0], bool)  # > 90 mm (30 slices) from any organ slice
    far[max(0, organ_slices.min() - 30):organ_slices.max() + 31] = False
    assert far.sum() > 20 and not result.labels[far].any()
    assert result.uncertainty[far].max() > 0.3
    # tiny values are stored as 0 (they made the file incompressible)
    assert not ((result.uncertainty > 0) & (result.uncertainty < 1e-3)).any()
    assert "outside it, of the coarse stage's single pass" in result.report["uncertainty"][
        "definition"]


def test_the_definition_says_what_each_mode_averaged(shipped_on_example):
    fast = shipped_on_example[True].report["uncertainty"]["definition"]
    accurate = shipped_on_example[False].report["uncertainty"]["definition"]
    assert "one pass (no test-time augmentation)" in fast and "flip" not in fast
    assert "3 test-time passes" in accurate and "scales [0.9, 1.0, 1.1]" in accurate


def test_the_report_carries_the_verdict(shipped_on_example):
    quality = shipped_on_example[False].report["quality"]
    assert quality["status"] in ("ok", "check", "failed") and 0.0 <= quality["score"] <= 1.0
    assert quality["signals"]["found"] and quality["signals"]["volume_ml"] > 5
    json.dumps(quality)  # plain JSON types only
