"""Randomness and patch cropping shared by the 2-D and 3-D training datasets."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from monai.transforms import RandCropByPosNegLabel, SpatialPad
from monai.transforms.utils import map_binary_to_indices
from torch.utils.data import get_worker_info


class AugmentationStream:
    """Per-item random generators that make augmented items reproducible.

    Without augmentation an item depends only on ``(seed, index)``: the same patch every time.
    With it, ``set_random_state(s)`` restarts the stream: what is drawn next depends only on
    ``seed``, ``s``, the DataLoader worker's seed, the indices asked for and their order. The
    trainer calls it once per iteration, so a resumed run draws the same batches.
    """

    def __init__(self, seed: int):
        self.seed = int(seed)
        self._stream_seed = 0
        self._draws = 0

    def set_random_state(self, seed: int) -> None:
        self._stream_seed = int(seed)
        self._draws = 0

    def rng(self, index: int, augment: bool) -> np.random.Generator:
        if not augment:
            return np.random.default_rng([self.seed, index])
        self._draws += 1
        worker = get_worker_info()
        worker_seed = 0 if worker is None else worker.seed % 2**32
        return np.random.default_rng([self.seed, self._stream_seed, worker_seed, index,
                                      self._draws])


def pad_to_patch(image: np.ndarray, label: np.ndarray, patch_size: Sequence[int]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Edge-pad channel-first arrays that are smaller than the patch (no-op otherwise)."""
    if all(size >= patch for size, patch in zip(label.shape[1:], patch_size)):
        return image, label
    pad = SpatialPad(tuple(patch_size), mode="edge")
    return np.asarray(pad(image)), np.asarray(pad(label))


def label_indices(label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(foreground, background) flat indices of a channel-first label (foreground = label > 0);
    int32 to halve what cached datasets keep (arrays stay far below 2**31 voxels)."""
    foreground, background = map_binary_to_indices(label > 0)
    return np.asarray(foreground, dtype=np.int32), np.asarray(background, dtype=np.int32)


def crop_biased_to_label(image: np.ndarray, label: np.ndarray, patch_size: Sequence[int],
                         rng: np.random.Generator,
                         indices: tuple[np.ndarray, np.ndarray] | None = None
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Channel-first patch pair of ``patch_size``, centred on foreground half the time.

    Arrays smaller than the patch are edge-padded first. ``indices``: ``label_indices`` of an
    already padded ``label`` (any label with the same foreground), to skip recomputing them.
    Without foreground every patch is a background patch (MONAI warns and sets its positive
    ratio to 0).
    """
    padded_image, padded_label = pad_to_patch(image, label, patch_size)
    if indices is None or padded_label is not label:
        indices = label_indices(padded_label)
    cropper = RandCropByPosNegLabel(tuple(patch_size), pos=1, neg=1, num_samples=1,
                                    allow_smaller=True)
    cropper.set_random_state(seed=int(rng.integers(2**31)))
    cropper.randomize(padded_label, fg_indices=indices[0], bg_indices=indices[1])
    return (np.asarray(cropper(padded_image, randomize=False)[0]),
            np.asarray(cropper(padded_label, randomize=False)[0]))


def to_tensors(image: np.ndarray, label: np.ndarray, spatial=None,
               rng: np.random.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(float32 image, int64 label) tensors of channel-first patches, after the MONAI spatial
    augmentation ``spatial`` when given (labels travel as float, nearest-interpolated)."""
    item = {"image": image, "label": label.astype(np.float32)}
    if spatial is not None:
        spatial.set_random_state(seed=int(rng.integers(2**31)))
        item = spatial(item)
    return (torch.as_tensor(np.asarray(item["image"]), dtype=torch.float32),
            torch.as_tensor(np.asarray(item["label"])).round().to(torch.int64))
