"""Structure-guided contrastive: positives on the organ skeleton, negatives on the ring, NT-Xent."""

import numpy as np
import pytest
import torch
from method_fixtures import blob_batch, blob_label, tiny_network
from scipy import ndimage
from skimage.morphology import skeletonize

from pancreas_ssl_seg.labels import LESION, PANCREAS
from pancreas_ssl_training.methods.structure_contrastive import (
    RING, StructureContrastiveMethod, structure_points, supervised_nt_xent)


def blocks_where(mask: np.ndarray, factors, rule) -> np.ndarray:
    """Low-resolution mask built block by block with explicit slices (not the implementation's
    reshape): ``rule(block)`` decides each block."""
    low = np.zeros([n // f for n, f in zip(mask.shape, factors)], bool)
    for index in np.ndindex(*low.shape):
        low[index] = rule(mask[tuple(slice(i * f, (i + 1) * f) for i, f in zip(index, factors))])
    return low


def half_or_more(block: np.ndarray) -> bool:
    return 2 * int(block.sum()) >= block.size  # majority; exactly half counts


def expected_points(label: np.ndarray, factors, ring_voxels: float) -> dict[int, set]:
    """Skeleton points of the majority masks of pancreas and lesion, and of the ring (background
    within ``ring_voxels`` of the organ, by majority) left out of every block that holds any
    organ voxel: derived here, independently of ``structure_points``."""
    def structure(mask):  # majority; a structure smaller than a block keeps the blocks it touches
        low = blocks_where(mask, factors, half_or_more)
        return low if low.any() else blocks_where(mask, factors, lambda block: bool(block.any()))

    organ = label >= 1
    ring = ~organ & (ndimage.distance_transform_edt(~organ) <= ring_voxels)
    touched = blocks_where(organ, factors, lambda block: bool(block.any()))
    masks = {PANCREAS: structure(label == 1), LESION: structure(label == 2),
             RING: blocks_where(ring, factors, half_or_more) & ~touched}
    return {cls: {tuple(c) for c in np.argwhere(skeletonize(mask))} for cls, mask in masks.items()}


def as_set(coords: np.ndarray) -> set:
    return {tuple(int(v) for v in c) for c in coords}


@pytest.mark.parametrize("shape,factors", [((64, 64), (4, 4)), ((32, 32, 32), (2, 2, 2))])
def test_positives_on_skeleton_negatives_on_ring_none_inside(shape, factors):
    label = blob_label(shape, radius_frac=0.2)
    rng = np.random.default_rng(0)
    radius = 10
    points = structure_points(label, factors, radius, max_points=10_000, rng=rng)
    expected = expected_points(label, factors, radius)
    assert all(expected.values())
    assert {cls: as_set(c) for cls, c in points.items()} == expected
    # ring distance in label voxels, measured here independently of the implementation
    full = np.argwhere(label >= 1)
    for coord in points[RING]:
        block = label[tuple(slice(c * f, (c + 1) * f) for c, f in zip(coord, factors))]
        assert not (block >= 1).any()  # no organ voxel anywhere in the block
        block_centre = (coord + 0.5) * np.asarray(factors)
        nearest = np.sqrt(((full - block_centre) ** 2).sum(1)).min()
        assert nearest <= radius + np.sqrt(len(shape)) * max(factors)


def test_half_covered_blocks_count_as_organ():
    """Blocks exactly half pancreas count (majority >= 0.5): a changed threshold gives other
    points."""
    label = np.zeros((32, 32), np.int64)
    label[6:26, 8:24] = 1            # rows 6-7 and 24-25: blocks of 4 rows exactly half covered
    label[13:19, 14:18] = 2
    points = structure_points(label, (4, 4), 6, max_points=10_000, rng=np.random.default_rng(0))
    pancreas_mask = blocks_where(label == 1, (4, 4), half_or_more)
    assert pancreas_mask[1, 2:6].all() and pancreas_mask[6, 2:6].all()  # the half blocks
    assert {cls: as_set(c) for cls, c in points.items()} == expected_points(label, (4, 4), 6)


def test_a_ring_block_holding_one_organ_voxel_gives_no_negative():
    """A block that is ring by majority but holds one organ voxel is left out ("any" organ voxel
    excludes it; with "all" it would give a negative in a block holding organ)."""
    label = np.zeros((32, 32), np.int64)
    label[8:24, 8:24] = 1            # aligned to the 4x4 blocks: a ring band one block thick
    label[5, 13] = 1                 # one organ voxel in block (1, 3), inside that band
    organ = label >= 1
    ring = ~organ & (ndimage.distance_transform_edt(~organ) <= 3)
    assert blocks_where(ring, (4, 4), half_or_more)[1, 3]  # ring by majority
    points = structure_points(label, (4, 4), 3, max_points=10_000, rng=np.random.default_rng(0))
    assert (1, 3) not in as_set(points[RING]) and {(1, 2), (1, 4)} <= as_set(points[RING])
    assert {cls: as_set(c) for cls, c in points.items()} == expected_points(label, (4, 4), 3)


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
