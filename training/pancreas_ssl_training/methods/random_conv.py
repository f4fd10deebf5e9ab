"""Random-convolution views (RandConv): new textures and contrasts, same shapes.

Each sample is convolved with its own random kernel (size drawn from ``kernel_sizes``, Gaussian
weights scaled by fan-in), mixed with the input as ``alpha * x + (1 - alpha) * conv(x)`` with
``alpha`` drawn from ``alpha_range``, and re-normalised to the input sample's mean and standard
deviation so the view stays on the CT intensity scale the network was built for.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


def standardize_like(view: torch.Tensor, reference: torch.Tensor,
                     eps: float = 1e-6) -> torch.Tensor:
    """Shift and scale each sample of ``view`` to the mean and std of its ``reference`` sample."""
    dims = tuple(range(1, view.ndim))
    view_std, view_mean = torch.std_mean(view, dim=dims, keepdim=True)
    ref_std, ref_mean = torch.std_mean(reference, dim=dims, keepdim=True)
    return (view - view_mean) / (view_std + eps) * ref_std + ref_mean


@torch.no_grad()
def random_conv_view(image: torch.Tensor, kernel_sizes: Sequence[int] = (3, 5, 7),
                     alpha_range: tuple[float, float] = (0.0, 0.9),
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """One random-convolution view of ``image`` (N, C, *spatial), 2-D or 3-D."""
    dims = image.ndim - 2
    conv = nn.functional.conv2d if dims == 2 else nn.functional.conv3d
    channels = image.shape[1]
    views = []
    for sample in image.float().split(1):
        size = int(kernel_sizes[int(torch.randint(len(kernel_sizes), (1,), generator=generator))])
        fan_in = channels * size ** dims
        kernel = torch.randn((channels, channels) + (size,) * dims,
                             generator=generator) / fan_in ** 0.5
        convolved = conv(sample, kernel.to(sample.device), padding=size // 2)
        alpha = alpha_range[0] + (alpha_range[1] - alpha_range[0]) * float(
            torch.rand((), generator=generator))
        views.append(alpha * sample + (1.0 - alpha) * convolved)
    return standardize_like(torch.cat(views), image.float()).to(image.dtype)
