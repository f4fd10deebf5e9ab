"""View consistency: zero for identical views, positive and differentiable for different ones."""

import pytest
import torch
from method_fixtures import blob_batch, tiny_network

from pancreas_ssl_training.methods.view_consistency import (ViewConsistencyMethod,
                                                            view_consistency_terms)


@pytest.mark.parametrize("distance", ["mse", "cosine"])
def test_identical_views_give_zero(distance):
    network = tiny_network(2, heads=("sdm",))
    network.eval()  # no dropout, so the same input gives the same outputs
    outputs = network.forward_heads(blob_batch(2)["image"])
    terms = view_consistency_terms(outputs, outputs, distance, distance)
    assert terms["loss_view_output"].item() == pytest.approx(0.0, abs=1e-6)
    assert terms["loss_view_feature"].item() == pytest.approx(0.0, abs=1e-6)


def test_method_with_identity_views_is_zero():
    method = ViewConsistencyMethod()
    method.make_views = lambda image: (image, image.clone())
    network = tiny_network(2)
    network.eval()
    batch = blob_batch(2)
    terms = method.losses(network, batch, {})
    assert all(v.item() == pytest.approx(0.0, abs=1e-6) for v in terms.values())


@pytest.mark.parametrize("dims", [2, 3])
def test_random_views_give_positive_differentiable_terms(dims):
    torch.manual_seed(0)
    network = tiny_network(dims, heads=("sdm",))
    batch = blob_batch(dims, size=16)
    terms = ViewConsistencyMethod(output_distance="cosine").losses(network, batch, {})
    assert set(terms) == {"loss_view_output", "loss_view_feature"}
    assert terms["loss_view_output"] > 0 and terms["loss_view_feature"] > 0
    sum(terms.values()).backward()
    assert network.sdm_head.weight.grad.abs().sum() > 0
    assert network.stem.conv.unit0.conv.weight.grad.abs().sum() > 0


def test_bad_distance_is_rejected():
    with pytest.raises(ValueError, match="euclid"):
        ViewConsistencyMethod(output_distance="euclid")
