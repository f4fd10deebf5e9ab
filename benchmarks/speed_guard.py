"""Speed guard: ``segment()``'s time as a multiple of a fixed reference workload, in one process.

Absolute seconds differ between machines and with the load other jobs put on them; the ratio of
two workloads timed side by side in one process, on one thread, mostly does not. Engine workload:
``segment()`` (Fast, CPU, the shipped model) on the real 3 mm example CT resampled to 1.5 mm
(244 x 202 x 224 voxels, int16 ``.nii.gz``: large enough that reading, resampling, clean-up and
mapping count, not only the networks). Reference workload: the shipped model's coarse network
(the one the engine runs) on a fixed 4 x 1 x 128 x 128 tensor, ``REFERENCE_CALLS`` forwards.
Each of ``repeats`` rounds times half the reference, the engine, then the other half, so both
sides see the same moments of a machine other jobs share; the ratio is the median of the rounds'
ratios, after one warm-up round. Torch and ITK run on one thread each: multi-threaded steps lose
more than single-threaded ones when other jobs hold the cores.

``Testing/robustness/test_speed_guard.py`` fails when the ratio exceeds ``ALLOWED_GROWTH`` times
the figure committed in ``speed_guard.json``. Re-measure (and commit the file) after a
deliberate change of the engine's cost, e.g. a new model:

    python benchmarks/speed_guard.py            # measure and print
    python benchmarks/speed_guard.py --write    # ... and store it in benchmarks/speed_guard.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk
import torch

from pancreas_ssl_seg.preprocessing import resample_to_spacing

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from machine import describe_machine  # noqa: E402

GUARD_FILE = BENCH_DIR / "speed_guard.json"
DEFAULT_SOURCE = BENCH_DIR.parent / "Resources" / "Examples" / "example_ct.nii.gz"
GUARD_SPACING_MM = (1.5, 1.5, 1.5)
ALLOWED_GROWTH = 2.0
REFERENCE_SHAPE = (4, 1, 128, 128)  # the engine's 2-D batch: inference.PIXELS_PER_CALL pixels
REFERENCE_CALLS = 16
MEASURE_COMMAND = "python benchmarks/speed_guard.py --write"


def build_guard_ct(source: Path, out_path: Path) -> Path:
    """The engine workload's input: ``source`` resampled to 1.5 mm, int16 ``.nii.gz``."""
    image = sitk.Cast(sitk.ReadImage(str(source)), sitk.sitkInt16)
    sitk.WriteImage(resample_to_spacing(image, GUARD_SPACING_MM), str(out_path),
                    useCompression=True)
    return out_path


def reference_workload():
    """A callable running the fixed reference workload (the shipped coarse network, fixed
    input); built once, outside the timing."""
    from pancreas_ssl_seg.bundle import default_bundle_path, load_bundle

    network = load_bundle(default_bundle_path()).load_network("coarse", torch.device("cpu"))
    batch = torch.randn(REFERENCE_SHAPE, generator=torch.Generator().manual_seed(0))

    def run(calls: int = REFERENCE_CALLS) -> None:
        with torch.inference_mode():
            for _ in range(calls):
                network(batch)

    return run


def engine_workload(ct_path: Path):
    """A callable running ``segment()`` as users call it (model path, Fast, CPU). ``segment`` is
    looked up at each call, so a test can replace it."""
    from pancreas_ssl_seg import pipeline
    from pancreas_ssl_seg.bundle import default_bundle_path

    def run():
        return pipeline.segment(str(ct_path), model=default_bundle_path(), device="cpu",
                                fast=True)

    return run


def _seconds(work) -> float:
    start = time.perf_counter()
    work()
    return time.perf_counter() - start


def measure(ct_path: Path, repeats: int = 3) -> dict:
    """Time both workloads in ``repeats`` rounds (after one warm-up round), the engine between
    the two halves of the reference, on torch's current thread count; returns the figures,
    ``ratio`` = median of the rounds' engine / reference."""
    reference, engine = reference_workload(), engine_workload(ct_path)
    half = REFERENCE_CALLS // 2
    reference()
    engine()
    reference_s, engine_s = [], []
    for _ in range(repeats):
        before = _seconds(lambda: reference(half))
        engine_s.append(_seconds(engine))
        reference_s.append(before + _seconds(lambda: reference(REFERENCE_CALLS - half)))
    ratios = [e / r for e, r in zip(engine_s, reference_s)]
    return {"ratio": round(statistics.median(ratios), 2),
            "engine_s": [round(s, 3) for s in engine_s],
            "reference_s": [round(s, 3) for s in reference_s],
            "ratios": [round(r, 2) for r in ratios], "torch_threads": torch.get_num_threads()}


def load_committed(path: Path = GUARD_FILE) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--write", action="store_true",
                        help=f"store the figure in {GUARD_FILE.name} (commit it)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # as the test: steady on a busy 2-core machine (NOTES.md)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        figures = measure(build_guard_ct(args.source, Path(tmp) / "guard_ct.nii.gz"),
                          args.repeats)
    machine = describe_machine()
    figures.update(machine=f"{machine['cpu_model']}, {machine['usable_cores']} cores, torch "
                           f"{machine['torch']}",
                   load_average=machine["load_average_start"],
                   measured=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                   command=MEASURE_COMMAND, allowed_growth=ALLOWED_GROWTH)
    text = json.dumps(figures, indent=1) + "\n"
    print(text, end="")
    if GUARD_FILE.is_file():
        committed = load_committed()["ratio"]
        print(f"committed ratio {committed}; this run {figures['ratio']} = "
              f"{figures['ratio'] / committed:.2f}x it (the test fails above {ALLOWED_GROWTH}x)")
    if args.write:
        GUARD_FILE.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
