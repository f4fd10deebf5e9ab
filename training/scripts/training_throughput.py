"""Where a training iteration's time goes, per stage of a config: data (and within it each step
of ``SliceDataset.__getitem__``), and the network's forward + backward + optimiser step.

Run from the repository root on a quiet machine::

    python training/scripts/training_throughput.py --config training/configs/default_model.yaml \
        --threads 1 --iterations 30

Data steps are timed by profiling real ``dataset[i]`` calls (no re-implementation of the item
pipeline), the network on real batches with the stage's loss.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time

import numpy as np
import torch

from pancreas_ssl_training.config import load_config
from pancreas_ssl_training.data.stage_data import default_dataset_factory
from pancreas_ssl_training.trainer import batches, build_methods_for, stage_network_config
from pancreas_ssl_seg.networks import build_network

# Functions of the item pipeline whose cumulative time is reported.
STEPS = {"crop": "crop_biased_to_label", "synthetic lesion": "insert_synthetic_lesion",
         "intensity augmentation": "apply_intensity_augmentation",
         "reference + normalise": "normalize_ct", "spatial augmentation (MONAI)": "to_tensors"}


def _step_seconds(profile: cProfile.Profile) -> dict[str, float]:
    stats = pstats.Stats(profile).stats
    totals = {}
    for label, function in STEPS.items():
        totals[label] = sum(entry[3] for (_, _, name), entry in stats.items() if name == function)
    return totals


def measure(config: dict, stage_name: str, iterations: int) -> dict[str, float]:
    stage = config["stages"][stage_name]
    batch_size = stage["train"]["batch_size"]
    dataset = default_dataset_factory(stage_name, stage, 0)
    stream = batches(dataset, batch_size, 0, 0, stage_name, 0)
    for _ in range(len(dataset) // batch_size + 1):  # fill the per-slice cache first
        next(stream)
    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    data = [next(stream) for _ in range(iterations)]
    profile.disable()
    data_seconds = (time.perf_counter() - started) / iterations
    methods = build_methods_for(config)
    network = build_network(stage_network_config(stage, methods))
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-3)
    network.train()
    timings = []
    for batch in data:
        started = time.perf_counter()
        outputs = network.forward_heads(batch["image"])
        loss = sum(sum(m.losses(network, batch, outputs).values()) for m in methods)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        timings.append(time.perf_counter() - started)
    network_seconds = float(np.median(timings[2:]))
    steps = {k: v / iterations for k, v in _step_seconds(profile).items()}
    return {"batch_size": batch_size, "data_s": data_seconds, **{f"  {k}_s": v
                                                                  for k, v in steps.items()},
            "network_s": network_seconds,
            "iterations_per_s": 1.0 / (data_seconds + network_seconds)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=30)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    print(f"threads: {args.threads}; per iteration (median network time, mean data time):")
    for stage_name in config["stages"]:
        figures = measure(config, stage_name, args.iterations)
        print(f"[{stage_name}]")
        for key, value in figures.items():
            print(f"  {key:36s} {value:.4f}" if isinstance(value, float) else
                  f"  {key:36s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
