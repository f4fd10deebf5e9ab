"""Run an experiment config: train every arm x seed, score every target, write the report.

``pancreas-ssl-train experiment --config training/experiments/<name>.yaml --runs DIR
--results DIR`` (see ``spec.py`` for the config). Order of work:

1. the targets are prepared once (``<runs>/targets/``, see ``targets.py``);
2. the stop-rule arm (the baseline) is trained and scored for every seed; when its mean Dice on
   the stop-rule target is below ``min_dice``, nothing else is trained and the report says so;
3. otherwise PolyCL pre-training (one per seed) and the other arms, ``jobs`` runs at a time,
   each run single-threaded (parallelism comes from the runs; a run waits for its seed's
   pre-training);
4. ``report.write_report`` collects every run's ``evaluation/cases.csv``.

A run folder ``<runs>/<arm>/seed<N>/`` holds ``run_config.yaml`` (the recipe, extended: any one
run can be repeated with ``pancreas-ssl-train fit --config``), the trainer's files and
``evaluation/`` (``cases.csv``, ``calibration.csv``). A finished checkpoint or evaluation is
kept, so an interrupted experiment continues where it stopped.
"""

from __future__ import annotations

import concurrent.futures as futures
import dataclasses
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from ..config import deep_merge, load_config
from ..evaluation.protocols import patient_range
from .spec import load_experiment
from .targets import (NIH_8BIT_FOLDER, Target, experiment_targets, prepare_target, target_cases,
                      target_record)

DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[3].parent / "shared" / "data"
PRETRAIN = "pretrain"
RUN_TIMES = "run_times.json"  # seconds of a run's training, kept for a continued experiment


@dataclasses.dataclass(frozen=True)
class Run:
    """One training run (an arm x seed, or a seed's PolyCL pre-training) and its scoring."""

    arm: str
    seed: int
    run_dir: Path
    config_path: Path
    stages: tuple[str, ...] | None = None  # None: every stage of the config
    evaluate: bool = True


def run_config(experiment: dict[str, Any], arm: str, seed: int, data_root: Path,
               pretrain_checkpoint: Path | None, iterations: int | None = None
               ) -> dict[str, Any]:
    """The training config of one run: the recipe, the experiment's overrides, the source
    slices, the arm's methods (or PolyCL pre-training) and the seed."""
    recipe = load_config(experiment["recipe"])
    mapping = dict(recipe["data"].get("grey_to_hu") or {})
    if mapping:
        mapping["data_root"] = str(data_root)
    sources = {"nih_8bit": {"path": str(data_root / NIH_8BIT_FOLDER),
                            "patients": patient_range(*experiment["source"]["patients"])}}
    config: dict[str, Any] = deep_merge(
        {"extends": experiment["recipe"], "name": f"{experiment['name']}-{arm}-seed{seed}"},
        experiment["recipe_overrides"])
    config = deep_merge(config, {"data": {"sources": sources, "grey_to_hu": mapping or None},
                                 "train": {"seed": seed, "threads": experiment["threads"]}})
    if arm == PRETRAIN:
        settings = experiment["pretrain"]
        config["methods"] = {"supervised": {"enabled": True, "weight": 0.0},
                             "polycl": {"enabled": True, "weight": 1.0,
                                        "rule": settings.get("rule", "S")}}
        batch = settings.get("batch_size", recipe["train"]["batch_size"])
        config["stages"] = deep_merge(config.get("stages", {}), {"fine": {"train": {
            "iterations": iterations or settings["iterations"], "batch_size": batch}}})
    else:
        arm_spec = experiment["arms"][arm]
        config["methods"] = deep_merge(config.get("methods", {}), arm_spec.get("methods", {}))
        if pretrain_checkpoint is not None:
            config["init_encoder"] = str(pretrain_checkpoint)
        if iterations is not None:  # a timing run: every iteration logged (and timed)
            config["train"]["log_every"] = 1
            stages = config.setdefault("stages", {})
            for stage in recipe["stages"]:
                stages.setdefault(stage, {}).setdefault("train", {})["iterations"] = iterations
    return config


def make_run(experiment: dict[str, Any], arm: str, seed: int, runs_dir: Path, data_root: Path,
             pretrain_dir: Path | None = None, iterations: int | None = None) -> Run:
    """A run of ``arm`` (or ``PRETRAIN``) and ``seed``, its config written to its folder."""
    run_dir = (runs_dir / arm / f"seed{seed}").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = None if pretrain_dir is None else pretrain_dir / "checkpoint"
    config = run_config(experiment, arm, seed, data_root, checkpoint, iterations)
    config_path = run_dir / "run_config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    if arm == PRETRAIN:
        return Run(arm, seed, run_dir, config_path, ("fine",), evaluate=False)
    return Run(arm, seed, run_dir, config_path)


def plan(experiment: dict[str, Any], runs_dir: Path, data_root: Path,
         seeds: list[int] | None = None, iterations: int | None = None,
         with_pretraining: bool = True) -> list[Run]:
    """Per seed: the PolyCL pre-training (when an arm needs it), then every arm.
    ``with_pretraining=False``: no pre-training, no encoder initialisation (timing only)."""
    runs: list[Run] = []
    for seed in experiment["seeds"] if seeds is None else seeds:
        pretrain = None
        needs = any(arm.get("pretrain") for arm in experiment["arms"].values())
        if with_pretraining and needs:
            pretrain = make_run(experiment, PRETRAIN, seed, runs_dir, data_root,
                                iterations=iterations)
            runs.append(pretrain)
        runs += [make_run(experiment, arm, seed, runs_dir, data_root,
                          pretrain.run_dir if pretrain and spec.get("pretrain") else None,
                          iterations)
                 for arm, spec in experiment["arms"].items()]
    return runs


def _fit(run: Run) -> float | None:
    """Train ``run`` unless its checkpoint is complete (then ``None``); seconds spent building
    the datasets (the timing mode subtracts them)."""
    from ..checkpoint import load_checkpoint
    from ..data.stage_data import default_dataset_factory
    from ..trainer import fit

    checkpoint = run.run_dir / "checkpoint"
    if checkpoint.is_dir():
        done = load_checkpoint(checkpoint).progress.get("completed", [])
        config = load_config(run.config_path)
        if set(run.stages or config["stages"]) <= set(done):
            return None
    config = load_config(run.config_path)
    if run.stages:
        config["stages"] = {n: s for n, s in config["stages"].items() if n in run.stages}
    setup = {"seconds": 0.0}

    def timed_factory(stage_name: str, stage: dict[str, Any], seed: int):
        started = time.time()
        dataset = default_dataset_factory(stage_name, stage, seed)
        setup["seconds"] += time.time() - started
        return dataset

    fit(config, run.run_dir, dataset_factory=timed_factory, show_progress=False)
    return setup["seconds"]


def evaluate_run(run: Run, targets: list[Target], target_folder: Path,
                 settings: dict[str, Any]) -> int:
    """Score the run's checkpoint on every target; one row per slice and region in
    ``evaluation/cases.csv``, one per slice in ``calibration.csv``. Returns slices scored."""
    from pancreas_ssl_seg.inference import select_device

    from ..evaluation.evaluate import evaluate_case, load_model
    from ..evaluation.metrics import DEFAULT_SURFACE_TOLERANCE_MM
    from ..evaluation.tables import write_csv

    model = load_model(run.run_dir / "checkpoint")
    model.tta_flip = bool(settings.get("tta_flip", True))
    device = select_device(settings.get("device", "auto"))
    tolerance = float(settings.get("surface_tolerance_mm", DEFAULT_SURFACE_TOLERANCE_MM))
    threshold = float(settings.get("uncertainty_threshold",
                                   model.bundle.inference["uncertainty_threshold"]))
    cases, calibration = [], []
    for target in targets:
        extra = {"method": run.arm, "seed": run.seed, "target": target.name, "kind": target.kind,
                 "corruption": target.corruption, "severity": target.severity}
        for info, image, labels in target_cases(target, target_folder):
            rows, scores = evaluate_case(model, image, labels, tolerance, threshold, device)
            cases += [{**extra, **info, **row} for row in rows]
            calibration.append({**extra, **info, **scores})
    out = run.run_dir / "evaluation"
    write_csv(calibration, out / "calibration.csv")
    write_csv(cases, out / ".cases.partial.csv").replace(out / "cases.csv")  # written last
    return len(calibration)


def run_job(run: Run, targets: list[Target], target_folder: Path, settings: dict[str, Any],
            threads: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(max(1, threads))
    record: dict[str, Any] = {"arm": run.arm, "seed": run.seed, "run_dir": str(run.run_dir)}
    started = time.time()
    setup = _fit(run)
    times = run.run_dir / RUN_TIMES
    if setup is None:  # finished before (an interrupted or gated experiment continued)
        record["resumed"] = True
        if times.is_file():
            record.update(json.loads(times.read_text(encoding="utf-8")))
    else:
        record["setup_seconds"] = round(setup, 1)
        record["train_seconds"] = round(time.time() - started, 1)
        times.write_text(json.dumps({k: record[k] for k in ("setup_seconds", "train_seconds")})
                         + "\n", encoding="utf-8")
    if run.evaluate and not (run.run_dir / "evaluation" / "cases.csv").is_file():
        started = time.time()
        record["slices_scored"] = evaluate_run(run, targets, target_folder, settings)
        record["eval_seconds"] = round(time.time() - started, 1)
    return record


def execute(runs: list[Run], jobs: int, targets: list[Target], target_folder: Path,
            settings: dict[str, Any], threads: int) -> list[dict[str, Any]]:
    """Every run, ``jobs`` processes at a time; a run with a pre-trained encoder waits for its
    seed's pre-training."""
    args = (targets, target_folder, settings, threads)
    if jobs == 1:  # in this process, in order: pre-training comes first
        return [run_job(run, *args) for run in runs]
    waits = {run: PRETRAIN for run in runs if run.arm != PRETRAIN and _pretrained(run)}
    records = []
    context = multiprocessing.get_context("spawn")  # no forked torch thread pools
    with futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        pending = {pool.submit(run_job, run, *args): run for run in runs if run not in waits}
        finished: set[int] = set()
        while pending:
            done, _ = futures.wait(pending, return_when=futures.FIRST_COMPLETED)
            for future in done:
                run = pending.pop(future)
                records.append(future.result())
                print(f"[{time.strftime('%H:%M:%S')}] done {run.arm} seed {run.seed}: "
                      f"{records[-1]}", flush=True)
                if run.arm == PRETRAIN:
                    finished.add(run.seed)
            for run in [r for r in waits if r.seed in finished]:
                del waits[run]
                pending[pool.submit(run_job, run, *args)] = run
    return records


def _pretrained(run: Run) -> bool:
    return "init_encoder" in yaml.safe_load(run.config_path.read_text(encoding="utf-8"))


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def prepare_targets(experiment: dict[str, Any], runs_dir: Path, data_root: Path,
                    slices_per_patient: int | None) -> tuple[list[Target], Path, list[dict]]:
    recipe = load_config(experiment["recipe"])
    targets = experiment_targets(experiment, recipe, data_root)
    folder = runs_dir / "targets"
    timings = []
    for target in targets:
        prepare_target(target, folder, slices_per_patient)
        record = target_record(target, folder)  # seconds of the preparation, even if earlier
        timings.append({"target": target.name, "seconds": record["prepare_seconds"],
                        "slices": len(record["cases"])})
    return targets, folder, timings


def run_experiment(config_path: Path, runs_dir: Path, results_dir: Path,
                   data_root: Path = DEFAULT_DATA_ROOT, jobs: int | None = None,
                   aggregate_only: bool = False) -> dict[str, Any]:
    """The whole experiment (see the module docstring); returns the stop-rule status."""
    from .report import stop_rule_status, write_report

    started = time.time()
    experiment = load_experiment(config_path)
    data_root = data_root.resolve()
    jobs = jobs or experiment["jobs"]
    runs_dir, results_dir = runs_dir.resolve(), results_dir.resolve()
    targets, folder, target_timings = prepare_targets(
        experiment, runs_dir, data_root, experiment["targets"].get("slices_per_patient"))
    runs = plan(experiment, runs_dir, data_root)
    settings, threads = experiment["evaluation"], experiment["threads"]
    gate_arm = experiment["stop_rule"]["arm"]
    first = [r for r in runs if r.arm == gate_arm]
    records = [] if aggregate_only else execute(first, jobs, targets, folder, settings, threads)
    status = stop_rule_status([r.run_dir for r in first], experiment["stop_rule"])
    if status["passed"] and not aggregate_only:
        records += execute([r for r in runs if r.arm != gate_arm], jobs, targets, folder,
                           settings, threads)
    run_info = None if aggregate_only else {
        "argv": sys.argv, "config": str(config_path), "experiment": experiment,
        "data_root": str(data_root), "jobs": jobs, "git_commit": _git_commit(),
        "wall_seconds": round(time.time() - started, 1), "target_preparation": target_timings,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average": list(os.getloadavg())}}
    write_report(experiment, runs, targets, results_dir, records, run_info, status)
    return status
