"""Supervised segmentation loss: MONAI Dice + cross-entropy on the labelled samples only."""

from __future__ import annotations

import torch
from monai.losses import DiceCELoss
from torch import nn

from .base import Method, zero_like_graph


class SupervisedMethod(Method):
    """``loss_seg`` = DiceCE(softmax logits, one-hot label) over samples with ``has_label``.

    ``batch_dice`` (default): one Dice per class over the whole batch, as nnU-Net does. Per-sample
    Dice scores a class absent from a patch as ~1 for any predicted probability above zero, so
    background patches and lesion-free slices push every foreground probability towards zero:
    the shipped model's fine stage learned to predict no pancreas that way (loss flat at ~1.0).
    """

    name = "supervised"
    terms = ("loss_seg",)

    def __init__(self, lambda_dice: float = 1.0, lambda_ce: float = 1.0,
                 include_background: bool = True, batch_dice: bool = True, **weighting):
        super().__init__(**weighting)
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True,
                               include_background=include_background,
                               lambda_dice=lambda_dice, lambda_ce=lambda_ce, batch=batch_dice)

    def losses(self, network: nn.Module, batch: dict[str, torch.Tensor],
               outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = outputs["logits"]
        labeled = batch["has_label"].bool()
        if not labeled.any():
            return {"loss_seg": zero_like_graph(logits)}
        # float32 for the softmax/log even under autocast
        return {"loss_seg": self.loss(logits[labeled].float(), batch["label"][labeled])}
