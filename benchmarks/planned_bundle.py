"""A random-weight bundle with the default model's planned network config.

Used only when no trained model is given or shipped: the timings then show the cost of the
planned architecture, but the coarse stage's random output decides the fine stage's region, so the
fine-stage time is not that of a trained model (the results say which bundle was used).
"""

from __future__ import annotations

from pathlib import Path

import torch

from pancreas_ssl_seg.bundle import save_bundle
from pancreas_ssl_seg.bundle_format import STAGES
from pancreas_ssl_seg.bundle_metadata import default_metadata
from pancreas_ssl_seg.networks import build_network

PLANNED_NETWORK = {"spatial_dims": 2, "in_channels": 1, "out_channels": 3,
                   "channels": [16, 32, 64, 128], "strides": [2, 2, 2], "dropout": 0.1,
                   "heads": []}


def write_planned_random_bundle(out_dir: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    coarse = {"network": PLANNED_NETWORK, "spacing_mm": [3.0, 3.0, 3.0], "patch_size": [128, 128]}
    fine = {"network": PLANNED_NETWORK, "spacing_mm": [0.9, 0.9, 2.5], "patch_size": [128, 128],
            "margin_mm": 20.0}
    metadata = default_metadata(name="planned-random", version="0.0.0", coarse=coarse, fine=fine,
                                description="random weights, default model's planned config; "
                                            "benchmark only")
    weights = {stage: build_network(metadata["stages"][stage]["network"]).state_dict()
               for stage in STAGES}
    return save_bundle(out_dir, metadata, weights, "# Random benchmark bundle\nNot a model.\n")
