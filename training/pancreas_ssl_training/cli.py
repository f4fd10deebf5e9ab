"""``pancreas-ssl-train``: fit, pretrain (PolyCL), evaluate, export, finetune and experiment.

Exit codes as the engine's CLI: 0 ok, 2 bad config / data / checkpoint / bundle (one line on
stderr naming the file), 1 unexpected error.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from pancreas_ssl_seg.bundle_format import STAGES
from pancreas_ssl_seg.console import use_utf8_output
from pancreas_ssl_seg.errors import PancreasSSLSegError

from .config import ConfigError, enabled_methods, load_config

PRETRAIN_METHOD = "polycl"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pancreas-ssl-train", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("fit", "train the config's stages (segmentation + enabled SSL methods)"),
                       ("pretrain", "PolyCL contrastive encoder pre-training (init_encoder)")):
        command = commands.add_parser(name, help=text)
        command.add_argument("--config", required=True, type=Path, help="YAML config")
        command.add_argument("--out", required=True, type=Path, help="run folder")
        command.add_argument("--resume", action="store_true",
                             help="continue from OUT/checkpoint if it exists")
        command.add_argument("--threads", type=int, default=None,
                             help="CPU threads for torch (default: config train.threads, "
                                  "0 = torch's choice)")
        command.add_argument("--quiet", action="store_true", help="no progress bar")
        command.add_argument("--stage", action="append", choices=STAGES, default=None,
                             help="train only this stage (repeatable); e.g. the coarse and fine "
                                  "stages as two processes, joined by `export --checkpoint A "
                                  "--checkpoint B`")
    evaluate = commands.add_parser("evaluate", help="metrics of a bundle or checkpoint on data")
    evaluate.add_argument("--model", required=True, type=Path, help="bundle or checkpoint folder")
    evaluate.add_argument("--data", required=True, type=Path, help="data spec (YAML)")
    evaluate.add_argument("--out", required=True, type=Path, help="output folder")
    export = commands.add_parser("export", help="write a model bundle from a checkpoint")
    export.add_argument("--checkpoint", required=True, type=Path, action="append",
                        help="checkpoint folder (or bundle folder); repeat to take each stage "
                             "from the first that trained it")
    export.add_argument("--out", required=True, type=Path, help="bundle folder to create")
    export.add_argument("--config", type=Path, default=None,
                        help="take the export section (name, version, card, inference "
                             "settings) from this config instead of the training run's")
    export.add_argument("--metrics", type=Path, default=None,
                        help="JSON file of measured metrics to record in the bundle")
    ensemble = commands.add_parser(
        "ensemble", help="join bundles into one whose stages average their networks "
                         "(Accurate mode; Fast mode runs the first bundle's)")
    ensemble.add_argument("--bundle", required=True, type=Path, action="append",
                          help="bundle folder; repeat (at least two, same networks and inputs)")
    ensemble.add_argument("--out", required=True, type=Path, help="bundle folder to create")
    ensemble.add_argument("--stage", action="append", choices=STAGES, default=None,
                          help="join only this stage (repeatable; default: every stage); the "
                               "others keep the first bundle's networks")
    ensemble.add_argument("--config", type=Path, default=None,
                          help="take the export section (name, version, card, inference "
                               "settings) from this config instead of the first bundle's")
    ensemble.add_argument("--metrics", type=Path, default=None,
                          help="JSON file of measured metrics to record in the bundle")
    finetune = commands.add_parser(
        "finetune", help="fine-tune a bundle's fine stage on a corrections folder into a new "
                         "bundle (validated on a held-out part of the corrections)")
    finetune.add_argument("--model", required=True, type=Path, help="bundle to start from")
    finetune.add_argument("--data", required=True, type=Path,
                          help="corrections folder (the module's Export corrected case)")
    finetune.add_argument("--out", required=True, type=Path, help="bundle folder to create")
    finetune.add_argument("--iterations", type=int, default=None,
                          help="training iterations (default 300)")
    finetune.add_argument("--validation-fraction", type=float, default=0.25,
                          help="share of the cases held out to validate (default 0.25)")
    finetune.add_argument("--replay", type=Path, default=None,
                          help="training config whose data to replay alongside the corrections "
                               "(e.g. the parent's; without it the model forgets the rest)")
    finetune.add_argument("--threads", type=int, default=0, help="CPU threads for torch")
    finetune.add_argument("--quiet", action="store_true", help="no progress bar")
    experiment = commands.add_parser(
        "experiment", help="train every arm x seed of an experiment config, score every target, "
                           "write the report (training/experiments/*.yaml)")
    experiment.add_argument("--config", required=True, type=Path, help="experiment YAML")
    experiment.add_argument("--runs", required=True, type=Path, help="folder for the runs")
    experiment.add_argument("--results", required=True, type=Path, help="folder for the report")
    experiment.add_argument("--data-root", type=Path, default=None,
                            help="folder holding nih-pancreas-slices-hu and -8bit "
                                 "(default: ../shared/data beside the checkout)")
    experiment.add_argument("--jobs", type=int, default=None,
                            help="runs at a time (default: the config's jobs)")
    experiment.add_argument("--aggregate-only", action="store_true",
                            help="only rebuild the report from finished runs")
    experiment.add_argument("--timing", type=int, default=None, metavar="N",
                            help="train each arm's stages N iterations, score one slice per "
                                 "patient, and write the full run's cost estimate instead")
    return parser


def _experiment(args: argparse.Namespace) -> int:
    from .experiment.runner import DEFAULT_DATA_ROOT, run_experiment
    from .experiment.timing import run_timing

    data_root = args.data_root or DEFAULT_DATA_ROOT
    if args.timing is not None:
        estimate = run_timing(args.config, args.runs, args.results, args.timing, data_root,
                              args.jobs or 1)
        print(json.dumps(estimate, indent=1))
        return 0
    status = run_experiment(args.config, args.runs, args.results, data_root, args.jobs,
                            args.aggregate_only)
    print(f"stop rule: {status['arm']} Dice on {status['target']} = {status['dice']:.3f} "
          f"(needs >= {status['min_dice']}): {'passed' if status['passed'] else 'NOT passed'}")
    print(f"report: {args.results}")
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from .finetune import DEFAULT_ITERATIONS, finetune

    if args.threads:
        torch.set_num_threads(args.threads)
    record = finetune(args.model, args.data, args.out,
                      iterations=args.iterations or DEFAULT_ITERATIONS,
                      validation_fraction=args.validation_fraction, replay=args.replay,
                      show_progress=not args.quiet)
    print(f"bundle: {args.out}")
    print(f"validation Dice ({len(record['validation_cases'])} cases): parent "
          f"{record['validation_dice_parent']}, fine-tuned {record['validation_dice_finetuned']}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from .trainer import fit

    config = load_config(args.config)
    if args.command == "pretrain" and PRETRAIN_METHOD not in enabled_methods(config):
        raise ConfigError(f"config {args.config}: pretrain needs methods.{PRETRAIN_METHOD} enabled")
    if args.stage:
        missing = sorted(set(args.stage) - set(config["stages"]))
        if missing:
            raise ConfigError(f"config {args.config}: has no stage {missing}")
        config["stages"] = {n: s for n, s in config["stages"].items() if n in args.stage}
    threads = config["train"]["threads"] if args.threads is None else args.threads
    if threads:
        torch.set_num_threads(threads)
    trainer = fit(config, args.out, resume=args.resume, show_progress=not args.quiet)
    if trainer.context.is_main:
        print(f"checkpoint: {trainer.checkpoint_path}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluation import run_evaluation

    result = run_evaluation(args.model, args.data, args.out)
    print(f"evaluation written to {args.out}" if result is None else result)
    return 0


def _metrics_and_settings(args: argparse.Namespace) -> tuple[dict | None, dict | None]:
    """(``--metrics`` JSON, ``--config``'s export section), each ``None`` when not given."""
    metrics = None
    if args.metrics is not None:
        try:
            metrics = json.loads(args.metrics.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"metrics {args.metrics}: expected a readable JSON file ({exc})") \
                from None
    return metrics, None if args.config is None else load_config(args.config)["export"]


def _export(args: argparse.Namespace) -> int:
    from .export import export_bundle

    metrics, settings = _metrics_and_settings(args)
    bundle = export_bundle(args.checkpoint, args.out, metrics=metrics, export_settings=settings)
    print(f"bundle: {bundle}")
    return 0


def _ensemble(args: argparse.Namespace) -> int:
    from .ensemble import ensemble_bundle

    metrics, settings = _metrics_and_settings(args)
    bundle = ensemble_bundle(args.bundle, args.out, stages=args.stage or STAGES,
                             metrics=metrics, export_settings=settings)
    print(f"bundle: {bundle}")
    return 0


def main(argv: list[str] | None = None) -> int:
    use_utf8_output()
    args = _parser().parse_args(argv)
    handlers = {"fit": _train, "pretrain": _train, "evaluate": _evaluate, "export": _export,
                "ensemble": _ensemble, "finetune": _finetune, "experiment": _experiment}
    try:
        return handlers[args.command](args)
    except (PancreasSSLSegError, FileExistsError) as exc:
        print(f"pancreas-ssl-train {args.command}: {exc}", file=sys.stderr)
        return 2
    finally:
        from .distributed import teardown_distributed

        teardown_distributed()


if __name__ == "__main__":
    sys.exit(main())
