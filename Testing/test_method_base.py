"""build_methods and the Method contract: registry, weights, supervised always on."""

import pytest

from PancreasSSLSegLib.networks import KNOWN_HEADS
from pancreas_ssl_training.methods import Method, build_methods


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
    names = ["supervised", "dual_task", "view_consistency", "structure_contrastive",
             "restoration", "polycl"]
    methods = build_methods({name: {"enabled": True} for name in names})
    assert [m.name for m in methods] == names
    for method in methods:
        assert isinstance(method, Method)
        assert method.heads <= set(KNOWN_HEADS)
        assert method.weights and all(t.startswith("loss_") for t in method.weights)
        assert all(isinstance(w, float) for w in method.weights.values())


def test_disabled_method_is_left_out():
    methods = build_methods({"dual_task": {"enabled": False}, "supervised": {}})
    assert [m.name for m in methods] == ["supervised"]
