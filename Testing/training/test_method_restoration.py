"""Restoration: corruption confined to the band; the loss reads band voxels only."""

import pytest
import torch
from method_fixtures import blob_batch, tiny_network

from pancreas_ssl_training.methods.restoration import (RestorationMethod, band_l1, boundary_band,
                                                       corrupt_in_band, entropy_band,
                                                       inpaint_blocks, intensity_curve,
                                                       local_shuffle)


@pytest.mark.parametrize("dims", [2, 3])
def test_band_is_dilation_minus_erosion(dims):
    label = blob_batch(dims, size=16)["label"]
    band = boundary_band(label >= 1, 1)
    organ = label >= 1
    assert band.any() and (band & organ).any() and (band & ~organ).any()
    centre = (0, 0) + (int(0.4 * 16),) * dims  # sample 0's blob centre: deep inside, not band
    assert organ[centre] and not band[centre]
    assert not band[(0, 0) + (15,) * dims]  # far corner: outside the dilation


@pytest.mark.parametrize("dims", [2, 3])
def test_corruption_changes_band_only(dims):
    batch = blob_batch(dims, size=16)
    band = boundary_band(batch["label"] >= 1, 2)
    generator = torch.Generator().manual_seed(0)
    corrupted = corrupt_in_band(batch["image"], band, probabilities=(1.0, 1.0, 1.0),
                                generator=generator)
    changed = corrupted != batch["image"]
    assert not (changed & ~band).any()
    assert changed[band].float().mean() > 0.5


def test_each_transform_changes_values_keeps_shape():
    image = blob_batch(2, size=30)["image"]  # 30: not a multiple of the shuffle block
    generator = torch.Generator().manual_seed(1)
    shuffled = local_shuffle(image, 4, generator)
    assert shuffled.shape == image.shape and not torch.equal(shuffled, image)
    # shuffling within 4x4 blocks keeps each full block's set of values
    torch.testing.assert_close(shuffled[..., :4, :4].flatten().sort().values,
                               image[..., :4, :4].flatten().sort().values)
    curved = intensity_curve(image, generator)
    assert curved.shape == image.shape
    torch.testing.assert_close(curved.amin((1, 2, 3)), image.amin((1, 2, 3)))
    assert not torch.allclose(curved, image, atol=1e-3)
    painted = inpaint_blocks(image, generator=generator)
    assert painted.shape == image.shape and (painted != image).any()


def test_loss_ignores_voxels_outside_band():
    batch = blob_batch(2)
    band = boundary_band(batch["label"] >= 1, 2)
    prediction = batch["image"] + 0.5 * band  # error 0.5 in the band, exact outside
    assert band_l1(prediction, batch["image"], band).item() == pytest.approx(0.5)
    wild = torch.where(band, prediction, torch.full_like(prediction, 1e3))
    assert band_l1(wild, batch["image"], band).item() == pytest.approx(0.5)


def test_entropy_band_marks_uncertain_voxels():
    logits = torch.zeros(1, 3, 4, 4)
    logits[0, 0, :2] = 20.0  # confident background in the top half, uniform below
    band = entropy_band(logits, 0.5)
    assert not band[0, 0, :2].any() and band[0, 0, 2:].all()


@pytest.mark.parametrize("band_source", ["label", "entropy"])
def test_method_trains_restoration_head(band_source):
    torch.manual_seed(0)
    network = tiny_network(2, heads=("restoration",))
    batch = blob_batch(2)
    method = RestorationMethod(band_source=band_source, entropy_threshold=0.0)
    loss = method.losses(network, batch, network.forward_heads(batch["image"]))["loss_restoration"]
    assert loss > 0
    loss.backward()
    assert network.restoration_head.weight.grad.abs().sum() > 0


def test_unlabeled_samples_have_no_label_band():
    network = tiny_network(2, heads=("restoration",))
    batch = blob_batch(2)
    batch["has_label"][:] = False
    loss = RestorationMethod().losses(network, batch, network.forward_heads(batch["image"]))
    assert loss["loss_restoration"].item() == 0.0
