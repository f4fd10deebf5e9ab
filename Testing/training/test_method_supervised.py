"""Supervised DiceCE: labelled samples only, 2-D and 3-D, gradients flow."""

import pytest
import torch
from method_fixtures import blob_batch, tiny_network

from pancreas_ssl_training.methods.supervised import SupervisedMethod


@pytest.mark.parametrize("dims", [2, 3])
def test_loss_is_finite_and_backpropagates(dims):
    network = tiny_network(dims)
    batch = blob_batch(dims, size=16 if dims == 3 else 32)
    outputs = network.forward_heads(batch["image"])
    terms = SupervisedMethod().losses(network, batch, outputs)
    assert set(terms) == {"loss_seg"} and terms["loss_seg"].ndim == 0
    terms["loss_seg"].backward()
    assert network.seg_head.weight.grad.abs().sum() > 0


def test_perfect_logits_score_lower_than_wrong_ones():
    batch = blob_batch(2)
    onehot = torch.nn.functional.one_hot(batch["label"][:, 0], 3).permute(0, 3, 1, 2).float()
    method = SupervisedMethod()
    good = method.losses(None, batch, {"logits": 20 * onehot})["loss_seg"]
    bad = method.losses(None, batch, {"logits": 20 * onehot.roll(1, dims=1)})["loss_seg"]
    assert good < 0.05 < 1.0 < bad


def test_unlabeled_samples_do_not_contribute():
    batch = blob_batch(2, n=2)
    onehot = torch.nn.functional.one_hot(batch["label"][:, 0], 3).permute(0, 3, 1, 2).float()
    logits = 20 * onehot
    logits[1] = 20 * onehot[1].roll(1, dims=0)  # sample 1 is wrong ...
    batch["has_label"] = torch.tensor([True, False])  # ... but unlabeled
    method = SupervisedMethod()
    assert method.losses(None, batch, {"logits": logits})["loss_seg"] < 0.05


def test_no_labeled_sample_gives_zero_attached_to_graph():
    network = tiny_network(2)
    batch = blob_batch(2)
    batch["has_label"][:] = False
    outputs = network.forward_heads(batch["image"])
    loss = SupervisedMethod().losses(network, batch, outputs)["loss_seg"]
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()


def test_batch_dice_does_not_punish_a_small_leak_on_a_patch_without_the_class():
    batch = blob_batch(2)
    batch["label"][1] = 0  # sample 1: a background-only patch
    onehot = torch.nn.functional.one_hot(batch["label"][:, 0], 3).permute(0, 3, 1, 2).float()
    logits = 20 * onehot
    logits[1, 1] = 20 - 5.0  # sample 1: pancreas probability ~0.007 on every pixel
    leak = {"logits": logits}
    batch_loss = SupervisedMethod().losses(None, batch, leak)["loss_seg"]
    per_sample_loss = SupervisedMethod(batch_dice=False).losses(None, batch, leak)["loss_seg"]
    # Per sample, the leak alone makes one of the six (sample, class) Dice terms ~1.
    assert batch_loss < 0.05 and per_sample_loss > 0.15
