"""Local image restoration in the high-uncertainty band (arXiv 2505.07165).

The band is where segmentation is hardest: the pancreas mask dilated minus eroded by
``band_voxels`` (``band_source="label"``, labelled samples only), or the voxels whose normalised
predictive entropy under the model's own prediction exceeds ``entropy_threshold``
(``band_source="entropy"``, every sample). The image is corrupted only inside the band with
Models Genesis-style transforms — local voxel shuffling, a non-linear (power) intensity curve,
in-painting blocks of noise — and the restoration head must recover the original intensities:
``loss_restoration`` = L1 over band voxels only.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pancreas_ssl_seg.labels import PANCREAS

from .base import Method, zero_like_graph

BAND_SOURCES = ("label", "entropy")


def _max_pool(x: torch.Tensor, radius: int) -> torch.Tensor:
    pool = nn.functional.max_pool2d if x.ndim == 4 else nn.functional.max_pool3d
    return pool(x, kernel_size=2 * radius + 1, stride=1, padding=radius)


def boundary_band(mask: torch.Tensor, band_voxels: int) -> torch.Tensor:
    """(N, 1, *S) bool: ``mask`` dilated minus eroded by a cube of radius ``band_voxels``."""
    m = mask.float()
    dilated = _max_pool(m, band_voxels) > 0
    eroded = _max_pool(1.0 - m, band_voxels) == 0
    return dilated & ~eroded


def entropy_band(logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """(N, 1, *S) bool: voxels whose softmax entropy / log(C) exceeds ``threshold``."""
    probs = torch.softmax(logits.detach().float(), dim=1)
    entropy = -(probs * torch.log(probs.clamp_min(1e-8))).sum(1, keepdim=True)
    return entropy / math.log(logits.shape[1]) > threshold


def _uniform(shape: torch.Size | tuple[int, ...], generator: torch.Generator | None,
             device: torch.device) -> torch.Tensor:
    """U(0, 1) noise on ``device``: drawn there unless a (CPU) ``generator`` pins the stream."""
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator).to(device)


def local_shuffle(image: torch.Tensor, block: int, generator: torch.Generator | None = None
                  ) -> torch.Tensor:
    """Permute voxels within every ``block``-sided cube (each cube its own random permutation)."""
    n, c, *spatial = image.shape
    dims = len(spatial)
    padded_size = [math.ceil(s / block) * block for s in spatial]
    pad = [p for s, t in zip(reversed(spatial), reversed(padded_size)) for p in (0, t - s)]
    x = nn.functional.pad(image, pad, mode="replicate")
    grid = [t // block for t in padded_size]
    x = x.reshape(n, c, *[v for g in grid for v in (g, block)])
    order = [0, 1] + [2 + 2 * i for i in range(dims)] + [3 + 2 * i for i in range(dims)]
    x = x.permute(order).reshape(n, c, math.prod(grid), block ** dims)
    permutation = _uniform(x.shape, generator, x.device).argsort(-1)
    x = x.gather(-1, permutation).reshape(n, c, *grid, *([block] * dims))
    inverse = [0, 1] + [v for i in range(dims) for v in (2 + i, 2 + dims + i)]
    x = x.permute(inverse).reshape(n, c, *padded_size)
    return x[(slice(None), slice(None), *[slice(0, s) for s in spatial])]


def _per_sample_range(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = image.flatten(1)
    shape = (-1,) + (1,) * (image.ndim - 1)
    return flat.min(1).values.reshape(shape), flat.max(1).values.reshape(shape)


def intensity_curve(image: torch.Tensor, generator: torch.Generator | None = None,
                    gamma_range: tuple[float, float] = (0.4, 2.5)) -> torch.Tensor:
    """Monotone non-linear intensity remapping: per-sample min-max scale, ``x ** gamma``, back."""
    low, high = _per_sample_range(image)
    scale = (high - low).clamp_min(1e-6)
    log_gamma = torch.empty(low.shape).uniform_(math.log(gamma_range[0]), math.log(gamma_range[1]),
                                                generator=generator)
    gamma = log_gamma.exp().to(image.device)
    return ((image - low) / scale).clamp(0, 1) ** gamma * scale + low


def inpaint_blocks(image: torch.Tensor, blocks: int = 3, generator: torch.Generator | None = None
                   ) -> torch.Tensor:
    """Fill ``blocks`` random boxes (1/8-1/4 of each side) per sample with uniform noise."""
    out = image.clone()
    low, high = _per_sample_range(image)
    spatial = image.shape[2:]
    for n in range(image.shape[0]):
        for _ in range(blocks):
            box = []
            for size in spatial:
                side = int(torch.randint(max(1, size // 8), max(2, size // 4 + 1), (1,),
                                         generator=generator))
                start = int(torch.randint(0, size - side + 1, (1,), generator=generator))
                box.append(slice(start, start + side))
            region = out[(n, slice(None), *box)]
            noise = _uniform(region.shape, generator, image.device)
            out[(n, slice(None), *box)] = low[n] + noise * (high[n] - low[n])
    return out


def corrupt_in_band(image: torch.Tensor, band: torch.Tensor, shuffle_block: int = 4,
                    probabilities: tuple[float, float, float] = (0.5, 0.9, 0.5),
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply shuffling, intensity curve and in-painting (each per sample with its probability)
    and keep the result only inside ``band``; everywhere else the image is untouched."""
    transforms = (lambda x: local_shuffle(x, shuffle_block, generator),
                  lambda x: intensity_curve(x, generator),
                  lambda x: inpaint_blocks(x, generator=generator))
    corrupted = image
    shape = (-1,) + (1,) * (image.ndim - 1)
    for transform, probability in zip(transforms, probabilities):
        chosen = (torch.rand(image.shape[0], generator=generator) < probability).reshape(shape)
        corrupted = torch.where(chosen.to(image.device), transform(corrupted), corrupted)
    return torch.where(band, corrupted, image)


def band_l1(prediction: torch.Tensor, target: torch.Tensor, band: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the band voxels only (an attached zero when the band is empty)."""
    count = band.sum()
    if count == 0:
        return zero_like_graph(prediction)
    return ((prediction.float() - target.float()).abs() * band).sum() / count


class RestorationMethod(Method):
    name = "restoration"
    heads = frozenset({"restoration"})
    terms = ("loss_restoration",)

    def __init__(self, band_source: str = "label", band_voxels: int = 3,
                 entropy_threshold: float = 0.5, shuffle_block: int = 4,
                 probabilities: tuple[float, float, float] = (0.5, 0.9, 0.5), **weighting):
        super().__init__(**weighting)
        if band_source not in BAND_SOURCES:
            raise ValueError(f"restoration: band_source {band_source!r} not in {BAND_SOURCES}")
        self.band_source = band_source
        self.band_voxels = int(band_voxels)
        self.entropy_threshold = float(entropy_threshold)
        self.shuffle_block = int(shuffle_block)
        self.probabilities = tuple(float(p) for p in probabilities)

    def band(self, batch: dict[str, torch.Tensor],
             outputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.band_source == "entropy":
            return entropy_band(outputs["logits"], self.entropy_threshold)
        labeled = batch["has_label"].bool().reshape((-1,) + (1,) * (batch["label"].ndim - 1))
        return boundary_band(batch["label"] >= PANCREAS, self.band_voxels) & labeled

    def losses(self, network: nn.Module, batch: dict[str, torch.Tensor],
               outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        image = batch["image"]
        band = self.band(batch, outputs)
        if not band.any():
            return {"loss_restoration": zero_like_graph(outputs["restoration"])}
        corrupted = corrupt_in_band(image, band, self.shuffle_block, self.probabilities)
        restored = network.forward_heads(corrupted)["restoration"]
        return {"loss_restoration": band_l1(restored, image, band)}
