"""The ``pancreas-ssl-seg`` argument parser: its commands, options and their checks."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import __version__
from .cli_exit import EXIT_CODES_HELP
from .cli_models import run_info, run_models
from .cli_segment import run_segment, run_summary
from .devices import DEVICE_CHOICES
from .progress import PROGRESS_KINDS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pancreas-ssl-seg", epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Segment the pancreas and pancreatic lesions in CT, with voxel uncertainty.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    segment = commands.add_parser(
        "segment", epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
        help="segment CT volumes", description=(
            "Segment each INPUT (a .nii/.nii.gz/.nrrd/.mha/.mhd file, a DICOM series folder, or a "
            "folder of those) and write <case>_labels.nii.gz, <case>_uncertainty.nii.gz, "
            "<case>_regions.nii.gz, <case>.seg.nrrd, <case>_report.json and <case>_preview.png "
            "into OUTDIR; for a DICOM series also <case>_seg.dcm (DICOM SEG referencing it)."))
    segment.add_argument("inputs", nargs="+", metavar="INPUT")
    segment.add_argument("-o", "--output", required=True, type=Path, metavar="OUTDIR")
    segment.add_argument("--model", metavar="BUNDLE",
                         help="model bundle folder, or the name of an installed model (see "
                              "`models`; default: the shipped model)")
    segment.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    segment.add_argument("--fast", action="store_true",
                         help="fewer test-time augmentations: faster, rougher uncertainty")
    segment.add_argument("--no-uncertainty", dest="uncertainty", action="store_false",
                         help="skip the uncertainty estimate (its outputs are then all zero)")
    segment.add_argument("--uncertainty-threshold", type=_fraction, metavar="X",
                         help="uncertainty (0..1) above which voxels form review regions "
                              "(default: the bundle's)")
    segment.add_argument("--progress", choices=PROGRESS_KINDS,
                         help="bar (default on a terminal), json lines on stdout, or none")
    segment.add_argument("--overwrite", action="store_true",
                         help="segment again cases whose outputs already exist")
    segment.add_argument("--num-parts", type=_positive_int, default=1, metavar="N",
                         help="split the cases into N parts (by sorted case name) and segment only "
                              "part --part-id: run N processes (a job array, one per GPU) with the "
                              "same INPUTs and OUTDIR to cover a cohort")
    segment.add_argument("--part-id", type=_non_negative_int, default=0, metavar="I",
                         help="which part to segment, 0 .. N-1 (default 0)")
    segment.set_defaults(handler=run_segment)

    summary = commands.add_parser(
        "summary", help="(re)build summary.csv/json from the reports in an output folder",
        epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Write OUTDIR/summary.csv and summary.json from every <case>_report.json in OUTDIR "
            "(and the failed cases its earlier summaries list that still have no report): one "
            "row per case, the cases to check first. Run it after the parts of a --num-parts "
            "run have finished to merge them."))
    summary.add_argument("folder", type=Path, metavar="OUTDIR")
    summary.set_defaults(handler=run_summary)

    info = commands.add_parser("info", help="describe a model bundle",
                               epilog=EXIT_CODES_HELP,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    info.add_argument("--model", metavar="BUNDLE",
                      help="model bundle folder or installed model name (default: the shipped "
                           "model)")
    info.set_defaults(handler=run_info)

    models = commands.add_parser(
        "models", help="list the installed model bundles",
        formatter_class=argparse.RawDescriptionHelpFormatter, description=(
            "List the model bundles installed in the user's models folders "
            "($PANCREAS_SSL_SEG_MODELS, several separated by the path separator, else "
            "~/.pancreas-ssl-seg/models) and the "
            "shipped ones, with name, version, licence, stages and measured figures. Install a "
            "bundle by copying its folder there; select it with --model NAME (or NAME@VERSION)."))
    models.add_argument("--json", action="store_true", help="one JSON list on stdout")
    models.add_argument("--validate", action="store_true",
                        help="also load each bundle (weights' SHA-256, tensor names and shapes)")
    models.set_defaults(handler=run_models)
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not 0 or more")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not in (0, 1]")
    return value
