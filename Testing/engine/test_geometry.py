"""Voxel geometry: boxes around masks, their extent on another grid, the largest distance."""

import numpy as np
import pytest
import SimpleITK as sitk

from pancreas_ssl_seg.geometry import (bounding_box, index_range_on, max_feret_diameter_mm,
                                       physical_points_mm)


def test_bounding_box_of_the_union_of_masks():
    rng = np.random.default_rng(0)
    first = np.zeros((9, 10, 11), bool)
    second = np.zeros_like(first)
    first[2, 3:5, 7] = True
    second[tuple(rng.integers(4, 9, size=(3, 20)))] = True
    union = np.argwhere(first | second)
    expected = tuple(slice(int(low), int(high) + 1)
                     for low, high in zip(union.min(axis=0), union.max(axis=0)))
    assert bounding_box(first, second) == expected
    only = np.argwhere(second)  # an empty mask beside it adds nothing
    assert bounding_box(second, np.zeros_like(first)) == tuple(
        slice(int(low), int(high) + 1) for low, high in zip(only.min(axis=0), only.max(axis=0)))
    assert bounding_box(np.zeros_like(first)) is None


def test_index_range_on_another_grid_covers_the_voxels_faces():
    source = sitk.Image([10, 10, 10], sitk.sitkUInt8)
    source.SetSpacing((2.0, 2.0, 2.0))
    target = sitk.Image([30, 30, 30], sitk.sitkUInt8)
    box_zyx = (slice(1, 3), slice(0, 1), slice(2, 5))
    # x voxels 2..4 of 2 mm span 3..9 mm, y voxel 0 spans -1..1 mm, z voxels 1..2 span 1..5 mm
    low, high = index_range_on(source, box_zyx, target)
    assert low == pytest.approx([3.0, -1.0, 1.0]) and high == pytest.approx([9.0, 1.0, 5.0])
    target.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))  # x and y mirrored about the origin
    low, high = index_range_on(source, box_zyx, target)
    assert low == pytest.approx([-9.0, -1.0, 1.0]) and high == pytest.approx([-3.0, 1.0, 5.0])


def test_diameter_of_a_large_flat_lesion_uses_its_plane():
    """A 400 x 400-voxel square on one slice (160 000 points, no 3-D hull): the diagonal, in
    seconds, without the all-pairs fallback (which would need ~100 GB)."""
    y, x = np.mgrid[0:400, 0:400]
    points = np.column_stack([x.ravel() * 0.5, y.ravel() * 0.8, np.full(x.size, 7.0)])
    assert max_feret_diameter_mm(points) == pytest.approx(np.hypot(399 * 0.5, 399 * 0.8))
    line = np.column_stack([np.arange(1000) * 0.3, np.zeros(1000), np.zeros(1000)])
    assert max_feret_diameter_mm(line) == pytest.approx(999 * 0.3)


def test_physical_points_are_sitks_voxel_centres_on_an_oblique_grid():
    image = sitk.Image(6, 5, 4, sitk.sitkUInt8)
    image.SetSpacing((0.7, 0.9, 2.5))
    image.SetOrigin((10.0, -20.0, 5.0))
    angle = np.deg2rad(25)
    image.SetDirection((np.cos(angle), -np.sin(angle), 0, np.sin(angle), np.cos(angle), 0,
                        0, 0, 1))
    mask = np.zeros((2, 3, 4), bool)  # (z, y, x), placed at offset (1, 1, 2) in the image
    mask[0, 1, 3] = mask[1, 2, 0] = True
    expected = [image.TransformIndexToPhysicalPoint((3 + 2, 1 + 1, 0 + 1)),
                image.TransformIndexToPhysicalPoint((0 + 2, 2 + 1, 1 + 1))]
    assert np.allclose(physical_points_mm(image, mask, offset_zyx=(1, 1, 2)), expected)
