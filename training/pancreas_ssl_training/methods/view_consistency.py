"""Dual self-supervision across views: two random-convolution views must agree.

``loss_view_output``: distance between the two views' softmax probabilities, plus between their
distance-map outputs when the network has the ``sdm`` head. ``loss_view_feature``: distance
between their bottleneck features. Distances are ``"mse"`` or ``"cosine"`` (1 - cosine similarity
along channels, averaged over voxels). Needs no labels: every sample contributes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .base import Method
from .random_conv import random_conv_view

DISTANCES = ("mse", "cosine")


def channel_distance(a: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean distance between two (N, C, *spatial) maps: ``"mse"`` or ``"cosine"`` (over C)."""
    a, b = a.float(), b.float()
    if kind == "mse":
        return nn.functional.mse_loss(a, b)
    return (1.0 - nn.functional.cosine_similarity(a, b, dim=1, eps=1e-6)).mean()


def view_consistency_terms(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor],
                           output_distance: str = "mse",
                           feature_distance: str = "cosine") -> dict[str, torch.Tensor]:
    """The two terms between the ``forward_heads`` outputs of two views."""
    output = channel_distance(torch.softmax(first["logits"].float(), 1),
                              torch.softmax(second["logits"].float(), 1), output_distance)
    if "sdm" in first:
        output = output + channel_distance(first["sdm"], second["sdm"], output_distance)
    feature = channel_distance(first["bottleneck"], second["bottleneck"], feature_distance)
    return {"loss_view_output": output, "loss_view_feature": feature}


class ViewConsistencyMethod(Method):
    name = "view_consistency"
    terms = ("loss_view_output", "loss_view_feature")

    def __init__(self, kernel_sizes: Sequence[int] = (3, 5, 7),
                 alpha_range: Sequence[float] = (0.0, 0.9), output_distance: str = "mse",
                 feature_distance: str = "cosine", **weighting):
        super().__init__(**weighting)
        for distance in (output_distance, feature_distance):
            if distance not in DISTANCES:
                raise ValueError(f"view_consistency: distance {distance!r} not in {DISTANCES}")
        if not kernel_sizes or any(k < 1 or k % 2 == 0 for k in kernel_sizes):
            raise ValueError("view_consistency: kernel_sizes must be odd and >= 1, "
                             f"got {kernel_sizes}")
        self.kernel_sizes = tuple(int(k) for k in kernel_sizes)
        self.alpha_range = (float(alpha_range[0]), float(alpha_range[1]))
        self.output_distance = output_distance
        self.feature_distance = feature_distance

    def make_views(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(random_conv_view(image, self.kernel_sizes, self.alpha_range) for _ in range(2))

    def losses(self, network: nn.Module, batch: dict[str, torch.Tensor],
               outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        first, second = (network.forward_heads(view) for view in self.make_views(batch["image"]))
        return view_consistency_terms(first, second, self.output_distance, self.feature_distance)
