"""The single-source domain-shift experiment of issue 3, in 2-D, on the data we have.

Train on the 15 Hounsfield-unit NIH slices (one source, patients 0001–0003); test on the 8-bit NIH
slices of other patients, fed to the network as they are (grey levels taken for HU: the unknown
display mapping is the domain shift). Tune only on patients 0004–0030 (``--split tune``); report
once on patients 0031–0050 (``--split report``).

Arms: ``baseline`` (supervised Dice + cross-entropy), each method alone on top of it
(``dual_task``, ``view_consistency``, ``structure_contrastive``, ``restoration``, and ``polycl`` =
PolyCL encoder pre-training, then supervised fine-tuning), and ``dual_ssl`` (PolyCL pre-training,
then fine-tuning with the other four on). PolyCL pre-trains on the HU slices plus the 8-bit slices
of the tuning patients with their labels removed (never the report patients), with PolyCL's
same-scan rule ``S`` (unlabelled slices have no organ presence for rules ``O``/``M``). Every arm starts
from the method's own config in ``training/configs/`` and gets the same experiment sizing
(``PRESETS``), seed by seed.

Each run goes through the trainer (``pancreas_ssl_training.trainer.fit``) and is scored with
``evaluation.run_evaluation``. Results (in ``--results``): ``domain_shift_<split>.md`` (mean ± sd
over seeds of the per-seed mean, and pooled over cases), ``…_summary.csv``, ``…_cases.csv``,
``…_calibration.csv``, ``…_runs.csv`` (timings), box plots ``…_dice.png`` / ``…_hd95_mm.png``.
A reference row, ``baseline_8bit_to_hu``, scores the baseline's checkpoints again with the 8-bit
slices mapped to HU by the fit on patients 0001–0003 (``data.intensity_mapping``); it trains
nothing and is not one of the compared arms.

    python training/experiments/domain_shift.py --split report --seeds 0 1 2 --jobs 2 \
        --runs runs/domain_shift --results training/results
"""

from __future__ import annotations

import argparse
import concurrent.futures as futures
import dataclasses
import json
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from PancreasSSLSegLib.cli import use_utf8_output

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO_ROOT / "training" / "configs"
DEFAULT_DATA_ROOT = REPO_ROOT.parent / "shared" / "data"
SPLITS = {"tune": (4, 30), "report": (31, 50)}
METHODS = ("baseline", "dual_task", "view_consistency", "structure_contrastive", "restoration",
           "polycl", "dual_ssl")
PRETRAINED = {"polycl", "dual_ssl"}  # arms fine-tuned from a PolyCL-pretrained encoder
# Config each arm extends (polycl = baseline fine-tuned from the pre-trained encoder).
ARM_CONFIG = {**{m: f"{m}.yaml" for m in METHODS}, "polycl": "baseline.yaml"}
PRETRAIN_CONFIG = "polycl_pretrain.yaml"
MAPPED_REFERENCE = "baseline_8bit_to_hu"
METRICS = ("dice", "hd95_mm", "surface_dice")
CALIBRATION = ("ece_pancreas", "error_uncertainty_dice")

# Experiment sizing laid over every arm's config. "full": all arms x 3 seeds fit the CPU budget of
# the session that ran it (see training/results/README.md); "tiny": the smoke test.
PRESETS: dict[str, dict[str, Any]] = {
    "full": {"network": {"channels": [8, 16, 32, 64], "strides": [2, 2, 2],
                         "projection_dim": 32},
             "train": {"iterations": 100, "batch_size": 8},
             "pretrain_iterations": 60,
             "stage": {"spacing_mm": [2.5, 2.5, 2.5], "patch_size": [64, 64]},
             "evaluation": {"tta_flip": False}},
    "tiny": {"network": {"channels": [8, 16, 32], "strides": [2, 2], "projection_dim": 16},
             "train": {"iterations": 3, "batch_size": 2},
             "pretrain_iterations": 2,
             "stage": {"spacing_mm": [6.0, 6.0, 6.0], "patch_size": [64, 64]},
             "evaluation": {"tta_flip": False}},
}


@dataclasses.dataclass(frozen=True)
class Job:
    """One training run and, for fine-tuning arms, its evaluation."""

    arm: str  # a METHODS entry, or "pretrain"
    seed: int
    run_dir: Path
    config_path: Path
    eval_spec: dict[str, Any] | None


def patients(split: str) -> list[str]:
    from pancreas_ssl_training.evaluation.protocols import patient_range

    return patient_range(*SPLITS[split])


def run_config(arm: str, seed: int, preset: dict[str, Any], data_root: Path,
               pretrain_checkpoint: Path | None) -> dict[str, Any]:
    """The YAML mapping of one run: the arm's config, extended with the experiment sizing."""
    base = PRETRAIN_CONFIG if arm == "pretrain" else ARM_CONFIG[arm]
    sources: dict[str, Any] = {"nih_hu": str(data_root / "nih-pancreas-slices-hu")}
    if arm == "pretrain":  # unlabelled target-domain images of tuning patients only
        sources["nih_8bit"] = {"path": str(data_root / "nih-pancreas-slices-8bit"),
                               "patients": patients("tune")}
    iterations = preset["pretrain_iterations"] if arm == "pretrain" \
        else preset["train"]["iterations"]
    config: dict[str, Any] = {
        "extends": str(CONFIG_DIR / base), "name": f"domain_shift-{arm}-seed{seed}",
        "data": {"sources": sources},
        "network": dict(preset["network"]),
        "train": {**preset["train"], "iterations": iterations, "seed": seed, "threads": 1,
                  "log_every": 10, "checkpoint_every": iterations},
        "stages": {"fine": dict(preset["stage"])},
    }
    if arm == "pretrain":
        # Rule S (same scan = positive): the unlabelled 8-bit slices have no organ presence, and
        # rules O and M would leave them out. Twice the batch: more same-scan pairs per batch.
        config["methods"] = {"polycl": {"rule": "S"}}
        config["train"]["batch_size"] = 2 * preset["train"]["batch_size"]
    if arm in PRETRAINED:
        config["init_encoder"] = str(pretrain_checkpoint)
        # PolyCL is the pre-training here, not an extra loss term during fine-tuning.
        config["methods"] = {"polycl": {"enabled": False}}
    return config


def eval_spec(split: str, data_root: Path, settings: dict[str, Any],
              limit_patients: int | None = None) -> dict[str, Any]:
    return {"nih_8bit": {"path": str(data_root / "nih-pancreas-slices-8bit"),
                         "patients": patients(split)[:limit_patients]},
            "evaluation": dict(settings)}


def unlabelled_8bit_factory(stage_name: str, stage: dict[str, Any], seed: int):
    """The trainer's slice dataset with the 8-bit slices' labels removed (PolyCL pre-training
    sees those images unlabelled; the HU slices keep theirs for organ presence)."""
    from pancreas_ssl_training.trainer import default_dataset_factory

    dataset = default_dataset_factory(stage_name, stage, seed)
    dataset.samples = [dataclasses.replace(s, label=None) if s.units == "8bit" else s
                       for s in dataset.samples]
    return dataset


def run_job(job: Job) -> dict[str, Any]:
    """Train and evaluate one job; returns timings. A finished checkpoint or evaluation already
    in the run folder is kept, so an interrupted experiment continues where it stopped."""
    import torch

    torch.set_num_threads(1)  # the machine's cores are shared; parallelism comes from --jobs
    from pancreas_ssl_training.checkpoint import load_checkpoint
    from pancreas_ssl_training.config import load_config
    from pancreas_ssl_training.evaluation.evaluate import run_evaluation
    from pancreas_ssl_training.trainer import default_dataset_factory, fit

    record: dict[str, Any] = {"arm": job.arm, "seed": job.seed}
    checkpoint = job.run_dir / "checkpoint"
    started = time.time()
    done = checkpoint.is_dir() and load_checkpoint(checkpoint).progress.get("completed")
    if not done:
        factory = unlabelled_8bit_factory if job.arm == "pretrain" else default_dataset_factory
        fit(load_config(job.config_path), job.run_dir, dataset_factory=factory,
            show_progress=False)
    record["train_seconds"] = round(time.time() - started, 1)
    if job.eval_spec is not None and not (job.run_dir / "evaluation" / "cases.csv").is_file():
        started = time.time()
        run_evaluation(checkpoint, job.eval_spec, job.run_dir / "evaluation",
                       extra_columns={"method": job.arm, "seed": job.seed})
        record["eval_seconds"] = round(time.time() - started, 1)
    return record


def evaluate_mapped_reference(fits: list[Job], data_root: Path) -> list[Job]:
    """The baseline's checkpoints scored once more with the 8-bit slices mapped to HU (fit on
    patients 0001-0003): how much of the gap a known intensity mapping would close. Not an arm."""
    import torch

    torch.set_num_threads(1)
    from pancreas_ssl_training.evaluation.evaluate import run_evaluation

    references = []
    for job in fits:
        if job.arm != "baseline":
            continue
        reference = dataclasses.replace(job, arm=MAPPED_REFERENCE)
        out = job.run_dir / f"evaluation_{MAPPED_REFERENCE}"
        if not (out / "cases.csv").is_file():
            spec = {**job.eval_spec, "grey_to_hu": {"data_root": str(data_root)}}
            run_evaluation(job.run_dir / "checkpoint", spec, out,
                           extra_columns={"method": MAPPED_REFERENCE, "seed": job.seed})
        references.append(reference)
    return references


def evaluation_dir(job: Job) -> Path:
    suffix = f"_{MAPPED_REFERENCE}" if job.arm == MAPPED_REFERENCE else ""
    return job.run_dir / f"evaluation{suffix}"


def plan(args: argparse.Namespace) -> tuple[list[Job], list[Job]]:
    """(pre-training jobs, fine-tuning jobs), with each run's config written to its folder."""
    preset, data_root = PRESETS[args.preset], args.data_root.resolve()
    spec = eval_spec(args.split, data_root, preset["evaluation"], args.limit_patients)
    pretrains, fits = [], []

    def make(arm: str, seed: int, pretrain_dir: Path | None) -> Job:
        run_dir = (args.runs / arm / f"seed{seed}").resolve()
        run_dir.mkdir(parents=True, exist_ok=True)
        config = run_config(arm, seed, preset, data_root,
                            None if pretrain_dir is None else pretrain_dir / "checkpoint")
        config_path = run_dir / "run_config.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        return Job(arm, seed, run_dir, config_path, None if arm == "pretrain" else spec)

    for seed in args.seeds:
        pretrain = None
        if PRETRAINED & set(args.methods):
            pretrain = make("pretrain", seed, None)
            pretrains.append(pretrain)
        fits += [make(arm, seed, pretrain.run_dir if arm in PRETRAINED else None)
                 for arm in args.methods]
    return pretrains, fits


def execute(pretrains: list[Job], fits: list[Job], jobs: int) -> list[dict[str, Any]]:
    """Run everything, ``jobs`` processes at a time; fine-tuning waits for its pre-training."""
    if jobs == 1:  # in this process, in order: pre-training comes first
        return [run_job(job) for job in [*pretrains, *fits]]
    records = []
    context = multiprocessing.get_context("spawn")  # no forked torch thread pools
    with futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        pending = {pool.submit(run_job, job): job for job in pretrains}
        pending.update({pool.submit(run_job, job): job for job in fits
                        if job.arm not in PRETRAINED})
        waiting = [job for job in fits if job.arm in PRETRAINED]
        finished_pretrains: set[int] = set()
        while pending:
            done, _ = futures.wait(pending, return_when=futures.FIRST_COMPLETED)
            for future in done:
                job = pending.pop(future)
                records.append(future.result())
                print(f"[{time.strftime('%H:%M:%S')}] done {job.arm} seed {job.seed}: "
                      f"{records[-1]}", flush=True)
                if job.arm == "pretrain":
                    finished_pretrains.add(job.seed)
            ready = [job for job in waiting if job.seed in finished_pretrains]
            for job in ready:
                waiting.remove(job)
                pending[pool.submit(run_job, job)] = job
    return records


def aggregate(fits: list[Job], records: list[dict[str, Any]] | None, split: str, results: Path,
              order: list[str]) -> str:
    """Collect every run's per-case files into the experiment's tables and plots."""
    from pancreas_ssl_training.evaluation.plots import box_plot
    from pancreas_ssl_training.evaluation.tables import (markdown_table, read_csv, summarize,
                                                         write_csv)

    cases, calibration = [], []
    # An interrupted experiment is aggregated from the runs that finished; the table names the rest.
    missing = [f"{job.arm} seed {job.seed}" for job in fits
               if not (evaluation_dir(job) / "cases.csv").is_file()]
    for job in fits:
        if f"{job.arm} seed {job.seed}" in missing:
            continue
        cases += read_csv(evaluation_dir(job) / "cases.csv")
        calibration += read_csv(evaluation_dir(job) / "calibration.csv")
    prefix = results / f"domain_shift_{split}"
    write_csv(cases, f"{prefix}_cases.csv")
    write_csv(calibration, f"{prefix}_calibration.csv")
    if records is not None:  # --aggregate-only keeps the timings the run itself wrote
        write_csv(records, f"{prefix}_runs.csv")
    pancreas = [row for row in cases if row["region"] == "pancreas"]
    for row in pancreas:  # < 1: the model under-segments, > 1: over-segments
        row["area_ratio"] = int(row["pred_voxels"]) / max(1, int(row["true_voxels"]))
    lesion_fp = [row for row in cases if row["region"] == "lesion"]

    # Per seed: mean over cases; then mean ± sd over seeds (the spread a rerun would show).
    per_seed = summarize(pancreas, ("method", "seed"), (*METRICS, "area_ratio"))
    per_seed_cal = summarize(calibration, ("method", "seed"), CALIBRATION)
    seed_rows = [{**a, **{k: v for k, v in b.items() if k.endswith("_mean")}}
                 for a, b in zip(per_seed, per_seed_cal)]
    baseline = {row["seed"]: row["dice_mean"] for row in seed_rows if row["method"] == "baseline"}
    for row in seed_rows:
        row["dice_minus_baseline"] = row["dice_mean"] - baseline.get(row["seed"], np.nan)
        row["lesion_fp_slices"] = sum(1 for r in lesion_fp if r["method"] == row["method"]
                                      and r["seed"] == row["seed"] and int(r["pred_voxels"]) > 0)
    over_seeds_metrics = [f"{m}_mean" for m in (*METRICS, "area_ratio", *CALIBRATION)] + \
        ["dice_minus_baseline", "lesion_fp_slices"]
    over_seeds = summarize(seed_rows, ("method",), over_seeds_metrics)
    over_seeds.sort(key=lambda row: order.index(row["method"]))
    pooled = summarize(pancreas, ("method",), (*METRICS, "area_ratio"))
    pooled.sort(key=lambda row: order.index(row["method"]))
    write_csv(seed_rows, f"{prefix}_per_seed.csv")
    write_csv(over_seeds, f"{prefix}_summary.csv")

    n_cases = len({row["case"] for row in pancreas})
    n_seeds = len({row["seed"] for row in pancreas})
    digits = {"hd95_mm_mean": 1, "hd95_mm": 1, "lesion_fp_slices": 1}
    text = [f"# Domain shift, split `{split}`: NIH HU slices → 8-bit slices of patients "
            f"{SPLITS[split][0]:04d}–{SPLITS[split][1]:04d}", "",
            f"{n_cases} slices, up to {n_seeds} seeds per arm. Pancreas region (labels 1 + 2).",
            f"Runs not finished: {', '.join(missing)}." if missing else "Every run finished.", "",
            "## Mean ± sd over seeds of each seed's mean over slices", "",
            "`n` = seeds. `area_ratio`: predicted / true pancreas area of a slice (< 1 under-, "
            "> 1 over-segmentation). `ece_pancreas`: expected calibration error of the pancreas "
            "probability; `error_uncertainty_dice`: Dice of the error mask and the entropy > "
            "threshold mask. `dice_minus_baseline`: per-seed Dice minus the baseline's Dice of the "
            "same seed. `lesion_fp_slices`: slices where a lesion was predicted (none exists).", "",
            markdown_table(over_seeds, ("method",), over_seeds_metrics, digits), "",
            "## Pooled over slices and seeds (mean ± sd over slices)", "",
            markdown_table(pooled, ("method",), (*METRICS, "area_ratio"), digits)]
    (results / f"domain_shift_{split}.md").write_text("\n".join(text), encoding="utf-8")
    for metric, label in (("dice", "Pancreas Dice"), ("hd95_mm", "Pancreas HD95 (mm)")):
        box_plot(pancreas, metric, "method", f"{prefix}_{metric}.png", order=order,
                 title=f"{label}, 8-bit NIH patients {SPLITS[split][0]:04d}–"
                       f"{SPLITS[split][1]:04d} (all seeds)", ylabel=label)
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    use_utf8_output()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", choices=sorted(SPLITS), required=True,
                        help="tune: patients 0004-0030; report: 0031-0050 (run once)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="full")
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel (1 thread each)")
    parser.add_argument("--runs", type=Path, required=True, help="folder for the training runs")
    parser.add_argument("--results", type=Path, required=True, help="folder for the tables")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA_ROOT,
                        help="folder holding nih-pancreas-slices-hu and -8bit")
    parser.add_argument("--limit-patients", type=int, default=None,
                        help="evaluate only the split's first N patients (smoke tests)")
    parser.add_argument("--aggregate-only", action="store_true",
                        help="only rebuild the tables and plots from finished runs")
    parser.add_argument("--no-mapped-reference", action="store_true",
                        help=f"skip {MAPPED_REFERENCE}: the baseline scored on 8-bit slices "
                             "mapped to HU")
    args = parser.parse_args(argv)
    started = time.time()
    pretrains, fits = plan(args)
    records = None if args.aggregate_only else execute(pretrains, fits, args.jobs)
    args.results.mkdir(parents=True, exist_ok=True)
    order = [m for m in METHODS if m in args.methods]
    if "baseline" in args.methods and not args.no_mapped_reference:
        fits += evaluate_mapped_reference(fits, args.data_root.resolve())
        order.append(MAPPED_REFERENCE)
    print(aggregate(fits, records, args.split, args.results, order))
    if args.aggregate_only:
        return 0
    wall = round(time.time() - started, 1)
    (args.results / f"domain_shift_{args.split}_run.json").write_text(json.dumps(
        {"argv": sys.argv, "preset": PRESETS[args.preset], "wall_seconds": wall}, indent=2) + "\n",
        encoding="utf-8")
    print(f"wall time {wall} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
