"""Micro-benchmark: forward time of the planned 2-D network per 128x128 slice, by option.

Evidence for ``benchmarks/NOTES.md`` (batch size, ``inference_mode`` vs ``no_grad``,
``channels_last``, thread count). Run: ``python benchmarks/network_throughput.py [--threads N]``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from pancreas_ssl_seg.networks import build_network

PLANNED_NETWORK = {"spatial_dims": 2, "in_channels": 1, "out_channels": 3,
                   "channels": [16, 32, 64, 128], "strides": [2, 2, 2], "dropout": 0.1}


def seconds_per_slice(network, batch: int, context, channels_last: bool = False,
                      repeats: int = 3, size: int = 128) -> float:
    x = torch.randn(batch, 1, size, size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with context():
        network(x)  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            network(x)
            best = min(best, time.perf_counter() - t0)
    return best / batch


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    network = build_network(PLANNED_NETWORK).eval()
    results = {"threads": args.threads}
    for batch in (1, 8, 32):
        results[f"batch{batch}_inference_mode_ms"] = 1e3 * seconds_per_slice(
            network, batch, torch.inference_mode)
    results["batch32_no_grad_ms"] = 1e3 * seconds_per_slice(network, 32, torch.no_grad)
    network_cl = build_network(PLANNED_NETWORK).eval().to(memory_format=torch.channels_last)
    results["batch32_channels_last_ms"] = 1e3 * seconds_per_slice(
        network_cl, 32, torch.inference_mode, channels_last=True)
    print(json.dumps({k: round(v, 2) for k, v in results.items()}))


if __name__ == "__main__":
    main()
