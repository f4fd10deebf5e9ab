"""Where the engine's time goes: ``segment()`` under cProfile, plus the report's stage times.

Run: ``python benchmarks/profile_engine.py CT [--model BUNDLE] [--fast] [--threads N]``; prints the
stage times and the functions with the most cumulative and own time (evidence for NOTES.md).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import time
from pathlib import Path

import torch


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ct", type=Path)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--fast", action="store_true")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from pancreas_ssl_seg import segment

    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    result = segment(str(args.ct), model=args.model, device="cpu", fast=args.fast)
    profiler.disable()
    wall_s = time.perf_counter() - start
    print(json.dumps({"wall_s": round(wall_s, 2), "torch_threads": torch.get_num_threads(),
                      "timings_s": result.report.get("timings_s")}, indent=1))
    for key in ("cumulative", "tottime"):
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats(key).print_stats(args.top)
        print(text.getvalue())


if __name__ == "__main__":
    main()
