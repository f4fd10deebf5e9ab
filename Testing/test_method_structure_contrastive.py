"""Structure-guided contrastive: positives on the organ skeleton, negatives on the ring, NT-Xent."""

import numpy as np
import pytest
import torch
from method_fixtures import blob_batch, blob_label, tiny_network
from skimage.morphology import skeletonize

from pancreas_ssl_training.methods.structure_contrastive import (
    LESION, PANCREAS, RING, StructureContrastiveMethod, block_reduce, structure_points,
    supervised_nt_xent)


@pytest.mark.parametrize("shape,factors", [((64, 64), (4, 4)), ((32, 32, 32), (2, 2, 2))])
def test_positives_on_skeleton_negatives_on_ring_none_inside(shape, factors):
    label = blob_label(shape, radius_frac=0.2)
    rng = np.random.default_rng(0)
    radius = 10
    points = structure_points(label, factors, radius, max_points=10_000, rng=rng)
    assert len(points[PANCREAS]) and len(points[LESION]) and len(points[RING])
    organ_touch = block_reduce(label >= 1, factors, "any")
    skeleton = skeletonize(block_reduce(label == 1, factors, "mean"))
    for coord in points[PANCREAS]:
        assert skeleton[tuple(coord)]
    lesion_skeleton = skeletonize(block_reduce(label == 2, factors, "mean"))
    for coord in points[LESION]:
        assert lesion_skeleton[tuple(coord)]
    # ring distance in label voxels, measured here independently of the implementation
    full = np.argwhere(label >= 1)
    for coord in points[RING]:
        assert not organ_touch[tuple(coord)]  # no organ voxel anywhere in the block
        block_centre = (coord + 0.5) * np.asarray(factors)
        nearest = np.sqrt(((full - block_centre) ** 2).sum(1)).min()
        assert nearest <= radius + np.sqrt(len(shape)) * max(factors)


def test_point_count_is_capped():
    label = blob_label((64, 64))
    points = structure_points(label, (2, 2), 15, max_points=5, rng=np.random.default_rng(1))
    assert all(len(c) <= 5 for c in points.values())


def test_separated_features_score_lower_than_mixed():
    generator = torch.Generator().manual_seed(0)
    classes = torch.tensor([1] * 8 + [0] * 8)
    anchors = classes != 0
    base = torch.nn.functional.normalize(torch.randn(2, 16, generator=generator), dim=1)
    noise = 0.05 * torch.randn(16, 16, generator=generator)
    separated = torch.nn.functional.normalize(base[(classes == 1).long()] + noise, dim=1)
    mixed = torch.nn.functional.normalize(base[torch.arange(16) % 2] + noise, dim=1)
    low = supervised_nt_xent(separated, classes, anchors, 0.07)
    high = supervised_nt_xent(mixed, classes, anchors, 0.07)
    assert low < high


def test_no_positive_pair_gives_none():
    features = torch.nn.functional.normalize(torch.randn(3, 4), dim=1)
    assert supervised_nt_xent(features, torch.tensor([1, 0, 0]), torch.tensor([True, False, False]),
                              0.1) is None


@pytest.mark.parametrize("dims,size", [(2, 64), (3, 16)])
def test_method_backpropagates_to_projection_head(dims, size):
    torch.manual_seed(0)
    network = tiny_network(dims, heads=("projection",))
    batch = blob_batch(dims, size=size)
    method = StructureContrastiveMethod(ring_voxels=(4, 6))
    loss = method.losses(network, batch, network.forward_heads(batch["image"]))
    assert loss["loss_structure_contrastive"] > 0
    loss["loss_structure_contrastive"].backward()
    assert network.projection_head[0].weight.grad.abs().sum() > 0


def test_unlabeled_batch_gives_attached_zero():
    network = tiny_network(2, heads=("projection",))
    batch = blob_batch(2)
    batch["has_label"][:] = False
    outputs = network.forward_heads(batch["image"])
    loss = StructureContrastiveMethod().losses(network, batch, outputs)
    assert loss["loss_structure_contrastive"].item() == 0.0
    loss["loss_structure_contrastive"].backward()
