"""Speed and memory benchmark: the engine CLI (Accurate, Fast) against a full-resolution baseline.

One command, one input: builds a clinical-size CT (512 x 512 x 224 at 0.8 x 0.8 x 1.5 mm) from the
real 3 mm example CT, runs each measured step in its own process (wall time and peak resident
memory of that process alone), and writes ``benchmark.json`` and ``benchmark.md`` to ``--out``.

    python benchmarks/run_benchmark.py --out benchmarks/results   # what `make benchmark` runs
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from clinical_ct import build_clinical_ct  # noqa: E402
from machine import describe_machine, load_average  # noqa: E402
from measure import run_measured  # noqa: E402
from report import TARGETS, markdown_table  # noqa: E402

DEFAULT_SOURCE = (BENCH_DIR.parent.parent / "shared" / "data" / "ct-abdomen-3mm"
                  / "example_ct.nii.gz")


def resolve_model(requested: Path | None, work_dir: Path) -> dict:
    """The bundle to time: ``--model``, else the shipped default, else a planned random one."""
    from pancreas_ssl_seg.bundle import default_bundle_path, load_bundle
    from pancreas_ssl_seg.errors import BundleError

    if requested is not None:
        bundle = load_bundle(requested)
        return {"path": str(requested), "name": bundle.name, "version": bundle.version,
                "kind": "given"}
    try:
        shipped = default_bundle_path()
        bundle = load_bundle(shipped)
        return {"path": str(shipped), "name": bundle.name, "version": bundle.version,
                "kind": "shipped default model"}
    except BundleError as error:
        from planned_bundle import write_planned_random_bundle

        path = write_planned_random_bundle(work_dir / "planned-random")
        return {"path": str(path), "name": "planned-random", "version": "0.0.0",
                "kind": "RANDOM weights, planned default config (no shipped model: "
                        f"{error})"}


def engine_cli() -> list[str]:
    """The installed console script, so the timing includes interpreter start and imports."""
    script = Path(sys.executable).parent / "pancreas-ssl-seg"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "pancreas_ssl_seg"]


def step_env(threads: int | None) -> dict[str, str]:
    """Environment of a measured step; ``threads`` caps torch's intra-op threads (OpenMP)."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else dict(os.environ)


def run_engine(ct: Path, bundle: Path, out_dir: Path, fast: bool, timeout_s: float,
               threads: int | None) -> dict:
    argv = engine_cli() + ["segment", str(ct), "-o", str(out_dir), "--model", str(bundle),
                           "--device", "auto"] + (["--fast"] if fast else [])
    load_before = load_average()
    step = run_measured(argv, env=step_env(threads), timeout_s=timeout_s)
    result = {"argv": argv, "wall_s": round(step.wall_s, 2), "peak_rss_mb": round(step.peak_rss_mb),
              "cpu_s": round(step.cpu_s, 1), "returncode": step.returncode,
              "load_average_before": load_before}
    if step.returncode != 0:
        result["error"] = (step.stderr or step.stdout)[-2000:]
        return result
    reports = sorted(out_dir.glob("*_report.json"))
    if reports:
        report = json.loads(reports[0].read_text(encoding="utf-8"))
        result["timings_s"] = {k: round(v, 3) for k, v in report.get("timings_s", {}).items()}
        result["device"] = report.get("device")
    result["outputs"] = sorted(p.name for p in out_dir.iterdir())
    return result


def run_baseline(ct: Path, work_dir: Path, patches: int, timeout_s: float,
                 threads: int | None) -> dict:
    out_json = work_dir / "baseline.json"
    argv = [sys.executable, str(BENCH_DIR / "baseline.py"), str(ct), str(out_json),
            "--patches", str(patches)]
    load_before = load_average()
    step = run_measured(argv, env=step_env(threads), timeout_s=timeout_s)
    if step.returncode != 0:
        return {"argv": argv, "returncode": step.returncode, "error": step.stderr[-2000:]}
    result = json.loads(out_json.read_text(encoding="utf-8"))
    result.update(wall_s_of_this_step=round(step.wall_s, 1), peak_rss_mb=round(step.peak_rss_mb),
                  load_average_before=load_before)
    return result


def check_targets(result: dict) -> dict:
    accurate, fast, baseline = result.get("accurate"), result.get("fast"), result.get("baseline")
    checks = {}

    def check(name, value, target, higher_is_better=False):
        met = value >= target if higher_is_better else value <= target
        checks[name] = {"value": round(value, 2), "target": target, "met": bool(met)}

    if accurate and "error" not in accurate:
        check("accurate_wall_s", accurate["wall_s"], TARGETS["accurate_wall_s"])
        check("accurate_peak_gb", accurate["peak_rss_mb"] / 1024, TARGETS["accurate_peak_gb"])
        if baseline and "error" not in baseline:
            ratio = baseline["total_s_extrapolated"] / accurate["wall_s"]
            result["ratio_baseline_over_accurate"] = round(ratio, 1)
            check("ratio", ratio, TARGETS["ratio"], higher_is_better=True)
    if fast and "error" not in fast:
        check("fast_wall_s", fast["wall_s"], TARGETS["fast_wall_s"])
        check("fast_peak_gb", fast["peak_rss_mb"] / 1024, TARGETS["fast_peak_gb"])
        if baseline and "error" not in baseline:
            result["ratio_baseline_over_fast"] = round(
                baseline["total_s_extrapolated"] / fast["wall_s"], 1)
    return checks


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE,
                        help="3-D CT the clinical-size input is built from")
    parser.add_argument("--model", type=Path, default=None,
                        help="bundle to time (default: the shipped model)")
    parser.add_argument("--baseline-patches", type=int, default=1,
                        help="baseline patches actually run (the rest is extrapolated)")
    # 1 thread: measured fastest on the shared 2-core machine (NOTES.md); 0 = torch's default.
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of every measured step (0: torch's own choice)")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--step-timeout-s", type=float, default=240.0)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    result = {"machine": describe_machine(), "step_threads": args.threads or "torch default"}
    work_dir = Path(tempfile.mkdtemp(prefix="pancreas-bench-"))
    try:
        ct_path = work_dir / "clinical_ct.nii.gz"
        result["input"] = {**build_clinical_ct(args.source, ct_path),
                           "source_name": args.source.name}
        result["model"] = resolve_model(args.model, work_dir)
        bundle = Path(result["model"]["path"])
        for mode in ("accurate", "fast"):
            print(f"[benchmark] engine {mode} ...", flush=True)
            result[mode] = run_engine(ct_path, bundle, work_dir / mode, mode == "fast",
                                      args.step_timeout_s, args.threads)
            print(f"[benchmark]   {result[mode].get('wall_s')} s, "
                  f"{result[mode].get('peak_rss_mb')} MB", flush=True)
        if not args.skip_baseline:
            print("[benchmark] baseline ...", flush=True)
            result["baseline"] = run_baseline(ct_path, work_dir, args.baseline_patches,
                                              args.step_timeout_s, args.threads)
        result["load_average_end"] = load_average()
        result["targets"] = check_targets(result)
        result["benchmark_wall_s"] = round(time.perf_counter() - started, 1)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    result["input"]["path"] = "(temporary, deleted)"
    if result["model"]["path"].startswith(str(work_dir)):
        result["model"]["path"] = "(temporary, deleted)"

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "benchmark.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    table = markdown_table(result)
    (args.out / "benchmark.md").write_text(table, encoding="utf-8")
    print(table)
    failed = [k for k in ("accurate", "fast", "baseline") if "error" in (result.get(k) or {})]
    if failed:
        print(f"[benchmark] steps failed: {failed}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
