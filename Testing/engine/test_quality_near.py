"""The quality verdict's "near the organ" mask is computed in the organ's grown box only (issue
16); it must be the mask a distance transform over the whole grid gives, also for organs that
touch the grid's edge and for anisotropic voxels."""

import numpy as np
import pytest
from scipy import ndimage

from pancreas_ssl_seg.quality import _within


@pytest.mark.parametrize("seed, spacing_zyx, distance_mm", [
    (0, (2.5, 0.9, 0.9), 10.0), (1, (1.5, 0.8, 0.8), 10.0), (2, (3.0, 3.0, 3.0), 7.5),
    (3, (2.5, 0.9, 0.9), 0.5)])
def test_near_mask_is_the_whole_grid_distance_transform_s(seed, spacing_zyx, distance_mm):
    rng = np.random.default_rng(seed)
    organ = ndimage.gaussian_filter(rng.random((30, 90, 100)), 3) > 0.53
    organ[:, :, :60] = False  # a free margin on one side, the organ may touch the others
    assert organ.any()
    expected = ndimage.distance_transform_edt(~organ, sampling=spacing_zyx) <= distance_mm
    got = _within(organ, spacing_zyx, distance_mm)
    assert got.dtype == bool and got.shape == organ.shape
    np.testing.assert_array_equal(got, expected)
    assert 0 < expected.sum() < expected.size  # neither empty nor everything: the test can fail
