"""``pancreas-ssl-seg``: segment CT files and DICOM folders in batch, or describe a model bundle.

Each failing case prints one line ``error: <file>: <problem>`` on stderr and the batch goes on;
finished cases (all six outputs present) are skipped unless ``--overwrite``, so a stopped batch
resumes where it was. A run that finished any case ends with one line counting the cases per run
status and per quality verdict (stdout; in ``--progress json`` the done line's ``quality``), and
a batch writes ``summary.csv``/``.json`` (:mod:`.batch_summary`); ``summary OUTDIR`` rebuilds them
from a folder's reports. Exit codes are in :data:`EXIT_CODES_HELP`.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__, batch_summary
from .console import use_utf8_output
from .errors import BundleError, DeviceError, PancreasSSLSegError
from .image_io import case_name, dicom_series_ids, is_image_file
from .outputs import DICOM_SEG_KEY, case_is_complete, write_case_outputs
from .progress import PROGRESS_KINDS, default_progress_kind, make_progress

if TYPE_CHECKING:
    from .bundle import ModelBundle

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
EXIT_CODES_HELP = """exit codes:
  0  every case was segmented (or skipped because its outputs already exist)
  1  some cases failed while others succeeded, an unexpected error occurred, or the run was
     interrupted (Ctrl-C, SIGTERM: finished cases are kept, running it again resumes)
  2  nothing was segmented because of bad input, a bad model bundle, an unavailable device or
     bad arguments (every case failed with such an error, or the run was refused before any case)
"""
# Errors that would repeat for every case: stop the batch at the first one.
RUN_FATAL_ERRORS = (BundleError, DeviceError)
INTERRUPTED = ("interrupted: finished cases keep their six outputs, the case in progress left "
               "nothing; run the same command again to resume")


@dataclass(frozen=True)
class Case:
    """One input to segment: a file or a DICOM folder, and the name its outputs get."""

    path: Path
    name: str


def expand_inputs(inputs: list[str]) -> list[Case]:
    """Files and DICOM folders are cases; other folders contribute their image files and DICOM
    subfolders (one level). A path that is none of these stays a case, so that reading it
    reports the problem."""
    paths: list[Path] = []
    for given in map(Path, inputs):
        if given.is_dir() and not dicom_series_ids(given):
            try:
                children = sorted(given.iterdir())
            except OSError:  # unreadable folder: reading it as an input says why, per case
                children = []
            found = [child for child in children
                     if is_image_file(child) or (child.is_dir() and dicom_series_ids(child))]
            paths.extend(found or [given])
        else:
            paths.append(given)
    return [Case(path, case_name(path)) for path in paths]


def select_part(cases: list[Case], num_parts: int, part_id: int) -> list[Case]:
    """The cases of part ``part_id`` (0-based) of ``num_parts``: the distinct case names, sorted,
    are dealt out in turn (name i → part i mod ``num_parts``), and each case goes with its name.

    Deterministic for a given set of inputs whatever their order, so processes started with the
    same INPUTs and different part ids (a Slurm job array, one process per GPU) cover every case
    once with no coordinator; cases sharing a name stay in one part, where the second is refused
    as today, so two parts never write the same output files."""
    names = sorted({case.name for case in cases})
    mine = {name for index, name in enumerate(names) if index % num_parts == part_id}
    return [case for case in cases if case.name in mine]


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
    segment.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
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
            "List the model bundles installed in the user's models folders ($PANCREAS_SSL_SEG_MODELS, "
            "several separated by the path separator, else ~/.pancreas-ssl-seg/models) and the "
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


def main(argv: list[str] | None = None) -> int:
    use_utf8_output()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "segment" and args.part_id >= args.num_parts:
        parser.error(f"--part-id {args.part_id} is not below --num-parts {args.num_parts} "
                     "(parts are numbered 0 .. N-1)")  # exit 2
    try:
        with _sigterm_as_interrupt():
            return args.handler(args)
    except KeyboardInterrupt:
        print(f"error: {INTERRUPTED}", file=sys.stderr)
        return EXIT_FAILED
    except PancreasSSLSegError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as error:  # noqa: BLE001 — the CLI's promise: one line, never a traceback
        print(f"error: unexpected {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_FAILED


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a job scheduler) stops the run as Ctrl-C does: the case being written
    removes its temporaries on the way out and the run ends with one line, not a silent death."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_segment(args: argparse.Namespace) -> int:
    kind = args.progress or default_progress_kind()
    # Run-level lines exist only in JSON; bars are per case.
    run_progress = make_progress("json" if kind == "json" else "none")
    try:
        code, summary, line = _segment_cases(args, kind)
    except PancreasSSLSegError as error:
        run_progress.finish("error", message=str(error))
        raise
    except Exception as error:
        run_progress.finish("error", message=f"unexpected {type(error).__name__}: {error}")
        raise
    except KeyboardInterrupt:
        run_progress.finish("error", message=INTERRUPTED)
        raise
    run_progress.finish("ok" if code == EXIT_OK else "error", **summary)
    if line is not None and kind != "json":
        print(line, flush=True)
    return code


def _segment_cases(args: argparse.Namespace, kind: str) -> tuple[int, dict, str | None]:
    """(exit code, the done line's fields, the final line for people or None when no case was
    finished)."""
    cases = expand_inputs(args.inputs)
    given = {Path(path) for path in args.inputs}
    # A batch: several inputs, or a folder that held the cases (a DICOM series folder is one).
    batch = len(args.inputs) > 1 or any(case.path not in given for case in cases)
    if args.num_parts > 1:
        cases = select_part(cases, args.num_parts, args.part_id)
    bundle = _load_bundle(args.model)
    outcomes: list[dict[str, Any]] = []
    seen: dict[str, Path] = {}
    for case in cases:
        if case.name in seen:
            outcome = _failed(case, f"{case.path}: case name '{case.name}' is already used by "
                                    f"{seen[case.name]}; rename one of them")
        elif not args.overwrite and case_is_complete(args.output, case.name):
            outcome = {"case": case.name, "status": "skipped", "path": case.path}
            if kind == "json":
                make_progress(kind, case=case.name)(
                    "skipped", 1.0, f"{case.name}: outputs exist (--overwrite to redo)")
            else:
                print(f"skipped {case.name}: outputs exist in {args.output} "
                      "(--overwrite to segment again)", file=sys.stderr)
        else:
            outcome = _run_case(case, bundle, args, kind)
        seen.setdefault(case.name, case.path)
        outcomes.append(outcome)
    fields = _summary(outcomes)
    fields["quality"] = {status: 0 for status in batch_summary.QUALITY_STATUSES}
    if not any(o["status"] != "error" for o in outcomes):
        return _exit_code(outcomes), fields, None  # nothing finished: the error lines say it all
    rows = [batch_summary.error_row(o["case"], o["message"], o["path"]) if o["status"] == "error"
            else batch_summary.read_row(args.output, o["case"], o["status"]) for o in outcomes]
    fields["quality"] = batch_summary.counts(rows)["quality"]
    written = None
    if batch:
        written = _write_summary(args.output, rows, args.num_parts, args.part_id)
        if written is not None:
            fields["summary"] = str(written)
    return _exit_code(outcomes), fields, batch_summary.counts_line(rows, written)


def _write_summary(out_dir: Path, rows: list[dict], num_parts: int, part_id: int) -> Path | None:
    """The batch's summary files (a part's own names under ``--num-parts``); a folder that
    cannot take them is a warning, the cases' outputs stand."""
    try:
        paths = batch_summary.write_summary(out_dir, rows,
                                            batch_summary.summary_stem(num_parts, part_id))
    except OSError as error:
        print(f"warning: could not write the batch summary in {out_dir}: "
              f"{error.strerror or error}", file=sys.stderr)
        return None
    return paths["csv"]


def _run_case(case: Case, bundle: ModelBundle, args: argparse.Namespace, kind: str) -> dict:
    progress = make_progress(kind, case=case.name)
    try:
        result = _segment(case.path, model=bundle, device=args.device,
                          uncertainty=args.uncertainty, progress=progress, fast=args.fast,
                          uncertainty_threshold=args.uncertainty_threshold)
        result.report["case"] = case.name
        result.report["input"]["path"] = str(case.path)
        try:
            dicom_folder = case.path if case.path.is_dir() else None
            paths = write_case_outputs(result, args.output, case.name, dicom_folder=dicom_folder)
            if dicom_folder is not None and DICOM_SEG_KEY not in paths:
                print(f"warning: {case.name}: {result.report['warnings'][-1]}", file=sys.stderr)
        except OSError as error:  # full disk, read-only or unwritable folder: not a bug
            progress.close("error")
            return _failed(case, f"could not write its outputs in {args.output}: "
                                 f"{error.strerror or error} (nothing of this case was kept)",
                           user_error=False)
    except RUN_FATAL_ERRORS:
        progress.close("error")
        raise
    except PancreasSSLSegError as error:
        progress.close("error")
        return _failed(case, str(error))
    except Exception as error:  # noqa: BLE001 — one bad case must not stop the batch
        progress.close("error")
        return _failed(case, f"unexpected {type(error).__name__}: {error}", user_error=False)
    progress.close("ok")
    return {"case": case.name, "status": "ok", "path": case.path,
            "outputs": {k: str(p) for k, p in paths.items()}}


# torch (seconds to import) is imported only when a command needs it: --help stays instant.
def _load_bundle(model: str | None) -> ModelBundle:
    """``--model``: a bundle folder, an installed model's name, or ``None`` (the shipped one)."""
    from .bundle import load_bundle
    from .catalogue import resolve_model

    return load_bundle(resolve_model(model))


def _segment(image, **options):
    from .pipeline import segment

    return segment(image, **options)


def _failed(case: Case, message: str, user_error: bool = True) -> dict:
    """One failed case: its ``error:`` line on stderr and its outcome; ``user_error`` (bad input)
    counts towards exit code 2."""
    if not (message.startswith(case.path.name) or message.startswith(str(case.path))):
        message = f"{case.path}: {message}"
    print(f"error: {message}", file=sys.stderr)
    return {"case": case.name, "status": "error", "message": message, "user_error": user_error,
            "path": case.path}


def _exit_code(outcomes: list[dict]) -> int:
    failed = [o for o in outcomes if o["status"] == "error"]
    if not failed:
        return EXIT_OK
    if len(failed) == len(outcomes) and all(o["user_error"] for o in failed):
        return EXIT_BAD_INPUT
    return EXIT_FAILED


def _summary(outcomes: list[dict]) -> dict[str, Any]:
    counts = {status: sum(o["status"] == status for o in outcomes)
              for status in ("ok", "error", "skipped")}
    summary: dict[str, Any] = {"cases_ok": counts["ok"], "cases_failed": counts["error"],
                               "cases_skipped": counts["skipped"],
                               "cases": [{k: v for k, v in o.items()
                                          if k not in ("user_error", "path")}
                                         for o in outcomes]}
    failed = [o for o in outcomes if o["status"] == "error"]
    if failed:
        summary["message"] = (failed[0]["message"] if len(outcomes) == 1 else
                              f"{len(failed)} of {len(outcomes)} cases failed; first: "
                              f"{failed[0]['message']}")
    return summary


def run_summary(args: argparse.Namespace) -> int:
    rows = batch_summary.folder_rows(args.folder)  # InputError: exit 2, one line
    try:
        paths = batch_summary.write_summary(args.folder, rows)
    except OSError as error:
        print(f"error: could not write the summary in {args.folder}: {error.strerror or error}",
              file=sys.stderr)
        return EXIT_FAILED
    print(batch_summary.counts_line(rows, paths["csv"]))
    return EXIT_OK


def run_info(args: argparse.Namespace) -> int:
    bundle = _load_bundle(args.model)
    print(format_bundle_info(bundle))
    return EXIT_OK


def run_models(args: argparse.Namespace) -> int:
    from .catalogue import list_models, user_model_dirs

    entries = list_models()
    checks = {}
    if args.validate:
        for entry in entries:
            if entry.problem is None:
                try:
                    _load_bundle(str(entry.path))
                    checks[entry.path] = "ok"
                except PancreasSSLSegError as error:
                    checks[entry.path] = str(error)
    if args.json:
        print(json.dumps([{**e.as_dict(), **({"validation": checks[e.path]} if e.path in checks
                                             else {})} for e in entries], indent=2))
    else:
        print(format_catalogue(entries, checks, user_model_dirs()))
    bad = [e for e in entries if e.problem is not None or checks.get(e.path, "ok") != "ok"]
    return EXIT_BAD_INPUT if bad else EXIT_OK


def format_catalogue(entries, checks: dict, user_dirs: list[Path]) -> str:
    lines = [f"user models folder(s): {', '.join(str(d) for d in user_dirs)}"]
    if not entries:
        lines.append("no model bundles installed")
    for entry in entries:
        lines.append("")
        if entry.problem is not None:
            lines += [f"{entry.name}  (unreadable, {entry.source})", f"  path:     {entry.path}",
                      f"  problem:  {entry.problem}"]
            continue
        lines += [f"{entry.label}  ({entry.source})", f"  path:     {entry.path}",
                  f"  licence:  {entry.license}"]
        for name, stage in entry.stages.items():
            lines.append(f"  {name + ':':<9} {stage['spatial_dims']}-D, spacing "
                         f"{stage['spacing_mm']} mm, patch {stage['patch_size']}")
        figures = [(key, value) for key, value in _flatten(entry.metrics)
                   if _is_number_text(value)]
        lines.append("  figures:" if figures else "  figures:  none recorded")
        lines += [f"    {key}: {value}" for key, value in figures]
        if entry.path in checks:
            lines.append(f"  check:    {checks[entry.path]}")
    return "\n".join(lines)


def _is_number_text(value: str) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def format_bundle_info(bundle: ModelBundle) -> str:
    metadata = bundle.metadata
    lines = [f"model:    {bundle.name} {bundle.version}", f"path:     {bundle.path}",
             f"licence:  {metadata['license']}"]
    if metadata.get("description"):
        lines.append(f"about:    {metadata['description']}")
    lines.append("labels:")
    lines += [f"  {label['value']}  {label['name']}" for label in bundle.labels]
    lines.append("stages:")
    for name in metadata["stages"]:
        stage = bundle.stage(name)
        lines.append(f"  {name:<7} {stage.spatial_dims}-D, spacing {list(stage.spacing_mm)} mm, "
                     f"patch {list(stage.patch_size)}"
                     + (f", margin {stage.margin_mm:g} mm" if stage.margin_mm else ""))
    lines.append("metrics:" if metadata["metrics"] else "metrics:  none recorded")
    lines += [f"  {key}: {value}" for key, value in _flatten(metadata["metrics"])]
    return "\n".join(lines)


def _flatten(tree: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested metrics → ("a.b", value) lines; lists stay one compact JSON value."""
    items: list[tuple[str, str]] = []
    for key, value in tree.items():
        if isinstance(value, dict):
            items += _flatten(value, f"{prefix}{key}.")
        else:
            items.append((f"{prefix}{key}", value if isinstance(value, str) else json.dumps(value)))
    return items


if __name__ == "__main__":
    sys.exit(main())
