"""Dual-task: sign convention and millimetres of the distance map, differentiable transform."""

import numpy as np
import pytest
import torch
from method_fixtures import blob_batch, tiny_network

from pancreas_ssl_training.methods.dual_task import (DualTaskMethod, reciprocal_mask,
                                                     sdm_targets, signed_distance_map)


def test_sign_convention_inside_negative_outside_positive_boundary_zero():
    mask = np.zeros((20, 20), bool)
    mask[5:15, 6:14] = True
    sdm = signed_distance_map(mask)
    assert sdm.min() == -1.0 and sdm.max() == 1.0
    assert (sdm[7:13, 8:12] < 0).all()          # deep inside
    assert (sdm[~mask] > 0).all()               # everywhere outside
    assert sdm[5, 10] == 0.0 and sdm[10, 6] == 0.0  # boundary voxels of the mask


def test_distances_are_in_millimetres():
    # normalisation cancels a uniform scale, so only anisotropy shows the millimetres
    mask2 = np.zeros((21, 21), bool)
    mask2[10, 10] = mask2[10, 9] = True
    aniso = signed_distance_map(mask2, (3.0, 1.0))  # rows 3 mm apart, columns 1 mm
    assert aniso[10, 15] < aniso[15, 10]  # 5 columns (5 mm) nearer than 5 rows (15 mm)
    isotropic = signed_distance_map(mask2)
    assert isotropic[10, 15] == pytest.approx(isotropic[15, 10], abs=0.05)


def test_empty_mask_is_all_outside():
    assert (signed_distance_map(np.zeros((8, 8), bool)) == 1.0).all()


@pytest.mark.parametrize("dims", [2, 3])
def test_terms_and_targets(dims):
    network = tiny_network(dims, heads=("sdm",))
    batch = blob_batch(dims, size=16)
    terms = DualTaskMethod(consistency=True).losses(network, batch,
                                                    network.forward_heads(batch["image"]))
    assert set(terms) == {"loss_sdm", "loss_dual_task", "loss_dual_task_consistency"}
    assert all(t.ndim == 0 and torch.isfinite(t) for t in terms.values())


def test_gradient_reaches_sdm_head_through_reciprocal_transform():
    network = tiny_network(2, heads=("sdm",))
    batch = blob_batch(2)
    outputs = network.forward_heads(batch["image"])
    loss = DualTaskMethod().losses(network, batch, outputs)["loss_dual_task"]
    loss.backward()
    assert network.sdm_head.weight.grad.abs().sum() > 0
    # a thresholded mask (what the published code does) would pass nothing back
    sdm = torch.zeros(4, requires_grad=True)
    reciprocal_mask(sdm, 1500.0).sum().backward()
    assert (sdm.grad > 0).all() or (sdm.grad < 0).all()


def test_perfect_sdm_scores_near_zero():
    batch = blob_batch(2)
    method = DualTaskMethod()
    target = sdm_targets(batch, 2)
    terms = method.losses(None, batch, {"sdm": target, "logits": torch.zeros(2, 3, 32, 32)})
    assert terms["loss_sdm"] == 0.0
    # boundary voxels map to 0.5, which costs a little Dice on the small lesion
    assert terms["loss_dual_task"] < 0.15
    worse = method.losses(None, batch, {"sdm": -target, "logits": torch.zeros(2, 3, 32, 32)})
    assert worse["loss_dual_task"] > 0.9


def test_unlabeled_samples_are_ignored():
    batch = blob_batch(2)
    target = sdm_targets(batch, 2)
    wrong = target.clone()
    wrong[1] = -wrong[1]
    batch["has_label"] = torch.tensor([True, False])
    outputs = {"sdm": wrong, "logits": torch.zeros(2, 3, 32, 32)}
    terms = DualTaskMethod().losses(None, batch, outputs)
    assert terms["loss_sdm"] == 0.0
