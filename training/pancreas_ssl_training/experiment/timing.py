"""``pancreas-ssl-train experiment --timing N``: what an experiment will cost, measured before it
is run.

``--timing N`` trains each arm's stages (and the pre-training) for N iterations, scores one
slice per held-out patient, and writes ``<name>_timing.md`` / ``.csv``: seconds per iteration
per arm and stage, seconds per scored slice, and the full experiment's cost extrapolated.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from ..config import load_config
from .runner import (DEFAULT_DATA_ROOT, PRETRAIN, Run, evaluate_run, execute, make_run, plan,
                     prepare_targets)
from .spec import REFERENCE_ARM, load_experiment
from .targets import NIH_8BIT_FOLDER, Target


def run_timing(config_path: Path, runs_dir: Path, results_dir: Path, iterations: int,
               data_root: Path = DEFAULT_DATA_ROOT, jobs: int = 1) -> list[dict[str, Any]]:
    """Measure seconds per iteration of every arm's stages and seconds per scored slice, and
    extrapolate the experiment's cost (module docstring)."""
    from .report import write_timing

    experiment = load_experiment(config_path)
    data_root, runs_dir = data_root.resolve(), runs_dir.resolve()
    recipe = load_config(experiment["recipe"])
    targets, folder, target_timings = prepare_targets(experiment, runs_dir / "timing", data_root,
                                                      slices_per_patient=1)
    seed = experiment["seeds"][0]
    runs = []
    for stage in recipe["stages"]:  # each stage alone: its own seconds per iteration
        runs += [dataclasses.replace(run, stages=(stage,), evaluate=False)
                 for run in plan(experiment, runs_dir / "timing" / stage, data_root,
                                 seeds=[seed], iterations=iterations, with_pretraining=False)]
    if any(arm.get("pretrain") for arm in experiment["arms"].values()):
        runs.append(make_run(experiment, PRETRAIN, seed, runs_dir / "timing" / "pretrain",
                             data_root, iterations=iterations))
    records = {r["run_dir"]: r for r in execute(runs, jobs, targets, folder,
                                                 experiment["evaluation"], experiment["threads"])}
    rows = []
    for run in runs:
        record = records[str(run.run_dir)]
        rows.append({"arm": run.arm, "stage": "pretrain" if run.arm == PRETRAIN else run.stages[0],
                     "iterations": iterations, "setup_seconds": record.get("setup_seconds"),
                     "train_seconds": record.get("train_seconds"),
                     "seconds_per_iteration": round(seconds_per_iteration(run.run_dir), 3)})
    scoring = _time_scoring(runs, experiment, targets, folder)
    full = {t.name: _full_slice_count(t, data_root) for t in targets}
    return write_timing(experiment, recipe, rows, scoring, target_timings, full, results_dir,
                        jobs)


def _full_slice_count(target: Target, data_root: Path) -> int:
    """Slices of a target without a per-patient limit (counted from the file names)."""
    from ..data.slices import load_nih_hu_slices

    if "nih_hu" in target.spec:
        return len(load_nih_hu_slices(target.spec["nih_hu"]))
    patients = set(target.spec["nih_8bit"]["patients"])
    names = (data_root / NIH_8BIT_FOLDER / "images").glob("PANCREAS_*.jpg")
    return sum(1 for n in names if n.name[9:13] in patients)


def seconds_per_iteration(run_dir: Path) -> float:
    """Seconds per training iteration between the first and the last logged iteration of the
    run's one stage (TensorBoard wall times): dataset building and start-up left out."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    tags = [t for t in events.Tags()["scalars"] if t.endswith("/loss_total")]
    if len(tags) != 1:
        raise ValueError(f"{run_dir}: expected the log of one stage, found {tags}")
    points = events.Scalars(tags[0])
    points = points[1:] if len(points) > 2 else points  # the first iteration warms up
    if len(points) < 2:
        raise ValueError(f"{run_dir}: fewer than two logged iterations to time")
    return (points[-1].wall_time - points[0].wall_time) / (points[-1].step - points[0].step)


def _time_scoring(runs: list[Run], experiment: dict[str, Any], targets: list[Target],
                  folder: Path) -> list[dict[str, Any]]:
    """Seconds per slice of the cascade (the baseline's two timing stages joined)."""
    from ..checkpoint import load_checkpoint, save_checkpoint

    stage_runs = [r for r in runs if r.arm == REFERENCE_ARM]
    joined = stage_runs[0].run_dir.parents[2] / "joined" / REFERENCE_ARM
    checkpoints = [load_checkpoint(r.run_dir / "checkpoint") for r in stage_runs]
    states = {name: c.network_states[name] for c in checkpoints for name in c.network_states}
    config = load_config(stage_runs[0].config_path)
    save_checkpoint(joined / "checkpoint", config=config,
                    progress={"stage": "fine", "iteration": 0, "completed": list(states)},
                    network_states=states)
    run = Run(REFERENCE_ARM, stage_runs[0].seed, joined, stage_runs[0].config_path)
    records = []
    for target in targets:
        if target.kind == "corruption" and target.severity != max(
                experiment["targets"].get("severities", [0])):
            continue
        started = time.time()
        slices = evaluate_run(run, [target], folder, experiment["evaluation"])
        records.append({"target": target.name, "slices": slices,
                        "seconds_per_slice": round((time.time() - started) / slices, 3)})
        (joined / "evaluation" / "cases.csv").unlink()
    return records
