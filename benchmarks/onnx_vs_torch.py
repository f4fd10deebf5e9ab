"""Does ONNX Runtime beat PyTorch on this CPU for the cascade's 2-D network? Measure, and check
both agree.

Needs ``onnx`` and ``onnxruntime`` (not project dependencies; install them into a separate
environment that can also import the project). Run:
``python benchmarks/onnx_vs_torch.py [--model BUNDLE] [--threads 1] [--batch 8] [--size 128]``.
PyTorch and ONNX Runtime are timed alternately (best of ``--repeats``) so that load from other
jobs on the machine hits both alike.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from pancreas_ssl_seg.bundle import default_bundle_path, load_bundle


def best_time_s(run, repeats: int) -> float:
    run()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return min(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--stage", default="fine")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    bundle = load_bundle(args.model or default_bundle_path())
    network = bundle.load_network(args.stage)
    x = torch.randn(args.batch, 1, args.size, args.size, generator=torch.Generator().manual_seed(0))

    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = os.path.join(tmp, "stage.onnx")
        torch.onnx.export(network, (x,), onnx_path, dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "n", 2: "h", 3: "w"},
                                        "logits": {0: "n", 2: "h", 3: "w"}})
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(onnx_path, options,
                                               providers=["CPUExecutionProvider"])
    x_np = x.numpy()
    with torch.inference_mode():
        torch_logits = network(x).numpy()
        ort_logits = session.run(None, {"x": x_np})[0]
        torch_s, ort_s = [], []
        for _ in range(2):  # alternate to share out the load of other jobs
            torch_s.append(best_time_s(lambda: network(x), args.repeats))
            ort_s.append(best_time_s(lambda: session.run(None, {"x": x_np}), args.repeats))
    per_slice = lambda s: round(1e3 * min(s) / args.batch, 1)  # noqa: E731
    print(json.dumps({
        "model": f"{bundle.name} {bundle.version} ({args.stage})", "threads": args.threads,
        "batch": args.batch, "size": args.size, "onnxruntime": onnxruntime.__version__,
        "torch_ms_per_slice": per_slice(torch_s), "onnxruntime_ms_per_slice": per_slice(ort_s),
        "max_abs_logit_difference": float(np.abs(torch_logits - ort_logits).max()),
        "argmax_agreement": float((torch_logits.argmax(1) == ort_logits.argmax(1)).mean()),
        "load_average": [round(v, 2) for v in os.getloadavg()]}))


if __name__ == "__main__":
    main()
