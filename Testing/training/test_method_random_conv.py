"""Random-convolution views: differ from the input and each other, same shape, re-normalised."""

import pytest
import torch
from method_fixtures import blob_batch

from pancreas_ssl_training.methods.random_conv import random_conv_view


@pytest.mark.parametrize("dims", [2, 3])
def test_views_differ_keep_shape_and_statistics(dims):
    image = blob_batch(dims, size=16)["image"] * 3 + 1
    generator = torch.Generator().manual_seed(0)
    first = random_conv_view(image, generator=generator)
    second = random_conv_view(image, generator=generator)
    assert first.shape == image.shape == second.shape and first.dtype == image.dtype
    assert (first - image).abs().mean() > 0.05
    assert (first - second).abs().mean() > 0.05
    for view in (first, second):
        dims_ = tuple(range(1, image.ndim))
        torch.testing.assert_close(view.mean(dims_), image.mean(dims_), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(view.std(dims_), image.std(dims_), atol=1e-3, rtol=1e-3)


def test_alpha_one_returns_the_input():
    image = blob_batch(2)["image"]
    view = random_conv_view(image, alpha_range=(1.0, 1.0))
    torch.testing.assert_close(view, image, atol=1e-4, rtol=1e-4)


def test_seeded_views_repeat():
    image = blob_batch(2)["image"]
    a = random_conv_view(image, generator=torch.Generator().manual_seed(3))
    b = random_conv_view(image, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
