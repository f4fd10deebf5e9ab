"""build_methods and the Method contract: registry, weights, supervised always on."""

import pytest
import torch
from method_fixtures import blob_batch, tiny_network

from pancreas_ssl_seg.networks import KNOWN_HEADS
from pancreas_ssl_training.methods import Method, build_methods


ALL_METHODS = ["supervised", "dual_task", "view_consistency", "structure_contrastive",
               "restoration", "polycl"]


def test_supervised_is_always_first_and_on():
    methods = build_methods({"supervised": {"enabled": False}})
    assert [m.name for m in methods] == ["supervised"]
    assert [m.name for m in build_methods({})] == ["supervised"]


def test_unknown_method_names_are_listed():
    with pytest.raises(ValueError, match=r"\['foo', 'zebra'\]"):
        build_methods({"zebra": {}, "foo": {}, "supervised": {}})


def test_unknown_parameter_is_value_error():
    with pytest.raises(ValueError, match="supervised"):
        build_methods({"supervised": {"no_such_param": 3}})


def test_weights_float_dict_and_per_term_override():
    (sup,) = build_methods({"supervised": {"weight": 0.5}})
    assert sup.weights == {"loss_seg": 0.5}
    (sup,) = build_methods({"supervised": {"weight": {"loss_seg": 2.0}}})
    assert sup.weights == {"loss_seg": 2.0}
    (sup,) = build_methods({"supervised": {"weight": 0.5, "weights": {"loss_seg": 3.0}}})
    assert sup.weights == {"loss_seg": 3.0}
    with pytest.raises(ValueError, match="loss_bogus"):
        build_methods({"supervised": {"weights": {"loss_bogus": 1.0}}})


def test_all_methods_build_with_defaults_and_declare_known_heads():
    methods = build_methods({name: {"enabled": True} for name in ALL_METHODS})
    assert [m.name for m in methods] == ALL_METHODS
    for method in methods:
        assert isinstance(method, Method)
        assert method.heads <= set(KNOWN_HEADS)
        assert method.weights and all(t.startswith("loss_") for t in method.weights)
        assert all(isinstance(w, float) for w in method.weights.values())


def test_disabled_method_is_left_out():
    methods = build_methods({"dual_task": {"enabled": False}, "supervised": {}})
    assert [m.name for m in methods] == ["supervised"]


@pytest.mark.parametrize("dims,size,autocast", [(2, 32, True), (3, 16, False)])
def test_all_methods_together_train_every_parameter(dims, size, autocast):
    """One training step as the trainer takes it: every term finite, and every parameter gets a
    gradient (what DDP needs); in 2-D under half-precision autocast, as on a GPU."""
    methods = build_methods({name: {"enabled": True, "weight": 0.5} for name in ALL_METHODS})
    heads = tuple(sorted(set().union(*(m.heads for m in methods))))
    network = tiny_network(dims, heads=heads)
    batch = blob_batch(dims, size=size, n=4)
    batch["has_label"][3] = False
    batch["scan_id"] = torch.tensor([0, 0, 1, 1])
    batch["organ_present"] = torch.tensor([True, True, False, False])
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        outputs = network.forward_heads(batch["image"])
        terms = {}
        for method in methods:
            raw = method.losses(network, batch, outputs)
            assert set(raw) == set(method.weights)
            terms.update({k: v * method.weights[k] for k, v in raw.items()})
    assert len(terms) == 8 and all(torch.isfinite(t) and t.ndim == 0 for t in terms.values())
    sum(terms.values()).backward()
    assert all(p.grad is not None for p in network.parameters())
