"""PolyCL (Ward et al.): contrastive encoder pre-training with task-related example selection.

Relations decide positives and negatives among the slices/patches of a batch:

- ``"S"``: positive = same scan, negative = other scan;
- ``"O"``: positive = same organ presence, negative = opposite organ presence;
- ``"M"``: positive = same scan and same organ presence, negative = other scan without organ.

The embedding of a sample is its projection-head output averaged over the bottleneck grid and
L2-normalised; ``loss_polycl`` is cosine-similarity InfoNCE of each (anchor, positive) pair
against all of the anchor's negatives. Organ presence comes from ``organ_present`` in the batch
or, for labelled samples, from the label; scan identity from ``scan_id`` or the ``case`` names.
"""

from __future__ import annotations

import torch
from torch import nn

from pancreas_ssl_seg.labels import PANCREAS

from .base import Method, zero_like_graph

RULES = ("S", "O", "M")


def relation_masks(scan_id: torch.Tensor, organ_present: torch.Tensor, rule: str
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(positive, negative)`` (B, B) bool masks: ``positive[a, p]``, ``negative[a, n]``."""
    if rule not in RULES:
        raise ValueError(f"polycl: rule {rule!r} not in {RULES}")
    same_scan = scan_id[:, None] == scan_id[None, :]
    same_organ = organ_present[:, None] == organ_present[None, :]
    not_self = ~torch.eye(len(scan_id), dtype=torch.bool, device=scan_id.device)
    if rule == "S":
        return same_scan & not_self, ~same_scan
    if rule == "O":
        return same_organ & not_self, ~same_organ
    return same_scan & same_organ & not_self, ~same_scan & ~organ_present[None, :].bool()


def make_pairs(scan_id: torch.Tensor, organ_present: torch.Tensor, rule: str) -> torch.Tensor:
    """Every valid ``(anchor, positive, negative)`` index triplet under ``rule``, (T, 3)."""
    positive, negative = relation_masks(torch.as_tensor(scan_id),
                                        torch.as_tensor(organ_present).bool(), rule)
    triplets = positive[:, :, None] & negative[:, None, :]
    return torch.nonzero(triplets)


def info_nce(embeddings: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor,
             temperature: float) -> torch.Tensor | None:
    """Mean over (anchor, positive) pairs with >= 1 negative of
    ``-log(exp(s_ap/t) / (exp(s_ap/t) + sum_n exp(s_an/t)))``, s = cosine similarity.

    Written here because MONAI's ``ContrastiveLoss`` takes every other sample as a negative; the
    PolyCL relations choose the negatives."""
    similarity = embeddings @ embeddings.T / temperature
    negative_lse = torch.logsumexp(similarity.masked_fill(~negative, float("-inf")), dim=1)
    pairs = positive & negative.any(1, keepdim=True)
    if not pairs.any():
        return None
    anchor, pos = torch.nonzero(pairs, as_tuple=True)
    s_ap = similarity[anchor, pos]
    return (torch.logaddexp(s_ap, negative_lse[anchor]) - s_ap).mean()


def pooled_embeddings(projection: torch.Tensor) -> torch.Tensor:
    """(N, P, *grid) projection features -> (N, P) L2-normalised per-sample embeddings."""
    return nn.functional.normalize(projection.float().flatten(2).mean(-1), dim=1)


def scan_ids(batch: dict) -> torch.Tensor:
    if "scan_id" in batch:
        return torch.as_tensor(batch["scan_id"])
    if "case" in batch:
        names = list(batch["case"])
        return torch.tensor([sorted(set(names)).index(name) for name in names])
    raise ValueError("polycl: the batch needs 'scan_id' (or 'case' names) to pair samples by scan")


def organ_presence(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """``(organ_present, known)`` per sample: from ``organ_present`` or from the label."""
    if "organ_present" in batch:
        present = torch.as_tensor(batch["organ_present"]).bool().cpu()
        return present, torch.ones_like(present)
    labeled = batch["has_label"].bool().cpu()
    present = (batch["label"].flatten(1) >= PANCREAS).any(1).cpu()
    return present & labeled, labeled


class PolyCLMethod(Method):
    name = "polycl"
    heads = frozenset({"projection"})
    terms = ("loss_polycl",)

    def __init__(self, rule: str = "M", temperature: float = 0.1, **weighting):
        super().__init__(**weighting)
        if rule not in RULES:
            raise ValueError(f"polycl: rule {rule!r} not in {RULES}")
        if not 0 < temperature <= 1:
            raise ValueError(f"polycl: temperature must be in (0, 1], got {temperature}")
        self.rule = rule
        self.temperature = float(temperature)

    def losses(self, network: nn.Module, batch: dict, outputs: dict[str, torch.Tensor]
               ) -> dict[str, torch.Tensor]:
        projection = outputs["projection"]
        scan = scan_ids(batch).cpu()
        present, known = organ_presence(batch)
        if self.rule == "S":  # organ presence plays no part
            known = torch.ones_like(known)
        keep = torch.nonzero(known).flatten()
        positive, negative = relation_masks(scan[keep], present[keep], self.rule)
        device = projection.device
        loss = info_nce(pooled_embeddings(projection)[keep.to(device)], positive.to(device),
                        negative.to(device), self.temperature)
        return {"loss_polycl": zero_like_graph(projection) if loss is None else loss}

