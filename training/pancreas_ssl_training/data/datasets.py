"""PyTorch datasets of 2-D training patches, and config-driven assembly of slice samples.

``SliceDataset`` item (one random patch of one slice)::

    {"image": float32 tensor (1, H, W) = normalize_ct(HU, hu_window, per-slice reference),
     "label": int64 tensor (1, H, W) in {0, 1, 2},
     "has_label": bool, "source": str, "case": str}

Pipeline per item: 8-bit → HU (when ``to_hu`` is a ``GreyMapping``) → resample to ``spacing_mm``
→ [synthetic lesion, intensity augmentation] → per-slice soft-tissue reference → crop biased to
the pancreas (MONAI ``RandCropByPosNegLabel``, padded when the slice is smaller) →
``normalize_ct`` → [MONAI spatial augmentation]. Brackets: only with ``augment=True``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from monai.transforms import RandCropByPosNegLabel, SpatialPad
from torch.utils.data import Dataset, get_worker_info

from PancreasSSLSegLib.errors import InputError
from PancreasSSLSegLib.preprocessing import normalize_ct, resample_to_spacing, soft_tissue_reference

from .augment import augment_intensity, build_spatial_augmentation
from .intensity_mapping import GreyMapping, to_hu
from .slices import (SliceSample, axial_slices_from_volume, load_nih_8bit_slices,
                     load_nih_hu_slices)
from .synthetic_lesions import insert_synthetic_lesion
from .volumes import read_volume_source, slices_from_case

# The NIH slice folders store no spacing; NIH Pancreas-CT in-plane spacing is 0.66–0.98 mm
# (data README). 0.8 mm is the assumed middle when a slice has none.
ASSUMED_NIH_SPACING_MM = (0.8, 0.8)
AIR_HU = -1024.0


def _resample_slice(image: np.ndarray, label: np.ndarray, spacing_in: Sequence[float],
                    spacing_out: Sequence[float], pad_value: float) -> tuple[np.ndarray, np.ndarray]:
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
                 lesion_probability: float = 0.5, hu_window: Sequence[float] = (-200, 300),
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
        self.spatial = build_spatial_augmentation(spatial_dims=2)
        self._stream_seed = 0
        self._draws = 0

    def set_random_state(self, seed: int) -> None:
        """Restart the augmentation stream: the items drawn next depend only on ``seed``,
        ``self.seed``, the indices asked for and their order (exact resume)."""
        self._stream_seed = int(seed)
        self._draws = 0

    def __len__(self) -> int:
        return len(self.samples)

    def _rng(self, index: int) -> np.random.Generator:
        if not self.augment:
            return np.random.default_rng([self.seed, index])  # same patch every time
        # Differs per call and per DataLoader worker (torch gives each worker its own seed).
        self._draws += 1
        worker = get_worker_info()
        worker_seed = 0 if worker is None else worker.seed % 2**32
        return np.random.default_rng([self.seed, self._stream_seed, worker_seed, index,
                                      self._draws])

    def _hu_and_label(self, sample: SliceSample) -> tuple[np.ndarray, np.ndarray]:
        image = np.asarray(sample.image, dtype=np.float32)
        if sample.units == "8bit" and self.to_hu is not None:
            image = to_hu(image, self.to_hu)
        label = (np.zeros(image.shape, np.uint8) if sample.label is None
                 else np.asarray(sample.label, dtype=np.uint8))
        if self.spacing_mm is not None:
            spacing_in = sample.spacing_mm or ASSUMED_NIH_SPACING_MM
            pad_value = AIR_HU if sample.units == "hu" or self.to_hu is not None else 0.0
            image, label = _resample_slice(image, label, spacing_in, self.spacing_mm, pad_value)
        return image, label

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        rng = self._rng(index)
        hu, label = self._hu_and_label(sample)
        spacing = self.spacing_mm or sample.spacing_mm or ASSUMED_NIH_SPACING_MM
        if self.augment:
            in_hu = sample.units == "hu" or self.to_hu is not None
            if in_hu and rng.random() < self.lesion_probability:
                hu, label = insert_synthetic_lesion(hu, label, rng, spacing)
            hu = augment_intensity(hu, rng, self.hu_window)
        reference_hu = soft_tissue_reference(hu)

        image_patch, label_patch = self._crop(hu[None], label[None], rng)
        image_patch = normalize_ct(image_patch, self.hu_window, reference_hu)
        item = {"image": image_patch, "label": label_patch.astype(np.float32)}
        if self.augment:
            self.spatial.set_random_state(seed=int(rng.integers(2**31)))
            item = self.spatial(item)
        return {"image": torch.as_tensor(np.asarray(item["image"]), dtype=torch.float32),
                "label": torch.as_tensor(np.asarray(item["label"])).round().to(torch.int64),
                "has_label": sample.label is not None, "source": sample.source,
                "case": sample.case}

    def _crop(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator):
        """(1, H, W) patch pair, centred on pancreas half the time when the slice has any."""
        pad = SpatialPad(self.patch_size, mode="edge")
        image, label = np.asarray(pad(image)), np.asarray(pad(label))
        cropper = RandCropByPosNegLabel(self.patch_size, label=label > 0, pos=1, neg=1,
                                        num_samples=1, image=None, allow_smaller=True)
        cropper.set_random_state(seed=int(rng.integers(2**31)))
        image_patch = cropper(image, randomize=True)[0]
        label_patch = cropper(label, randomize=False)[0]
        return np.asarray(image_patch), np.asarray(label_patch)


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
    """Slice samples named by a config's data section.

    Keys (all optional):
      ``nih_hu``: folder of the NIH HU slices;
      ``nih_8bit``: folder, or ``{"path": folder, "patients": ["0004", ...]}``;
      ``volumes``: list of single cases ``{"image", "label", "label_map": {source value: 0/1/2},
      "source", "case"?, "patient"?}`` or datasets ``{"format": "decathlon" | "nih" | "folder" |
      "corrections", "path", ...}`` (see ``volumes.read_volume_source``), cut into axial slices.
    Relative paths are taken as they are (relative to the working directory).
    """
    known = {"nih_hu", "nih_8bit", "volumes"}
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
    for volume in spec.get("volumes", []):
        if "format" in volume:
            for case in read_volume_source(volume):
                samples += slices_from_case(case)
            continue
        label_map = {int(k): int(v) for k, v in volume["label_map"].items()}
        samples += axial_slices_from_volume(Path(volume["image"]), Path(volume["label"]), label_map,
                                            volume["source"], case=volume.get("case"),
                                            patient=volume.get("patient"))
    return samples
