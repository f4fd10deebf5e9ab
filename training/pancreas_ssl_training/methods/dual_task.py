"""Dual-task synergy: a signed-distance regression head tied to segmentation.

Foreground regions are nested: region 1 = pancreas including lesion (``label >= 1``), region 2 =
lesion (``label == 2``); sdm channel ``c - 1`` and the reciprocal mask both describe region ``c``.
Terms: ``loss_sdm`` (L1 between the tanh head and the normalised signed distance map),
``loss_dual_task`` (Dice between ``sigmoid(-k * sdm)`` and the region masks) and, when
``consistency`` is on, ``loss_dual_task_consistency`` (MSE between ``sigmoid(-k * sdm)`` and the
segmentation's region probabilities, on every sample, labelled or not).
The published code thresholds the distance map (no gradient); the sigmoid keeps it differentiable.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.losses import DiceLoss
from scipy import ndimage
from torch import nn

from .base import Method, zero_like_graph


def signed_distance_map(mask: np.ndarray,
                        spacing_mm: tuple[float, ...] | None = None) -> np.ndarray:
    """Normalised signed distance of one binary mask: -1..0 inside, 0 on the boundary, 0..1 outside.

    Distances are Euclidean in millimetres (``spacing_mm`` in array axis order); inside and outside
    are each divided by their own maximum. An empty mask is +1 everywhere (all outside); a full one
    -1 everywhere.
    """
    mask = mask.astype(bool)
    if not mask.any():
        return np.ones(mask.shape, np.float32)
    if mask.all():
        return -np.ones(mask.shape, np.float32)
    outside = ndimage.distance_transform_edt(~mask, sampling=spacing_mm)
    inside = ndimage.distance_transform_edt(mask, sampling=spacing_mm)
    sdm = outside / outside.max() - inside / inside.max()
    boundary = mask & ~ndimage.binary_erosion(mask, border_value=1)
    sdm[boundary] = 0.0
    return sdm.astype(np.float32)


def region_masks(label: torch.Tensor, num_foreground: int) -> torch.Tensor:
    """(N, 1, *S) labels -> (N, num_foreground, *S) float masks of the regions ``label >= c``."""
    return torch.cat([(label >= c) for c in range(1, num_foreground + 1)], dim=1).float()


def array_spacing(batch: dict[str, torch.Tensor], index: int) -> tuple[float, ...] | None:
    """Sample ``index``'s spacing in array axis order (the batch holds x, y[, z])."""
    if "spacing_mm" not in batch:
        return None
    return tuple(float(s) for s in batch["spacing_mm"][index].flip(0))


def sdm_targets(batch: dict[str, torch.Tensor], num_foreground: int) -> torch.Tensor:
    """(N, num_foreground, *S) normalised signed distance maps of every sample's regions."""
    regions = region_masks(batch["label"], num_foreground).cpu().numpy()
    maps = [[signed_distance_map(regions[n, c], array_spacing(batch, n))
             for c in range(num_foreground)] for n in range(regions.shape[0])]
    return torch.from_numpy(np.asarray(maps, np.float32)).to(batch["label"].device)


def reciprocal_mask(sdm: torch.Tensor, k: float) -> torch.Tensor:
    """Distance map -> soft mask ``sigmoid(-k * sdm)``: ~1 inside, ~0 outside, 0.5 on the edge."""
    return torch.sigmoid(-k * sdm)


class DualTaskMethod(Method):
    name = "dual_task"
    heads = frozenset({"sdm"})

    def __init__(self, k: float = 1500.0, consistency: bool = False, **weighting):
        self.terms = ("loss_sdm", "loss_dual_task") + (
            ("loss_dual_task_consistency",) if consistency else ())
        super().__init__(**weighting)
        self.k = float(k)
        self.consistency = consistency
        # Batch Dice: a region absent from one sample (most slices have no lesion) is not a whole
        # failed sample; unit smoothing makes a region absent from the batch cost m / (m + 1) for
        # predicted mass m, which goes to 0 with m (with 1e-5 it stays ~1 unless m < 1e-5).
        self.dice = DiceLoss(sigmoid=False, smooth_nr=1.0, smooth_dr=1.0, batch=True)

    def losses(self, network: nn.Module, batch: dict[str, torch.Tensor],
               outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        sdm = outputs["sdm"].float()
        soft_mask = reciprocal_mask(sdm, self.k)
        terms = {}
        labeled = batch["has_label"].bool()
        if labeled.any():
            sub = {key: value[labeled] for key, value in batch.items()
                   if key in ("label", "spacing_mm")}
            target = sdm_targets(sub, sdm.shape[1])
            terms["loss_sdm"] = nn.functional.l1_loss(sdm[labeled], target)
            terms["loss_dual_task"] = self.dice(soft_mask[labeled],
                                                region_masks(sub["label"], sdm.shape[1]))
        else:
            terms["loss_sdm"] = terms["loss_dual_task"] = zero_like_graph(sdm)
        if self.consistency:
            probs = torch.softmax(outputs["logits"].float(), dim=1)
            # region c's probability = sum of the class probabilities c and above (nested regions)
            region_probs = probs.flip(1).cumsum(1).flip(1)[:, 1:]
            terms["loss_dual_task_consistency"] = nn.functional.mse_loss(soft_mask, region_probs)
        return terms
