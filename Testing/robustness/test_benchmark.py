"""The speed benchmark's parts: clinical grid, patch count, per-process peaks.

The speed check itself is ``test_speed_guard.py`` (against a reference workload, so it can fail).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import REPO_ROOT

from pancreas_ssl_seg.preprocessing import resample_to_spacing

BENCH_DIR = REPO_ROOT / "benchmarks"
sys.path.insert(0, str(BENCH_DIR))

import baseline  # noqa: E402
from clinical_ct import pad_axial_matrix  # noqa: E402
from measure import run_measured  # noqa: E402


def test_clinical_grid_keeps_extent_and_pads_with_air(example_ct):
    source = sitk.ReadImage(str(example_ct))
    resampled = resample_to_spacing(source, (0.8, 0.8, 1.5))
    extent_mm = np.array(source.GetSize()) * source.GetSpacing()
    np.testing.assert_allclose(np.array(resampled.GetSize()) * resampled.GetSpacing(), extent_mm,
                               atol=0.8)
    padded = pad_axial_matrix(resampled, 512)
    assert padded.GetSize() == (512, 512, resampled.GetSize()[2])
    array = sitk.GetArrayViewFromImage(padded)
    assert array[:, 0, :].max() == -1024 and array[:, :, -1].max() == -1024  # air as CT stores it
    # The body is still there, in the middle, at soft-tissue values.
    assert np.median(array[array.shape[0] // 2, 200:300, 200:300]) > -200


@pytest.mark.parametrize("size", [(64, 80, 100), (140, 64, 64), (64, 64, 64)])
def test_patch_count_matches_monai_sliding_window(size):
    patch = (32, 32, 32)
    calls = []

    def counting_predictor(x):
        calls.append(x.shape[0])
        return torch.zeros(x.shape[0], 1, *x.shape[2:])

    from monai.inferers import sliding_window_inference

    sliding_window_inference(torch.zeros(1, 1, *size), patch, 1, counting_predictor, overlap=0.5)
    assert sum(calls) == baseline.sliding_window_patch_count(size, patch, 0.5)


def test_crop_holds_exactly_the_requested_patches():
    volume = np.zeros((224, 273, 273), np.float32)
    for patches in (1, 3):
        crop = baseline.crop_with_patches(volume, patches)
        assert baseline.sliding_window_patch_count(crop.shape) == patches


def test_each_step_reports_its_own_peak_memory():
    big = run_measured([sys.executable, "-c",
                        "import numpy as np; a = np.ones(300 * 2**20 // 8); print(a.size)"])
    small = run_measured([sys.executable, "-c", "print('small')"])
    assert big.returncode == 0 and small.returncode == 0
    assert big.peak_rss_mb > 300
    assert small.peak_rss_mb < 100, "a later small step must not inherit an earlier peak"
    assert small.stdout.strip() == "small"


def test_step_timeout_kills_the_child():
    step = run_measured([sys.executable, "-c", "import time; time.sleep(30)"], timeout_s=1)
    assert step.timed_out and step.returncode != 0 and step.wall_s < 10
