"""``segment``: a cohort of cases (files, DICOM folders, folders of those) segmented one by one,
each written all or nothing; and ``summary``: a cohort's summary rebuilt from its reports.

Each failing case prints one line ``error: <file>: <problem>`` on stderr and the batch goes on;
finished cases (all six outputs present) are skipped unless ``--overwrite``, so a stopped batch
resumes where it was. A run that finished any case ends with one line counting the cases per run
status and per quality verdict (stdout; in ``--progress json`` the done line's ``quality``), and
a batch writes ``summary.csv``/``.json`` (:mod:`.batch_summary`)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import batch_summary
from .case_names import case_name
from .cli_exit import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, INTERRUPTED
from .cli_models import load_model
from .dicom_folder import dicom_series_ids
from .errors import BundleError, DeviceError, PancreasSSLSegError
from .image_io import is_image_file
from .case_files import DICOM_SEG_KEY, case_is_complete
from .outputs import write_case_outputs
from .progress import SKIPPED, default_progress_kind, make_progress

if TYPE_CHECKING:
    from .bundle import ModelBundle

# Errors that would repeat for every case: stop the batch at the first one.
RUN_FATAL_ERRORS = (BundleError, DeviceError)


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
    bundle = load_model(args.model)
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
                    SKIPPED, 1.0, f"{case.name}: outputs exist (--overwrite to redo)")
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


# torch (seconds to import) is imported only when a case is segmented: --help stays instant.
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
