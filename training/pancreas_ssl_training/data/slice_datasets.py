"""PyTorch datasets of 2-D training patches, and config-driven assembly of slice samples.

``SliceDataset`` item (one random patch of one slice)::

    {"image": float32 tensor (1, H, W) = normalize_ct(HU, hu_window, per-slice reference),
     "label": int64 tensor (1, H, W) in {0, 1, 2},
     "spacing_mm": float32 tensor (2,) = pixel spacing (x, y) of the patch (before the small
         random zoom of the spatial augmentation),
     "has_label": bool, "source": str, "case": str (the slice), "patient": str,
     "scan_id": int = index of the patient among the dataset's sorted patients (slices of one
         scan share it; PolyCL's "same scan" relation)}

Pipeline per item: 8-bit → HU (when ``to_hu`` is a ``GreyMapping``) → resample to ``spacing_mm``
(both kept in memory per slice, padded to the patch, with a sample of the whole slice's values
for its soft-tissue reference) → crop biased to the pancreas (MONAI ``RandCropByPosNegLabel``) →
[synthetic lesion, intensity augmentation; the reference sample follows the same intensity
curve] → ``normalize_ct`` with the whole slice's reference (as the engine's per-slice reference
at inference) → [MONAI spatial augmentation]. Brackets: only with ``augment=True``. Augmenting
the patch rather than the whole slice made an item 2.5x cheaper.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import SimpleITK as sitk
import torch
from torch.utils.data import Dataset

from pancreas_ssl_seg.errors import InputError
from pancreas_ssl_seg.hounsfield import DEFAULT_HU_WINDOW, OUTSIDE_SCAN_HU, SOFT_TISSUE_HU
from pancreas_ssl_seg.preprocessing import normalize_ct, resample_to_spacing, soft_tissue_reference

from .augment import (apply_intensity_augmentation, build_spatial_augmentation,
                      sample_intensity_augmentation)
from .intensity_mapping import GreyMapping, to_hu
from .sampling import (AugmentationStream, crop_biased_to_label, label_indices, pad_to_patch,
                       to_tensors)
from .slices import SliceSample, load_nih_8bit_slices, load_nih_hu_slices
from .synthetic_lesions import insert_synthetic_lesion
from .volumes import VOLUME_SPEC_KEYS, slices_from_case, volume_cases_from_spec

# The NIH slice folders store no spacing; NIH Pancreas-CT in-plane spacing is 0.66–0.98 mm
# (data README). 0.8 mm is the assumed middle when a slice has none.
ASSUMED_NIH_SPACING_MM = (0.8, 0.8)
ZOOM_RANGE = (0.8, 1.2)


def _resample_slice(image: np.ndarray, label: np.ndarray, spacing_in: Sequence[float],
                    spacing_out: Sequence[float], pad_value: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Resample a 2-D slice (spacing in (x, y) mm) with the engine's SimpleITK resampler."""
    image_sitk = sitk.GetImageFromArray(image)
    label_sitk = sitk.GetImageFromArray(label)
    for item in (image_sitk, label_sitk):
        item.SetSpacing([float(s) for s in spacing_in])
    image_out = resample_to_spacing(image_sitk, spacing_out, default_value=pad_value)
    label_out = resample_to_spacing(label_sitk, spacing_out, is_label=True, default_value=0)
    return sitk.GetArrayFromImage(image_out), sitk.GetArrayFromImage(label_out)


class SliceDataset(Dataset):
    """Random patches of axial slices for 2-D training (see the module docstring for items).

    samples: ``SliceSample`` list; a sample with ``label=None`` is unlabelled (``has_label``
        False, label all 0), for self-supervised methods.
    patch_size: (H, W) of every item.
    spacing_mm: (x, y) mm to resample to, or ``None`` to keep the stored grid.
    lesion_probability: chance of painting a synthetic lesion (augment only, HU slices with
        pancreas only).
    to_hu: a ``GreyMapping`` maps 8-bit slices to HU; ``None`` uses grey levels as if they were
        HU (the domain-shift experiment's naive baseline).
    """

    def __init__(self, samples: Sequence[SliceSample], patch_size: Sequence[int],
                 spacing_mm: Sequence[float] | None = None, augment: bool = True,
                 lesion_probability: float = 0.5, hu_window: Sequence[float] = DEFAULT_HU_WINDOW,
                 seed: int = 0, to_hu: GreyMapping | None = None):
        if not samples:
            raise InputError("SliceDataset: expected at least one slice sample, got none")
        self.samples = list(samples)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.spacing_mm = None if spacing_mm is None else tuple(float(s) for s in spacing_mm[:2])
        self.augment = augment
        self.lesion_probability = lesion_probability
        self.hu_window = tuple(float(h) for h in hu_window)
        self.seed = seed
        self.to_hu = to_hu
        # NIH slices store no spacing (0.66-0.98 mm, 0.8 assumed): zoom covers +-20 %.
        self.spatial = build_spatial_augmentation(spatial_dims=2, zoom_range=ZOOM_RANGE)
        self._stream = AugmentationStream(seed)
        self._cache: dict[int, tuple] = {}
        self._scan_ids = {p: i for i, p in enumerate(sorted({s.patient for s in self.samples}))}

    def set_random_state(self, seed: int) -> None:
        """Restart the augmentation stream (exact resume; see ``AugmentationStream``)."""
        self._stream.set_random_state(seed)

    def __len__(self) -> int:
        return len(self.samples)

    def _prepared(self, index: int) -> tuple:
        """(HU (1, H, W), label (1, H, W), crop indices, the slice's values for its reference):
        resampled, padded to the patch, computed once per slice (no randomness in them)."""
        if index not in self._cache:
            hu, label = self._hu_and_label(self.samples[index])
            reference_values = hu[(hu > SOFT_TISSUE_HU[0]) & (hu < SOFT_TISSUE_HU[1])]
            hu, label = pad_to_patch(hu[None], label[None], self.patch_size)
            self._cache[index] = (hu, label, label_indices(label), reference_values)
        return self._cache[index]

    def _hu_and_label(self, sample: SliceSample) -> tuple[np.ndarray, np.ndarray]:
        image = np.asarray(sample.image, dtype=np.float32)
        if sample.units == "8bit" and self.to_hu is not None:
            image = to_hu(image, self.to_hu)
        label = (np.zeros(image.shape, np.uint8) if sample.label is None
                 else np.asarray(sample.label, dtype=np.uint8))
        if self.spacing_mm is not None:
            spacing_in = sample.spacing_mm or ASSUMED_NIH_SPACING_MM
            pad_value = OUTSIDE_SCAN_HU if sample.units == "hu" or self.to_hu is not None else 0.0
            image, label = _resample_slice(image, label, spacing_in, self.spacing_mm, pad_value)
        return image, label

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        rng = self._stream.rng(index, self.augment)
        hu, label, indices, reference_values = self._prepared(index)
        spacing = self.spacing_mm or sample.spacing_mm or ASSUMED_NIH_SPACING_MM
        image_patch, label_patch = crop_biased_to_label(hu, label, self.patch_size, rng, indices)
        if self.augment:
            in_hu = sample.units == "hu" or self.to_hu is not None
            if in_hu and rng.random() < self.lesion_probability:
                lesion_image, lesion_label = insert_synthetic_lesion(image_patch[0],
                                                                     label_patch[0], rng, spacing)
                image_patch, label_patch = lesion_image[None], lesion_label[None]
            params = sample_intensity_augmentation(rng)
            image_patch = apply_intensity_augmentation(image_patch, params, self.hu_window, rng)
            # The slice's reference follows the same curve (the median commutes with it).
            reference_values = apply_intensity_augmentation(reference_values, params,
                                                            self.hu_window, pointwise_only=True)
        image_patch = normalize_ct(image_patch, self.hu_window,
                                   soft_tissue_reference(reference_values))
        image, label = to_tensors(image_patch, label_patch,
                                  self.spatial if self.augment else None, rng)
        return {"image": image, "label": label,
                "spacing_mm": torch.tensor(spacing, dtype=torch.float32),
                "has_label": sample.label is not None, "source": sample.source,
                "case": sample.case, "patient": sample.patient,
                "scan_id": self._scan_ids[sample.patient]}


def split_by_patient(samples: Sequence[SliceSample], validation_fraction: float = 0.2,
                     seed: int = 0) -> tuple[list[SliceSample], list[SliceSample]]:
    """(train, validation) with every patient's slices on one side only."""
    patients = sorted({s.patient for s in samples})
    order = np.random.default_rng(seed).permutation(len(patients))
    n_validation = max(1, round(validation_fraction * len(patients))) if len(patients) > 1 else 0
    validation = {patients[i] for i in order[:n_validation]}
    return ([s for s in samples if s.patient not in validation],
            [s for s in samples if s.patient in validation])


def build_slice_sources(spec: Mapping) -> list[SliceSample]:
    """Slice samples named by a config's data section (``data.sources``).

    Keys (all optional):
      ``nih_hu``: folder of the NIH HU slices;
      ``nih_8bit``: folder, or ``{"path": folder, "patients": ["0004", ...]}``;
      volume sources, cut into axial slices: ``task07``, ``nih_dicom``, ``folders``,
      ``corrections``, ``volumes`` (see ``volumes.volume_cases_from_spec``).
    Relative paths are taken as they are (relative to the working directory).
    """
    known = {"nih_hu", "nih_8bit", *VOLUME_SPEC_KEYS}
    unknown = set(spec) - known
    if unknown:
        raise InputError(f"data spec: unknown keys {sorted(unknown)}; expected {sorted(known)}")
    samples: list[SliceSample] = []
    if "nih_hu" in spec:
        samples += load_nih_hu_slices(spec["nih_hu"])
    if "nih_8bit" in spec:
        entry = spec["nih_8bit"]
        if isinstance(entry, Mapping):
            samples += load_nih_8bit_slices(entry["path"], entry.get("patients"))
        else:
            samples += load_nih_8bit_slices(entry)
    for case in volume_cases_from_spec(spec):
        samples += slices_from_case(case)
    return samples
