"""``networks.state_shapes`` writes out the MONAI blocks' parameter layout so that checking a
bundle needs no MONAI import (issue 16). It must name and shape every tensor exactly as the built
network's ``state_dict`` does, for every kind of config a bundle may hold."""

import subprocess
import sys

import pytest
import torch

from pancreas_ssl_seg.networks import build_network, state_shapes

CONFIGS = [
    # the shipped model's stages
    {"spatial_dims": 2, "in_channels": 1, "out_channels": 3, "channels": [16, 32, 64, 128, 256],
     "strides": [2, 2, 2, 2], "dropout": 0.1, "stem_stride": 2, "heads": []},
    # every head, stem stride 1 (the stem's residual is then a 1x1 convolution), 3-D
    {"spatial_dims": 3, "in_channels": 1, "out_channels": 3, "channels": [8, 16, 24],
     "strides": [2, 1], "dropout": 0.0, "heads": ["sdm", "projection", "restoration"],
     "projection_dim": 12},
    # equal neighbouring channels and stride 1 (no residual convolution), 2-D, no dropout key
    {"spatial_dims": 2, "in_channels": 2, "out_channels": 4, "channels": [8, 8, 16],
     "strides": [1, 3], "stem_stride": 2, "heads": ["projection"]},
    {"spatial_dims": 3, "in_channels": 1, "out_channels": 3, "channels": [4, 8],
     "strides": [4], "stem_stride": 1, "heads": ["sdm"], "dropout": None},
]


@pytest.mark.parametrize("config", CONFIGS, ids=range(len(CONFIGS)))
def test_shapes_are_the_built_network_s(config):
    with torch.device("meta"):
        state = build_network(config).state_dict()
    built = {key: tuple(tensor.shape) for key, tensor in state.items()}
    assert state_shapes(config) == built
    assert {tensor.dtype for tensor in state.values()} == {torch.float32}


def test_checking_the_shipped_bundle_does_not_import_monai():
    code = ("import sys; from pancreas_ssl_seg.bundle import load_bundle; b = load_bundle(); "
            "assert b.stage_weights['fine']; print('monai' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300, check=True).stdout
    assert out.strip() == "False"
