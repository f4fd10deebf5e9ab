"""Intensity (HU) and spatial augmentation."""

from __future__ import annotations

import numpy as np
import pytest

from pancreas_ssl_training.data.augment import (ENHANCEMENT_BASELINE_HU, ENHANCEMENT_CAP_HU,
                                                apply_intensity_augmentation, augment_intensity,
                                                build_spatial_augmentation, gamma_in_window,
                                                sample_intensity_augmentation, scale_enhancement)

WINDOW = (-200.0, 300.0)


def test_enhancement_scaling_leaves_unenhanced_tissue_and_shifts_bone():
    hu = np.array([-1000, -100, ENHANCEMENT_BASELINE_HU, 130, ENHANCEMENT_CAP_HU, 1000], np.float32)
    scaled = scale_enhancement(hu, 0.5)
    np.testing.assert_allclose(scaled[:3], hu[:3])            # fat, air, baseline untouched
    assert scaled[3] == pytest.approx(ENHANCEMENT_BASELINE_HU + 50)  # enhancement halved
    assert scaled[5] - scaled[4] == pytest.approx(hu[5] - hu[4])    # bone shifted, not stretched
    assert np.all(np.diff(scale_enhancement(np.linspace(-1000, 2000, 301), 0.3)) > 0)  # monotonic


def test_gamma_keeps_window_edges_and_brightens_below_one():
    hu = np.array([-500, -200, 50, 300, 900], np.float32)
    out = gamma_in_window(hu, 0.8, WINDOW)
    np.testing.assert_allclose(out[[0, 1, 3, 4]], [-200, -200, 300, 300])
    assert out[2] > 50


def test_augment_intensity_is_seeded_and_off_at_zero_probability():
    hu = np.random.default_rng(0).normal(40, 100, (32, 32)).astype(np.float32)
    np.testing.assert_array_equal(augment_intensity(hu, np.random.default_rng(1), WINDOW, 0.0), hu)
    a = augment_intensity(hu, np.random.default_rng(2), WINDOW, 1.0)
    b = augment_intensity(hu, np.random.default_rng(2), WINDOW, 1.0)
    np.testing.assert_array_equal(a, b)
    assert a.shape == hu.shape and a.dtype == np.float32 and not np.allclose(a, hu)


def test_pointwise_only_skips_noise_and_blur():
    params = sample_intensity_augmentation(np.random.default_rng(0), probability=1.0)
    assert params["noise_std_hu"] > 0 and params["blur_sigma_voxels"] > 0
    hu = np.linspace(-300, 500, 50, dtype=np.float32)
    first = apply_intensity_augmentation(hu, params, WINDOW, pointwise_only=True)
    again = apply_intensity_augmentation(hu, params, WINDOW, pointwise_only=True)
    np.testing.assert_array_equal(first, again)
    assert np.all(np.diff(first) >= 0)  # a monotonic curve: no noise


@pytest.mark.parametrize("dims", [2, 3])
def test_spatial_augmentation_keeps_labels_integral_and_flips_left_right(dims):
    shape = (1,) + (24,) * dims
    label = np.zeros(shape, np.float32)
    label[(0,) + (slice(8, 16),) * (dims - 1) + (slice(2, 8),)] = 2
    image = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    flip_only = build_spatial_augmentation(dims, flip_probability=1.0, rotate_probability=0.0,
                                           zoom_probability=0.0)
    out = flip_only({"image": image, "label": label})
    np.testing.assert_array_equal(np.asarray(out["label"]), label[..., ::-1])
    every = build_spatial_augmentation(dims, flip_probability=0.5, rotate_probability=1.0,
                                       zoom_probability=1.0)
    every.set_random_state(seed=3)
    out = every({"image": image, "label": label})
    assert np.asarray(out["image"]).shape == shape
    assert set(np.unique(np.asarray(out["label"]))) <= {0.0, 2.0}


def test_contrast_scale_stretches_about_soft_tissue():
    hu = np.array([-100.0, 40.0, 140.0], np.float32)
    params = {"enhancement_scale": 1.0, "contrast_scale": 1.5, "shift_hu": 0.0, "gamma": 1.0,
              "blur_sigma_voxels": 0.0, "noise_std_hu": 0.0}
    out = apply_intensity_augmentation(hu, params, WINDOW, pointwise_only=True)
    np.testing.assert_allclose(out, [40 - 1.5 * 140, 40, 40 + 1.5 * 100])

