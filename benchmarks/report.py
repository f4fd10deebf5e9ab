"""The benchmark's result as a Markdown table (the JSON is written as is)."""

from __future__ import annotations

# Issue 16's targets on a 2-core CPU, whole process (peak in GiB, as peak_rss_mb / 1024).
TARGETS = {"accurate_wall_s": 10.0, "accurate_peak_gb": 2.0, "ratio": 25.0, "fast_wall_s": 5.0,
           "fast_peak_gb": 2.0}


def _row(cells) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown_table(result: dict) -> str:
    machine, ct = result["machine"], result["input"]
    lines = [f"Input: {ct['size'][0]}×{ct['size'][1]}×{ct['size'][2]} voxels at "
             f"{'×'.join(f'{s:g}' for s in ct['spacing_mm'])} mm ({ct['voxels_million']} M voxels, "
             f"int16), built from `{ct['source_name']}`. Model: `{result['model']['name']}` "
             f"({result['model']['kind']}).",
             f"Machine: {machine['cpu_model']}, {machine['usable_cores']} cores, "
             f"{machine['memory_gb']} GB RAM, torch {machine['torch']} ({machine['torch_threads']} "
             f"threads; measured steps: {result['step_threads']}), "
             f"GPU: {machine['cuda'] or 'none'}; load average at start "
             f"{machine['load_average_start']}, at end {result['load_average_end']}.", "",
             _row(["step", "wall time (s)", "peak memory (MB)", "baseline / this", "notes"]),
             _row(["---", "---:", "---:", "---:", "---"])]
    baseline = result.get("baseline")
    for key in ("accurate", "fast"):
        step = result.get(key)
        if step and "error" in step:
            lines.append(_row([f"engine CLI, {key}", "failed", "", "",
                               f"exit {step['returncode']}: {step['error'].strip()[-200:]}"]))
        elif step:
            ratio = (f"{baseline['total_s_extrapolated'] / step['wall_s']:.1f}×"
                     if baseline and "error" not in baseline else "n/a")
            lines.append(_row([f"engine CLI, {key}", f"{step['wall_s']:.1f}",
                               f"{step['peak_rss_mb']:.0f}", ratio,
                               "whole process: read → … → write all outputs"]))
    if baseline and "error" in baseline:
        lines.append(_row(["baseline DynUNet 1.5 mm", "failed", "", "",
                           baseline["error"].strip()[-200:]]))
    elif baseline:
        lines.append(_row(["baseline DynUNet 1.5 mm", f"{baseline['total_s_extrapolated']:.0f}",
                           f"{baseline['peak_rss_mb']:.0f}", "1.0×",
                           f"{baseline['measured_patches']} of {baseline['full_patch_count']} "
                           f"patches timed ({baseline['per_patch_s']:.1f} s each), extrapolated; "
                           "peak is for the timed patches"]))
    for key in ("accurate", "fast"):
        stages = (result.get(key) or {}).get("timings_s")
        if stages:
            lines += ["", f"Per-stage times, {key} (s, from the engine report): " + ", ".join(
                f"{name} {seconds:.2f}" for name, seconds in stages.items())]
    checks = result.get("targets")
    if checks:
        lines += ["", "Targets (2-core CPU): " + "; ".join(
            f"{name} {'met' if ok['met'] else 'MISSED'} ({ok['value']} vs {ok['target']})"
            for name, ok in checks.items())]
    return "\n".join(lines) + "\n"
