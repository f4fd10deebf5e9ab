"""PyTorch dataset of 3-D training patches from ``VolumeCase`` records (3-D stages).

Item (one random patch of one case)::

    {"image": float32 tensor (1, D, H, W) = normalize_ct(HU, hu_window, per-volume reference),
     "label": int64 tensor (1, D, H, W) in {0, 1, 2},
     "spacing_mm": float32 tensor (3,) = voxel spacing (x, y, z),
     "has_label": True, "source": str, "case": str, "patient": str,
     "scan_id": int = index of the patient among the dataset's sorted patients}

Axes are the canonical (z, y, x) of ``NOTES.md``; ``patch_size`` is in that tensor order.
Pipeline per item: read + reorient to LPS + resample to ``spacing_mm`` (x, y, z) + pad to the
patch once, kept in memory (``cache=True``) → crop biased to the pancreas (MONAI
``RandCropByPosNegLabel``) → [synthetic lesion, intensity augmentation] → ``normalize_ct`` with
the volume's soft-tissue reference (followed through the same intensity curve) → [MONAI spatial
augmentation].
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
import torch
from torch.utils.data import Dataset

from pancreas_ssl_seg.errors import InputError
from pancreas_ssl_seg.hounsfield import DEFAULT_HU_WINDOW
from pancreas_ssl_seg.preprocessing import normalize_ct, resample_to_spacing, soft_tissue_reference

from .augment import (apply_intensity_augmentation, build_spatial_augmentation,
                      sample_intensity_augmentation)
from .sampling import (AugmentationStream, crop_biased_to_label, label_indices, pad_to_patch,
                       to_tensors)
from .slices import read_canonical_pair, remap_labels
from .synthetic_lesions import insert_synthetic_lesion
from .volumes import VolumeCase

# Voxels kept to follow the volume's soft-tissue reference through intensity augmentation.
REFERENCE_SAMPLE_SIZE = 200_000


def load_resampled_case(case: VolumeCase, spacing_mm: Sequence[float] | None
                        ) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """(HU float32, label uint8 in 0/1/2, spacing (x, y, z) mm): arrays (z, y, x) in LPS,
    resampled to ``spacing_mm`` unless it is ``None``."""
    if case.label_path is None:
        raise InputError(f"{case.image_path}: case {case.case} has no label map")
    image, label = read_canonical_pair(case.image_path, case.label_path)
    if spacing_mm is not None:
        image = resample_to_spacing(sitk.Cast(image, sitk.sitkFloat32), spacing_mm)
        label = resample_to_spacing(label, spacing_mm, is_label=True, default_value=0)
    return (sitk.GetArrayFromImage(image).astype(np.float32),
            remap_labels(sitk.GetArrayFromImage(label), case.label_map),
            tuple(float(s) for s in image.GetSpacing()))


def labelled_region(label: np.ndarray, spacing_mm: Sequence[float], margin_mm: float
                    ) -> tuple[slice, ...]:
    """Bounding box of ``label > 0`` grown by ``margin_mm`` (spacing (x, y, z), array (z, y, x));
    the whole array when nothing is labelled."""
    foreground = np.argwhere(label > 0)
    if foreground.size == 0:
        return tuple(slice(0, size) for size in label.shape)
    margin = np.ceil(margin_mm / np.asarray(spacing_mm, float)[::-1]).astype(int)
    low = np.maximum(foreground.min(0) - margin, 0)
    high = np.minimum(foreground.max(0) + margin + 1, label.shape)
    return tuple(slice(int(lo), int(hi)) for lo, hi in zip(low, high))


class VolumeDataset(Dataset):
    """Random 3-D patches of labelled CT volumes (see the module docstring for items).

    cases: ``VolumeCase`` list (``volumes.volume_cases_from_spec``).
    patch_size: (D, H, W) voxels; spacing_mm: (x, y, z) to resample to, ``None`` keeps the grid.
    cache: keep resampled volumes in memory (per process) after their first use (about 9 bytes
        per voxel with the crop indices; use ``roi_margin_mm`` or ``cache=False`` for large sets).
    roi_margin_mm: keep only the labelled region's bounding box grown by this margin (the fine
        stage sees only the coarse box plus its margin at inference); ``None`` keeps everything.
    """

    def __init__(self, cases: Sequence[VolumeCase], patch_size: Sequence[int],
                 spacing_mm: Sequence[float] | None = None, augment: bool = True,
                 lesion_probability: float = 0.5, hu_window: Sequence[float] = DEFAULT_HU_WINDOW,
                 seed: int = 0, cache: bool = True, roi_margin_mm: float | None = None):
        if not cases:
            raise InputError("VolumeDataset: expected at least one volume case, got none")
        if len(patch_size) != 3:
            raise InputError("VolumeDataset: expected a 3-D patch_size (D, H, W), "
                             f"got {patch_size}")
        self.cases = list(cases)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.spacing_mm = None if spacing_mm is None else tuple(float(s) for s in spacing_mm)
        self.augment = augment
        self.lesion_probability = lesion_probability
        self.hu_window = tuple(float(h) for h in hu_window)
        self.cache = cache
        self.roi_margin_mm = roi_margin_mm
        self.spatial = build_spatial_augmentation(spatial_dims=3)
        self._stream = AugmentationStream(seed)
        self._loaded: dict[int, tuple] = {}
        self._scan_ids = {p: i for i, p in enumerate(sorted({c.patient_id for c in self.cases}))}

    def set_random_state(self, seed: int) -> None:
        """Restart the augmentation stream (exact resume; see ``AugmentationStream``)."""
        self._stream.set_random_state(seed)

    def __len__(self) -> int:
        return len(self.cases)

    def _load(self, index: int) -> tuple:
        """(hu (1, D, H, W), label (1, D, H, W), crop indices, spacing (x, y, z), voxel sample
        for the soft-tissue reference); arrays padded to the patch."""
        if index in self._loaded:
            return self._loaded[index]
        hu, label, spacing = load_resampled_case(self.cases[index], self.spacing_mm)
        flat = hu.ravel()
        # The reference is the whole volume's, as at inference, even when only a region is kept.
        reference_voxels = flat[::max(1, flat.size // REFERENCE_SAMPLE_SIZE)].copy()
        if self.roi_margin_mm is not None:
            region = labelled_region(label, spacing, self.roi_margin_mm)
            hu, label = hu[region].copy(), label[region].copy()
        hu, label = pad_to_patch(hu[None], label[None], self.patch_size)
        loaded = (hu, label, label_indices(label), spacing, reference_voxels)
        if self.cache:
            self._loaded[index] = loaded
        return loaded

    def __getitem__(self, index: int) -> dict:
        case = self.cases[index]
        rng = self._stream.rng(index, self.augment)
        hu, label, indices, spacing, reference_voxels = self._load(index)
        image_patch, label_patch = crop_biased_to_label(hu, label, self.patch_size, rng, indices)
        image_patch, label_patch = image_patch[0], label_patch[0]
        if self.augment:
            if rng.random() < self.lesion_probability:
                image_patch, label_patch = insert_synthetic_lesion(image_patch, label_patch, rng,
                                                                   spacing)
            params = sample_intensity_augmentation(rng)
            image_patch = apply_intensity_augmentation(image_patch, params, self.hu_window, rng)
            # The volume's reference follows the same intensity curve (median commutes with it).
            reference_voxels = apply_intensity_augmentation(reference_voxels, params,
                                                            self.hu_window, pointwise_only=True)
        image_patch = normalize_ct(image_patch, self.hu_window,
                                   soft_tissue_reference(reference_voxels))
        image, label_tensor = to_tensors(image_patch[None], label_patch[None],
                                         self.spatial if self.augment else None, rng)
        return {"image": image, "label": label_tensor,
                "spacing_mm": torch.tensor(spacing, dtype=torch.float32), "has_label": True,
                "source": case.source, "case": case.case, "patient": case.patient_id,
                "scan_id": self._scan_ids[case.patient_id]}
