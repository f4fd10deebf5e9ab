"""VolumeDataset: 3-D patches from the real 3 mm CT, normalised with the per-volume reference."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from pancreas_ssl_seg.errors import InputError
from pancreas_ssl_seg.preprocessing import normalize_ct
from pancreas_ssl_training.data.volume_datasets import (VolumeDataset, labelled_region,
                                                        load_resampled_case)
from pancreas_ssl_training.data.volumes import volume_cases_from_spec


@pytest.fixture(scope="module")
def cases(shared_data):
    folder = shared_data / "ct-abdomen-3mm"
    return volume_cases_from_spec({"volumes": [
        {"image": str(folder / "example_ct.nii.gz"),
         "label": str(folder / "example_seg_fast_force_split.nii.gz"),
         "label_map": {7: 1}, "source": "ct-abdomen-3mm", "case": "example_ct"}]})


def test_loaded_case_is_canonical_and_remapped(cases, example_ct):
    hu, label, spacing = load_resampled_case(cases[0], (6.0, 6.0, 6.0))
    canonical = sitk.DICOMOrient(sitk.ReadImage(str(example_ct)), "LPS")
    assert spacing == (6.0, 6.0, 6.0)
    assert hu.shape == tuple(round(s / 2) for s in canonical.GetSize()[::-1])
    assert set(np.unique(label)) == {0, 1}
    # 695 voxels at 3 mm ≈ 87 voxels at 6 mm (nearest-neighbour resampling).
    assert label.sum() == pytest.approx(695 / 8, rel=0.25)


def test_whole_volume_patch_is_normalize_ct_of_the_volume(cases):
    hu, label, _ = load_resampled_case(cases[0], None)
    dataset = VolumeDataset(cases, hu.shape, spacing_mm=None, augment=False)
    item = dataset[0]
    assert item["image"].shape == (1, *hu.shape) and item["label"].dtype == torch.int64
    np.testing.assert_allclose(item["image"][0].numpy(), normalize_ct(hu, (-200, 300)), atol=1e-5)
    np.testing.assert_array_equal(item["label"][0].numpy(), label)
    assert item["source"] == "ct-abdomen-3mm" and item["case"] == "example_ct"
    assert item["spacing_mm"].tolist() == [3.0, 3.0, 3.0]
    assert item["patient"] == "example_ct" and item["scan_id"] == 0


def test_augmented_patches_hold_pancreas_and_lesions_reproducibly(cases):
    dataset = VolumeDataset(cases, (16, 32, 32), spacing_mm=(3.0, 3.0, 3.0),
                            lesion_probability=1.0, seed=0)

    def draw(stream_seed):
        dataset.set_random_state(stream_seed)
        return [dataset[0] for _ in range(6)]

    first, again = draw(1), draw(1)
    assert all(torch.equal(a["image"], b["image"]) for a, b in zip(first, again))
    assert all(item["image"].shape == (1, 16, 32, 32) for item in first)
    assert sum(bool((item["label"] == 1).any()) for item in first) >= 2  # pancreas-biased crops
    assert any((item["label"] == 2).any() for item in first)
    assert not torch.equal(first[0]["image"], first[1]["image"])


def test_wrong_patch_dimensionality_is_an_input_error(cases):
    with pytest.raises(InputError, match="3-D patch_size"):
        VolumeDataset(cases, (32, 32))


def test_roi_keeps_the_labelled_region_and_its_margin(cases):
    hu, label, spacing = load_resampled_case(cases[0], None)
    region = labelled_region(label, spacing, margin_mm=15.0)
    kept = label[region]
    assert kept.sum() == label.sum()  # every pancreas voxel
    assert kept.size < label.size / 10
    # 15 mm at 3 mm = 5 voxels beyond the label on each side (inside the volume).
    foreground = np.argwhere(kept > 0)
    assert foreground.min(0).tolist() == [5, 5, 5]
    assert (np.array(kept.shape) - 1 - foreground.max(0)).tolist() == [5, 5, 5]
    dataset = VolumeDataset(cases, (16, 16, 16), roi_margin_mm=15.0, augment=False)
    assert (dataset[0]["label"] == 1).any()
    empty = np.zeros((4, 5, 6), np.uint8)
    assert labelled_region(empty, spacing, 15.0) == (slice(0, 4), slice(0, 5), slice(0, 6))
