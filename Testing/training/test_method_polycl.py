"""PolyCL: every triplet obeys its relation, all valid ones are found, InfoNCE behaves."""

import itertools

import pytest
import torch
from method_fixtures import blob_batch, tiny_network

from pancreas_ssl_training.methods.polycl import PolyCLMethod, info_nce, make_pairs, relation_masks


def obeys(rule, scan, organ, a, p, n):
    """The relations written out plainly, independent of the implementation's masks."""
    if a == p:
        return False
    if rule == "S":
        return scan[p] == scan[a] and scan[n] != scan[a]
    if rule == "O":
        return organ[p] == organ[a] and organ[n] != organ[a]
    return (scan[p] == scan[a] and organ[p] == organ[a]
            and scan[n] != scan[a] and not organ[n])


@pytest.mark.parametrize("rule", ["S", "O", "M"])
def test_triplets_obey_rule_and_are_complete(rule):
    generator = torch.Generator().manual_seed(0)
    scan = torch.randint(0, 3, (10,), generator=generator)
    organ = torch.rand(10, generator=generator) < 0.5
    triplets = make_pairs(scan, organ, rule)
    assert triplets.ndim == 2 and triplets.shape[1] == 3 and len(triplets) > 0
    s, o = scan.tolist(), organ.tolist()
    found = {tuple(t) for t in triplets.tolist()}
    assert all(obeys(rule, s, o, *t) for t in found)
    expected = {t for t in itertools.product(range(10), repeat=3) if obeys(rule, s, o, *t)}
    assert found == expected


def test_unknown_rule_is_rejected():
    with pytest.raises(ValueError, match="'X'"):
        make_pairs(torch.zeros(2), torch.zeros(2), "X")


def test_info_nce_prefers_embeddings_that_follow_the_relation():
    scan = torch.tensor([0, 0, 1, 1, 2, 2])
    organ = torch.tensor([True, True, False, False, False, False])
    positive, negative = relation_masks(scan, organ, "S")
    generator = torch.Generator().manual_seed(0)
    centres = torch.nn.functional.normalize(torch.randn(3, 8, generator=generator), dim=1)
    noise = 0.05 * torch.randn(6, 8, generator=generator)
    aligned = torch.nn.functional.normalize(centres[scan] + noise, dim=1)
    mixed_up = centres[torch.tensor([0, 1, 2, 0, 1, 2])]
    shuffled = torch.nn.functional.normalize(mixed_up + noise, dim=1)
    assert info_nce(aligned, positive, negative, 0.1) < info_nce(shuffled, positive, negative, 0.1)


def test_no_pairs_gives_none():
    positive, negative = relation_masks(torch.tensor([0, 1]), torch.tensor([True, False]), "S")
    assert info_nce(torch.eye(2), positive, negative, 0.1) is None


@pytest.mark.parametrize("dims", [2, 3])
def test_method_on_unlabeled_slices_reaches_encoder(dims):
    torch.manual_seed(0)
    network = tiny_network(dims, heads=("projection",))
    batch = blob_batch(dims, size=16, n=4)
    batch["has_label"][:] = False
    batch["scan_id"] = torch.tensor([0, 0, 1, 1])
    batch["organ_present"] = torch.tensor([True, True, False, False])
    terms = PolyCLMethod(rule="M").losses(network, batch, network.forward_heads(batch["image"]))
    assert set(terms) == {"loss_polycl"} and terms["loss_polycl"] > 0
    terms["loss_polycl"].backward()
    assert network.stem.conv.unit0.conv.weight.grad.abs().sum() > 0


def test_presence_from_labels_and_scan_from_case_names():
    network = tiny_network(2, heads=("projection",))
    batch = blob_batch(2, n=4)
    batch["label"][2:] = 0  # slices 2, 3 without organ
    batch["case"] = ["a", "a", "b", "b"]
    terms = PolyCLMethod(rule="O").losses(network, batch, network.forward_heads(batch["image"]))
    assert terms["loss_polycl"] > 0
    del batch["case"]
    with pytest.raises(ValueError, match="scan_id"):
        PolyCLMethod().losses(network, batch, network.forward_heads(batch["image"]))
