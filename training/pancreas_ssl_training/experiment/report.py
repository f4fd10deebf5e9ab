"""The experiment's report: per target, each arm against the baseline, with intervals.

Written to the results folder (``<name>`` = the experiment's name):
``<name>.md`` (stop rule, verdict matrix, one table per target, commands and run times),
``<name>_summary.csv`` (one row per target and arm), ``<name>_cases.csv`` and
``<name>_calibration.csv`` (every scored slice of every run), ``<name>_runs.csv`` (seconds per
run), ``<name>_run.json`` (command, config, commit, machine, wall time),
``<name>_boxplots/dice_<target>.png`` (Dice per arm, slices of every seed) and
``<name>_dice_vs_severity.png`` (mean Dice over seeds against corruption severity, per arm).

Statistics (``evaluation.statistics``): mean ± sd over seeds of each seed's mean over slices;
median over all slices and seeds; Dice minus the baseline's paired by slice and seed, its mean,
median and 95 % patient-cluster bootstrap interval; verdict ``better`` / ``worse`` when the
interval excludes 0, else ``indistinguishable``.
"""

from __future__ import annotations

import json
import math
import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..evaluation.plots import box_plot
from ..evaluation.statistics import compare_to_baseline, over_seeds
from ..evaluation.tables import read_csv, write_csv
from .spec import REFERENCE_ARM
from .targets import Target

CALIBRATION = ("ece_pancreas", "error_uncertainty_dice")
SUMMARY_HEADER = ("| arm | Dice mean ± sd (seeds) | Dice median | ΔDice mean [95 % CI] | "
                  "ΔDice median | verdict | HD95 median (mm) | ECE | error–uncertainty Dice | "
                  "seeds | slices |")


def _cases(run_dirs: Sequence[Path], name: str = "cases.csv") -> list[dict[str, str]]:
    rows = []
    for run_dir in run_dirs:
        path = Path(run_dir) / "evaluation" / name
        if path.is_file():
            rows += read_csv(path)
    return rows


def _pancreas(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [row for row in rows if row["region"] == "pancreas"]


def stop_rule_status(run_dirs: Sequence[Path], rule: dict[str, Any]) -> dict[str, Any]:
    """Mean over seeds of the rule arm's mean Dice on the rule target, and whether it passes."""
    rows = [r for r in _pancreas(_cases(run_dirs)) if r["target"] == rule["target"]]
    dice = over_seeds(rows, "dice")
    value = dice["dice_mean"]
    return {**rule, "dice": value, "dice_sd": dice["dice_sd"], "seeds": dice["dice_seeds"],
            "passed": bool(math.isfinite(value) and value >= float(rule["min_dice"]))}


def _fmt(value: Any, digits: int = 3, signed: bool = False) -> str:
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def summary_rows(cases: list[dict[str, str]], calibration: list[dict[str, str]],
                 targets: list[Target], arms: list[str]) -> list[dict[str, Any]]:
    """One row per target and arm (arms without results are left out)."""
    pancreas = _pancreas(cases)
    out = []
    for target in targets:
        rows = [r for r in pancreas if r["target"] == target.name]
        scores = [r for r in calibration if r["target"] == target.name]
        for arm in arms:
            mine = [r for r in rows if r["method"] == arm]
            if not mine:
                continue
            row: dict[str, Any] = {"target": target.name, "kind": target.kind,
                                   "corruption": target.corruption,
                                   "severity": target.severity, "arm": arm,
                                   **over_seeds(mine, "dice"), **over_seeds(mine, "hd95_mm")}
            for metric in CALIBRATION:
                row.update(over_seeds([r for r in scores if r["method"] == arm], metric))
            if arm != REFERENCE_ARM:
                row.update(compare_to_baseline(rows, "dice", arm, REFERENCE_ARM))
            out.append(row)
    return out


def _target_table(rows: list[dict[str, Any]]) -> str:
    lines = [SUMMARY_HEADER, "|" + "---|" * 11]
    for row in rows:
        diff = "–" if row["arm"] == REFERENCE_ARM else (
            f"{_fmt(row['dice_diff_mean'], signed=True)} "
            f"[{_fmt(row['dice_diff_low'], signed=True)}, "
            f"{_fmt(row['dice_diff_high'], signed=True)}]")
        sd = "" if not math.isfinite(row["dice_sd"]) else f" ± {_fmt(row['dice_sd'])}"
        lines.append("| " + " | ".join([
            row["arm"], f"{_fmt(row['dice_mean'])}{sd}", _fmt(row["dice_median"]), diff,
            _fmt(row.get("dice_diff_median"), signed=True), row.get("dice_verdict", "–"),
            _fmt(row["hd95_mm_median"], 1), _fmt(row["ece_pancreas_mean"]),
            _fmt(row["error_uncertainty_dice_mean"]), str(row["dice_seeds"]),
            str(row["dice_cases"])]) + " |")
    return "\n".join(lines)


def _verdict_matrix(summary: list[dict[str, Any]], targets: list[Target],
                    arms: list[str]) -> str:
    compared = [a for a in arms if a != REFERENCE_ARM]
    lines = ["| target | " + " | ".join(compared) + " |", "|" + "---|" * (len(compared) + 1)]
    index = {(r["target"], r["arm"]): r for r in summary}
    for target in targets:
        cells = []
        for arm in compared:
            row = index.get((target.name, arm))
            cells.append("–" if row is None else
                         f"{_fmt(row['dice_diff_mean'], signed=True)} "
                         f"[{_fmt(row['dice_diff_low'], signed=True)}, "
                         f"{_fmt(row['dice_diff_high'], signed=True)}] {row['dice_verdict']}")
        lines.append(f"| {target.name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def severity_plot(summary: list[dict[str, Any]], targets: list[Target], arms: list[str],
                  path: Path) -> Path | None:
    """Mean Dice over seeds (bars: sd over seeds) against severity, one panel per corruption,
    one line per arm; severity 0 is the ``in_domain`` target."""
    from ..evaluation.plots import plt

    corruptions = list(dict.fromkeys(t.corruption for t in targets if t.kind == "corruption"))
    if not corruptions:
        return None
    index = {(r["target"], r["arm"]): r for r in summary}
    columns = min(3, len(corruptions))
    rows = math.ceil(len(corruptions) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), dpi=110,
                                squeeze=False, sharey=True)
    for panel, corruption in zip(axes.ravel(), corruptions):
        levels = [(0, "in_domain")] + [(t.severity, t.name) for t in targets
                                       if t.corruption == corruption]
        for arm in arms:
            points = [(s, index[(name, arm)]) for s, name in levels if (name, arm) in index]
            if not points:
                continue
            panel.errorbar([s for s, _ in points], [r["dice_mean"] for _, r in points],
                           yerr=[0.0 if not math.isfinite(r["dice_sd"]) else r["dice_sd"]
                                 for _, r in points], marker="o", capsize=3, label=arm)
        panel.set_title(corruption)
        panel.set_xlabel("severity (0 = clean)")
        panel.set_xticks(sorted({s for s, _ in levels}))
        panel.grid(alpha=0.3)
    for panel in axes.ravel()[len(corruptions):]:
        panel.axis("off")
    axes[0, 0].set_ylabel("pancreas Dice (mean over seeds)")
    axes.ravel()[0].legend(fontsize=7)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path


def write_report(experiment: dict[str, Any], runs: list, targets: list[Target],
                 results: Path, records: list[dict[str, Any]] | None,
                 run_info: dict[str, Any] | None, status: dict[str, Any]) -> str:
    """Every result file of the module docstring; returns the Markdown."""
    name = experiment["name"]
    results.mkdir(parents=True, exist_ok=True)
    prefix = results / name
    scored = [r for r in runs if r.evaluate]
    arms = [a for a in experiment["arms"]]
    if not status["passed"]:  # the stop rule: only the rule's arm is reported
        arms = [status["arm"]]
    cases, calibration = _cases([r.run_dir for r in scored]), \
        _cases([r.run_dir for r in scored], "calibration.csv")
    missing = [f"{r.arm} seed {r.seed}" for r in scored if r.arm in arms
               and not (r.run_dir / "evaluation" / "cases.csv").is_file()]
    write_csv(cases, f"{prefix}_cases.csv")
    write_csv(calibration, f"{prefix}_calibration.csv")
    if records:
        write_csv(records, f"{prefix}_runs.csv")
    if run_info is not None:
        (results / f"{name}_run.json").write_text(json.dumps(run_info, indent=2, default=str)
                                                  + "\n", encoding="utf-8")
    summary = summary_rows(cases, calibration, targets, arms)
    write_csv(summary, f"{prefix}_summary.csv")
    pancreas = _pancreas(cases)
    for target in targets:
        box_plot([r for r in pancreas if r["target"] == target.name], "dice", "method",
                 results / f"{name}_boxplots" / f"dice_{target.name}.png", order=arms,
                 title=f"Pancreas Dice, {target.name} (slices x seeds)", ylabel="Dice")
    severity_plot(summary, targets, arms, results / f"{name}_dice_vs_severity.png")

    rule = status
    verdict = ("passed" if rule["passed"] else
               "**not passed: no comparison between arms is reported** (the other arms were "
               "not trained)")
    overrides = experiment["recipe_overrides"]
    with_overrides = f" with overrides {json.dumps(overrides)}" if overrides else ""
    text = [f"# Experiment `{name}`", "",
            f"Source: NIH 8-bit slices of patients {experiment['source']['patients'][0]:04d}–"
            f"{experiment['source']['patients'][1]:04d}; recipe `{Path(experiment['recipe']).name}`"
            f"{with_overrides}. "
            f"Arms: {', '.join(experiment['arms'])}. Seeds: "
            f"{', '.join(map(str, experiment['seeds']))}.", "",
            f"**Stop rule**: `{rule['arm']}` mean Dice on `{rule['target']}` = "
            f"{_fmt(rule['dice'])} over {rule['seeds']} seeds (needs ≥ {rule['min_dice']}): "
            f"{verdict}.",
            f"Runs not finished: {', '.join(missing)}." if missing else "Every run finished.", ""]
    if rule["passed"] and len(arms) > 1:
        text += ["## Dice minus the baseline's (paired by slice and seed; 95 % patient-cluster "
                 "bootstrap interval; verdict)", "", _verdict_matrix(summary, targets, arms), ""]
    text += ["## Per target", "",
             "Dice: mean ± sd over seeds of each seed's mean over slices; medians over all "
             "slices and seeds. ΔDice: arm minus baseline on the same slice and seed. ECE and "
             "error–uncertainty Dice: means over seeds (`evaluation.calibration`).", ""]
    for target in targets:
        rows = [r for r in summary if r["target"] == target.name]
        if rows:
            text += [f"### `{target.name}` ({target.kind})", "", _target_table(rows), ""]
    text += ["## Commands and run times", ""]
    if run_info is not None:
        text += [f"Command: `{shlex.join(str(a) for a in run_info['argv'])}`; commit "
                 f"`{run_info['git_commit'][:12]}`; wall time {run_info['wall_seconds']} s; "
                 f"{run_info['jobs']} runs at a time, {experiment['threads']} thread each.", ""]
    if records:
        text += ["| run | seed | train s | eval s | slices scored |", "|---|---|---|---|---|"]
        text += [f"| {r['arm']} | {r['seed']} | {r.get('train_seconds', 'kept')} | "
                 f"{r.get('eval_seconds', '')} | {r.get('slices_scored', '')} |" for r in records]
    markdown = "\n".join(text) + "\n"
    (results / f"{name}.md").write_text(markdown, encoding="utf-8")
    return markdown


def write_timing(experiment: dict[str, Any], recipe: dict[str, Any], rows: list[dict[str, Any]],
                 scoring: list[dict[str, Any]], target_timings: list[dict[str, Any]],
                 full_slices: dict[str, int], results: Path, jobs: int) -> dict[str, Any]:
    """``<name>_timing.md`` / ``_timing.csv``: measured seconds, and the full run's estimate.

    ``rows``: seconds per iteration per arm and stage; ``scoring``: seconds per scored slice
    per target (the highest severity of each corruption stands for its others);
    ``target_timings``: seconds to prepare each timing target and its slices; ``full_slices``:
    slices of each target in the full run."""
    name = experiment["name"]
    results.mkdir(parents=True, exist_ok=True)
    seeds = len(experiment["seeds"])
    iterations = {stage: recipe["stages"][stage]["train"]["iterations"]
                  for stage in recipe["stages"]}
    per = {(r["arm"], r["stage"]): r["seconds_per_iteration"] for r in rows}
    per_slice = {s["target"]: s["seconds_per_slice"] for s in scoring}
    family_cost = {t.rsplit("-", 1)[0]: v for t, v in per_slice.items()}
    train_per_seed = {arm: sum(per[(arm, stage)] * n for stage, n in iterations.items())
                      for arm in experiment["arms"]}
    pretrain = per.get(("pretrain", "pretrain"), 0.0) * \
        (experiment.get("pretrain") or {}).get("iterations", 0)
    eval_per_run = sum(per_slice.get(t, family_cost.get(t.rsplit("-", 1)[0], 0.0)) * n
                       for t, n in full_slices.items())
    prep = sum(t["seconds"] / max(1, t["slices"]) * full_slices.get(t["target"], t["slices"])
               for t in target_timings)
    runs = len(experiment["arms"]) * seeds
    train_total = seeds * (sum(train_per_seed.values()) + pretrain)
    total = train_total + eval_per_run * runs + prep
    gate_arm = experiment["stop_rule"]["arm"]
    gate = seeds * (train_per_seed[gate_arm] + eval_per_run) + prep
    parallel = int(experiment["jobs"])  # the full run's runs at a time
    estimate = {"train_cpu_hours": train_total / 3600, "eval_cpu_hours": eval_per_run * runs / 3600,
                "target_preparation_hours": prep / 3600, "total_cpu_hours": total / 3600,
                "wall_hours": total / 3600 / parallel, "stop_rule_phase_cpu_hours": gate / 3600,
                "jobs": parallel}
    write_csv(rows + [{"arm": "(scoring)", "stage": s["target"],
                       "seconds_per_slice": s["seconds_per_slice"]} for s in scoring],
              results / f"{name}_timing.csv")
    lines = [f"# Cost of `{name}`, measured from a short run", "",
             f"Each arm's stages trained {rows[0]['iterations']} iterations, each stage alone "
             f"({experiment['threads']} thread, {jobs} runs at a time); seconds per iteration "
             "leave out building the dataset. Scoring: the baseline's timing cascade on one "
             "slice per held-out patient per target, Fast mode as configured.", "",
             "| arm | stage | s / iteration | full-run hours per seed |", "|---|---|---|---|"]
    lines += [f"| {r['arm']} | {r['stage']} | {r['seconds_per_iteration']} | "
              + (f"{train_per_seed[r['arm']] / 3600:.2f}" if r["arm"] in train_per_seed
                 else f"{pretrain / 3600:.2f}") + " |" for r in rows]
    lines += ["", "| target | s / slice scored | slices in the full run |", "|---|---|---|"]
    lines += [f"| {s['target']} | {s['seconds_per_slice']} | {full_slices.get(s['target'], '')} |"
              for s in scoring]
    lines += ["", "## Estimate for the full run", "",
              f"- training: {train_total / 3600:.1f} CPU-hours ({seeds} seeds x "
              f"{len(experiment['arms'])} arms, iterations {iterations}, PolyCL pre-training "
              f"{pretrain / 3600:.2f} h per seed);",
              f"- scoring: {eval_per_run / 60:.1f} min per run ({sum(full_slices.values())} "
              f"slices), {eval_per_run * runs / 3600:.1f} CPU-hours; target preparation "
              f"{prep / 60:.1f} min;",
              f"- total: {total / 3600:.1f} CPU-hours, about {total / 3600 / parallel:.1f} h "
              f"wall with the config's {parallel} single-threaded runs at a time on as many "
              "free cores;",
              f"- the stop-rule phase alone (the baseline's {seeds} seeds, scored): "
              f"{gate / 3600:.1f} CPU-hours.", "",
              f"Measured with load average {', '.join(f'{v:.1f}' for v in os.getloadavg())} "
              f"on {os.cpu_count()} cores (1, 5, 15 min): a busy machine inflates these.", ""]
    (results / f"{name}_timing.md").write_text("\n".join(lines), encoding="utf-8")
    return estimate
