"""PancreasUNet shapes and config checks, with and without a strided stem."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_metadata
from pancreas_ssl_seg.bundle import load_bundle, save_bundle
from pancreas_ssl_seg.networks import build_network, size_divisor

CONFIG = {"spatial_dims": 2, "in_channels": 1, "out_channels": 3, "channels": [8, 16, 32],
          "strides": [2, 2], "heads": ["sdm", "projection", "restoration"]}


@pytest.mark.parametrize("stem_stride, divisor", [(1, 4), (2, 8)])
def test_every_output_keeps_the_input_size_and_the_bottleneck_shrinks(stem_stride, divisor):
    config = {**CONFIG, "stem_stride": stem_stride}
    assert size_divisor(config) == divisor
    network = build_network(config)
    out = network.forward_heads(torch.zeros(2, 1, 48, 64))
    assert out["logits"].shape == (2, 3, 48, 64)
    assert out["sdm"].shape == (2, 2, 48, 64) and out["restoration"].shape == (2, 1, 48, 64)
    assert out["bottleneck"].shape == (2, 32, 48 // divisor, 64 // divisor)
    assert network(torch.zeros(1, 1, 48, 64)).shape == (1, 3, 48, 64)


def test_3d_network_with_a_strided_stem():
    network = build_network({**CONFIG, "spatial_dims": 3, "heads": [], "stem_stride": 2})
    assert network(torch.zeros(1, 1, 16, 24, 32)).shape == (1, 3, 16, 24, 32)


@pytest.mark.parametrize("bad", [3, 0, True, "2", 1.5])
def test_stem_stride_other_than_1_or_2_is_refused(bad):
    with pytest.raises(ValueError, match="stem_stride"):
        build_network({**CONFIG, "stem_stride": bad})


def test_a_bundle_with_a_strided_stem_round_trips(tmp_path):
    metadata = tiny_metadata()
    for stage in ("coarse", "fine"):
        metadata["stages"][stage]["network"]["stem_stride"] = 2
    torch.manual_seed(0)
    weights = {s: build_network(metadata["stages"][s]["network"]).state_dict()
               for s in ("coarse", "fine")}
    bundle = load_bundle(save_bundle(tmp_path / "b", metadata, weights, "# test\n"))
    network = bundle.load_network("fine")
    assert network.stem_up is not None
    assert all(torch.equal(v, weights["fine"][k]) for k, v in network.state_dict().items())
