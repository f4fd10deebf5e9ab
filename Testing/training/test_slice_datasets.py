"""SliceDataset items, patient splits and config-driven sample assembly on real NIH/3 mm data."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from pancreas_ssl_seg.errors import InputError
from pancreas_ssl_seg.preprocessing import normalize_ct, soft_tissue_reference
from pancreas_ssl_training.data.slice_datasets import (SliceDataset, build_slice_sources,
                                                 split_by_patient)
from pancreas_ssl_training.data.intensity_mapping import GreyMapping


@pytest.fixture(scope="module")
def spec(shared_data):
    folder = shared_data / "ct-abdomen-3mm"
    return {"nih_hu": str(shared_data / "nih-pancreas-slices-hu"),
            "nih_8bit": {"path": str(shared_data / "nih-pancreas-slices-8bit"),
                         "patients": ["0004", "0005"]},
            "volumes": [{"image": str(folder / "example_ct.nii.gz"),
                         "label": str(folder / "example_seg_fast_force_split.nii.gz"),
                         "label_map": {"7": 1}, "source": "ct-abdomen-3mm"}]}


@pytest.fixture(scope="module")
def samples(spec):
    return build_slice_sources(spec)


FIT = GreyMapping(a=0.877, b=9.34, method="percentile", residual_grey=0.0, residual_hu=0.0,
                  n_pairs=1)


def test_sources_cover_every_entry(samples, spec):
    sources = {s.source for s in samples}
    assert sources == {"nih-hu", "nih-8bit", "ct-abdomen-3mm"}
    assert {s.patient for s in samples if s.source == "nih-8bit"} == {"0004", "0005"}
    with pytest.raises(InputError, match="unknown keys"):
        build_slice_sources({**spec, "nih_typo": "x"})


def test_items_have_the_contract_shapes_and_types(samples):
    dataset = SliceDataset(samples, (64, 64), to_hu=FIT, seed=3)
    for index in (0, 20, len(samples) - 1):
        item = dataset[index]
        assert item["image"].shape == (1, 64, 64) and item["image"].dtype == torch.float32
        assert item["label"].shape == (1, 64, 64) and item["label"].dtype == torch.int64
        assert set(item["label"].unique().tolist()) <= {0, 1, 2}
        assert item["has_label"] is True
        assert item["case"] == samples[index].case and item["source"] == samples[index].source
    batch = next(iter(DataLoader(dataset, batch_size=4, shuffle=False)))
    assert batch["image"].shape == (4, 1, 64, 64) and len(batch["case"]) == 4
    # Slices of one patient share a scan id (PolyCL pairs by it); cases stay per slice.
    assert batch["patient"] == ["0001"] * 4 and batch["scan_id"].tolist() == [0] * 4
    assert dataset[5]["scan_id"] == 1 and dataset[len(samples) - 1]["patient"] == "example_ct"
    # NIH slices have no stored spacing: the documented assumption (x, y) = 0.8 mm.
    assert torch.equal(batch["spacing_mm"], torch.full((4, 2), 0.8))
    resampled = SliceDataset(samples, (64, 64), spacing_mm=(3.0, 2.0), to_hu=FIT)
    assert resampled[len(samples) - 1]["spacing_mm"].tolist() == [3.0, 2.0]


def test_without_augmentation_item_is_normalized_crop_and_repeatable(samples):
    sample = samples[0]
    dataset = SliceDataset([sample], (96, 96), augment=False)
    first, second = dataset[0], dataset[0]
    assert torch.equal(first["image"], second["image"])
    reference = soft_tissue_reference(sample.image)
    full = normalize_ct(sample.image, (-200, 300), reference)
    low, high = full.min(), full.max()
    assert low - 1e-5 <= first["image"].min() and first["image"].max() <= high + 1e-5
    # The patch is a window of the normalised slice, and its label the same window of the mask.
    patch = first["image"][0].numpy()
    first_rows = np.lib.stride_tricks.sliding_window_view(full, 96, axis=1)
    starts = np.argwhere(np.all(first_rows == patch[0], axis=-1))
    windows = [(r, c) for r, c in starts if np.array_equal(full[r:r + 96, c:c + 96], patch)]
    assert windows
    r, c = windows[0]
    np.testing.assert_array_equal(first["label"][0].numpy(), sample.label[r:r + 96, c:c + 96])


def test_crops_are_biased_to_the_pancreas(samples):
    hu_samples = [s for s in samples if s.source == "nih-hu"]
    dataset = SliceDataset(hu_samples, (32, 32), augment=True, lesion_probability=0.0, seed=1)
    with_pancreas = np.mean([dataset[i % len(hu_samples)]["label"].sum().item() > 0
                             for i in range(30)])
    # Pancreas covers < 2 % of a slice: unbiased 32×32 crops would rarely touch it.
    assert with_pancreas > 0.35


def test_lesions_are_painted_when_asked(samples):
    hu_samples = [s for s in samples if s.source == "nih-hu"]
    # Whole-slice patches, so the crop cannot miss the lesion.
    dataset = SliceDataset(hu_samples, (512, 512), lesion_probability=1.0, seed=2)
    assert all((dataset[i]["label"] == 2).any() for i in range(len(hu_samples)))
    no_lesions = SliceDataset(hu_samples, (512, 512), lesion_probability=0.0, seed=2)
    assert not any((no_lesions[i]["label"] == 2).any() for i in range(len(hu_samples)))


def test_resampling_to_coarse_spacing_shrinks_the_slice(samples):
    sample = next(s for s in samples if s.source == "nih-hu")
    # 512 px × 0.8 mm (assumed NIH spacing) = 410 mm → 137 px at 3 mm; the 160 patch holds it all.
    dataset = SliceDataset([sample], (160, 160), spacing_mm=(3.0, 3.0), augment=False)
    item = dataset[0]
    expected = sample.label.sum() * (0.8 / 3.0) ** 2
    assert item["label"].sum().item() == pytest.approx(expected, rel=0.2)


def test_8bit_mapping_changes_intensities(samples):
    grey = [s for s in samples if s.source == "nih-8bit"][:1]
    mapped = SliceDataset(grey, (64, 64), augment=False, to_hu=FIT)[0]["image"]
    raw = SliceDataset(grey, (64, 64), augment=False, to_hu=None)[0]["image"]
    assert not torch.allclose(mapped, raw)


def test_split_by_patient_never_splits_a_patient(samples):
    train, validation = split_by_patient(samples, validation_fraction=0.3, seed=0)
    assert train and validation and len(train) + len(validation) == len(samples)
    assert not {s.patient for s in train} & {s.patient for s in validation}


def test_random_state_makes_augmented_items_reproducible(samples):
    dataset = SliceDataset(samples[:15], (64, 64), lesion_probability=0.5, seed=0)

    def draw(stream_seed):
        dataset.set_random_state(stream_seed)
        return [dataset[i]["image"] for i in (0, 3, 3, 7)]

    first, again, other = draw(5), draw(5), draw(6)
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not torch.equal(first[1], first[2])  # the same slice twice gets two augmentations
    assert not all(torch.equal(a, b) for a, b in zip(first, other))
