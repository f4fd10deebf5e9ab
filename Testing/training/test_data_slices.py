"""Slice readers: NIH HU and 8-bit folders, and axial slices cut from a 3-D volume."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from pancreas_ssl_seg.errors import InputError
from pancreas_ssl_training.data.slices import (axial_slices_from_volume, load_nih_8bit_slices,
                                               load_nih_hu_slices, remap_labels)


def _spine_row(image: np.ndarray) -> float:
    """Mean row of bone-bright pixels in the middle columns (spine, ribs)."""
    bright = image[:, 192:320] >= np.percentile(image, 99.5)
    return float(np.argwhere(bright)[:, 0].mean())


def test_nih_hu_slices_are_unflipped_labelled_hu(shared_data):
    samples = load_nih_hu_slices(shared_data / "nih-pancreas-slices-hu")
    assert len(samples) == 15
    assert [s.patient for s in samples] == ["0001"] * 5 + ["0002"] * 5 + ["0003"] * 5
    for sample in samples:
        assert sample.image.shape == (512, 512) and sample.image.dtype == np.float32
        assert sample.label.dtype == np.uint8 and set(np.unique(sample.label)) == {0, 1}
        assert sample.units == "hu" and sample.source == "nih-hu" and sample.spacing_mm is None
        assert sample.image.min() < -900  # air: Hounsfield units, not grey levels
        # Canonical display: spine in the lower half (the folder stores it at the top).
        assert _spine_row(sample.image) > 256
    raw = np.load(shared_data / "nih-pancreas-slices-hu" / "img_000.npy")
    np.testing.assert_array_equal(samples[0].image, raw[::-1].astype(np.float32))


def test_nih_8bit_slices_filter_patients_and_threshold_masks(shared_data):
    root = shared_data / "nih-pancreas-slices-8bit"
    samples = load_nih_8bit_slices(root, patients=["0002", "0004"])
    assert {s.patient for s in samples} == {"0002", "0004"}
    assert len(samples) == 5 + 6
    sample = samples[0]
    assert sample.case == "PANCREAS_0002-1090" and sample.units == "8bit"
    assert 0 <= sample.image.min() and sample.image.max() <= 255
    assert set(np.unique(sample.label)) == {0, 1}  # JPEG ringing thresholded away
    assert _spine_row(sample.image) > 256
    assert len(load_nih_8bit_slices(root)) == 230


def test_missing_folder_raises_input_error_naming_it(tmp_path):
    with pytest.raises(InputError, match="nope"):
        load_nih_hu_slices(tmp_path / "nope")
    with pytest.raises(InputError, match="images"):
        load_nih_8bit_slices(tmp_path)


def test_remap_labels_keeps_only_mapped_values():
    label = np.array([[0, 7, 3], [7, 2, 0]])
    np.testing.assert_array_equal(remap_labels(label, {7: 1, 2: 2}), [[0, 1, 0], [1, 2, 0]])


def test_axial_slices_from_volume_keep_negatives_in_lps(shared_data, tmp_path):
    folder = shared_data / "ct-abdomen-3mm"
    image = sitk.ReadImage(str(folder / "example_ct.nii.gz"))
    samples = axial_slices_from_volume(folder / "example_ct.nii.gz",
                                       folder / "example_seg_fast_force_split.nii.gz",
                                       {7: 1}, "ct-abdomen-3mm")
    canonical = sitk.DICOMOrient(image, "LPS")
    assert len(samples) == canonical.GetSize()[2]
    assert samples[0].spacing_mm == pytest.approx((3.0, 3.0))
    pancreas_voxels = sum(int(s.label.sum()) for s in samples)
    assert pancreas_voxels == 695  # data README: label 7 has 695 voxels
    assert any(s.label.sum() == 0 for s in samples) and any(s.label.sum() > 0 for s in samples)
    assert samples[3].case == "example_ct-z003" and samples[3].patient == "example_ct"
    np.testing.assert_array_equal(samples[10].image, sitk.GetArrayFromImage(canonical)[10])

    small = sitk.RegionOfInterest(image, [10, 10, 10], [0, 0, 0])
    sitk.WriteImage(small, str(tmp_path / "small.nii.gz"))
    with pytest.raises(InputError, match="grid"):
        axial_slices_from_volume(folder / "example_ct.nii.gz", tmp_path / "small.nii.gz",
                                 {7: 1}, "x")


def test_label_with_another_origin_is_paired_voxelwise_with_a_warning(shared_data, tmp_path):
    folder = shared_data / "ct-abdomen-3mm"
    label = sitk.ReadImage(str(folder / "example_seg_fast_force_split.nii.gz"))
    label.SetOrigin((0.0, 0.0, 0.0))  # like label files written without geometry
    sitk.WriteImage(label, str(tmp_path / "label.nii.gz"))
    with pytest.warns(UserWarning, match="voxel by voxel"):
        samples = axial_slices_from_volume(folder / "example_ct.nii.gz", tmp_path / "label.nii.gz",
                                           {7: 1}, "ct-abdomen-3mm")
    assert sum(int(s.label.sum()) for s in samples) == 695
