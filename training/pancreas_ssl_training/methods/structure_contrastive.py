"""Global-feature contrastive SSL guided by pancreatic structure (arXiv 2505.07165).

Points are sampled at the bottleneck resolution of the projection head: class 1 on the skeleton
of the pancreas parenchyma (label 1), class 2 on the skeleton of the lesion, class 0 (negatives)
on the skeleton of a ring around the organ — the organ dilated by a random 10-20 voxels at label
resolution, minus the organ. A supervised NT-Xent loss (same class = positive) with organ points
as anchors pulls pancreas (and lesion) features together and pushes the surrounding tissue away.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy import ndimage
from skimage.morphology import skeletonize
from torch import nn

from pancreas_ssl_seg.labels import LESION, PANCREAS

from .base import Method, zero_like_graph

RING = 0  # the negatives' class; pancreas and lesion points take their label values


def block_reduce(mask: np.ndarray, factors: Sequence[int], reduce: str) -> np.ndarray:
    """Downsample a boolean mask by integer ``factors``: block ``"mean"`` >= 0.5 or ``"any"``."""
    split = [s for size, f in zip(mask.shape, factors) for s in (size // f, f)]
    blocks = mask.reshape(split)
    axes = tuple(range(1, 2 * mask.ndim, 2))
    return blocks.mean(axis=axes) >= 0.5 if reduce == "mean" else blocks.any(axis=axes)


def low_resolution_mask(mask: np.ndarray, factors: Sequence[int]) -> np.ndarray:
    """Majority downsampling; a structure smaller than one block keeps the blocks it touches."""
    low = block_reduce(mask, factors, "mean")
    return low if low.any() or not mask.any() else block_reduce(mask, factors, "any")


def structure_points(label: np.ndarray, factors: Sequence[int], ring_voxels: int,
                     max_points: int, rng: np.random.Generator) -> dict[int, np.ndarray]:
    """Sampled point coordinates ``{class: (K, dims) int array}`` at the downsampled resolution.

    ``label`` is one sample's spatial label array (0/1/2) and ``factors`` the per-axis ratio of
    its resolution to the bottleneck's. Ring points never fall in a block containing organ.
    """
    organ, lesion = label >= PANCREAS, label == LESION
    ring = ~organ & (ndimage.distance_transform_edt(~organ) <= ring_voxels) if organ.any() \
        else np.zeros_like(organ)
    ring_low = block_reduce(ring, factors, "mean") & ~block_reduce(organ, factors, "any")
    skeletons = {PANCREAS: skeletonize(low_resolution_mask(label == PANCREAS, factors)),
                 LESION: skeletonize(low_resolution_mask(lesion, factors)),
                 RING: skeletonize(ring_low)}
    points = {}
    for cls, skeleton in skeletons.items():
        coords = np.argwhere(skeleton)
        if len(coords) > max_points:
            coords = coords[rng.choice(len(coords), max_points, replace=False)]
        points[cls] = coords
    return points


def supervised_nt_xent(features: torch.Tensor, classes: torch.Tensor, anchors: torch.Tensor,
                       temperature: float) -> torch.Tensor | None:
    """Supervised NT-Xent over L2-normalised ``features`` (M, P); ``anchors`` (M,) bool.

    For each anchor with at least one same-class point: mean over its positives of
    ``-log(exp(s_ip / t) / sum_{j != i} exp(s_ij / t))``. ``None`` when no anchor has a positive.
    Written here because MONAI's ``ContrastiveLoss`` is the unsupervised (paired views) form.
    """
    similarity = features.float() @ features.float().T / temperature
    self_mask = torch.eye(len(features), dtype=torch.bool, device=features.device)
    similarity = similarity.masked_fill(self_mask, float("-inf"))
    log_prob = similarity - torch.logsumexp(similarity, dim=1, keepdim=True)
    positives = (classes[:, None] == classes[None, :]) & ~self_mask
    usable = anchors & positives.any(1)
    if not usable.any():
        return None
    per_anchor = -(log_prob.masked_fill(~positives, 0.0).sum(1)) / positives.sum(1).clamp(min=1)
    return per_anchor[usable].mean()


class StructureContrastiveMethod(Method):
    name = "structure_contrastive"
    heads = frozenset({"projection"})
    terms = ("loss_structure_contrastive",)

    def __init__(self, temperature: float = 0.07, ring_voxels: Sequence[int] = (10, 20),
                 max_points: int = 64, **weighting):
        super().__init__(**weighting)
        if not 0 < temperature <= 1:
            raise ValueError("structure_contrastive: temperature must be in (0, 1], "
                             f"got {temperature}")
        self.temperature = float(temperature)
        self.ring_voxels = (int(ring_voxels[0]), int(ring_voxels[1]))
        self.max_points = int(max_points)

    def losses(self, network: nn.Module, batch: dict[str, torch.Tensor],
               outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        projection = outputs["projection"]
        labels = batch["label"][:, 0].cpu().numpy()
        factors = [full // low for full, low in zip(labels.shape[1:], projection.shape[2:])]
        # numpy stream seeded from torch's, so seeded runs and exact resume repeat the sampling
        rng = np.random.default_rng(int(torch.randint(2 ** 31, (1,))))
        features, classes = [], []
        for n in np.flatnonzero(batch["has_label"].cpu().numpy()):
            radius = int(rng.integers(self.ring_voxels[0], self.ring_voxels[1] + 1))
            for cls, coords in structure_points(labels[n], factors, radius, self.max_points,
                                                rng).items():
                index = torch.as_tensor(coords.T, device=projection.device)
                features.append(projection[n][(slice(None), *index)].T)
                classes.append(torch.full((len(coords),), cls, device=projection.device))
        if not features:
            return {"loss_structure_contrastive": zero_like_graph(projection)}
        classes_all = torch.cat(classes)
        loss = supervised_nt_xent(torch.cat(features), classes_all, classes_all != RING,
                                  self.temperature)
        return {"loss_structure_contrastive": zero_like_graph(projection) if loss is None else loss}
