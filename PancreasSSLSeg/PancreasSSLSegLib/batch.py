"""Batch runs (``PancreasSSLSegLogic.segmentFiles``): wait for the engine, collect the reports,
leave ``summary.csv``/``summary.json`` in the output folder.

Cases whose outputs already exist are skipped by the engine unless ``--overwrite`` (a batch
resumes). The engine writes the summary for a batch (``pancreas_ssl_seg.batch_summary``); for a
single case it writes none, and ``collect`` does.
"""

from __future__ import annotations

import json

from .engine_process import EngineFailed, RunStatus


def collect(process, paths, output_dir, log) -> dict[str, dict]:
    """Wait for ``process`` (an ``EngineProcess`` segmenting ``paths`` into ``output_dir``);
    returns ``{case: report}`` for every case with complete outputs; raises ``EngineFailed``
    when there is none (e.g. a bad bundle). ``log(text)`` gets what the user should read."""
    from pancreas_ssl_seg.case_names import case_name
    from pancreas_ssl_seg.case_files import case_is_complete, output_paths

    status = process.wait()
    final = process.final.fields if process.final else {}
    # The engine's own list of cases (folders expanded); else one case per path given.
    listed = [entry for entry in final.get("cases", []) if isinstance(entry, dict)]
    cases = ([entry["case"] for entry in listed] if listed
             else [case_name(path) for path in paths])
    reports = {case: json.loads(output_paths(output_dir, case)["report"]
                                .read_text(encoding="utf-8"))
               for case in cases if case_is_complete(output_dir, case)}
    if status is not RunStatus.OK:
        if not reports:
            raise EngineFailed(process.error_message(), process.exit_code)
        log(f"Some cases failed: {process.error_message()}")
    if final.get("summary"):
        log(f"Batch summary: {final['summary']}")
    else:
        write_summary(output_dir, cases, listed, reports, process.error_message(), log)
    return reports


def write_summary(output_dir, cases, listed, reports, error_message, log) -> None:
    """summary.csv/json of ``cases`` (the engine's ``listed`` statuses when it gave them); a
    folder that cannot take them is logged, the cases' outputs stand."""
    from pancreas_ssl_seg import batch_summary

    statuses = {entry["case"]: entry for entry in listed}
    rows = []
    for case in cases:
        entry = statuses.get(case, {})
        if case in reports and entry.get("status") != "error":
            rows.append(batch_summary.report_row(reports[case], case, entry.get("status", "ok")))
        else:
            rows.append(batch_summary.error_row(case, entry.get("message") or error_message))
    try:
        path = batch_summary.write_summary(output_dir, rows)["csv"]
    except OSError as error:
        log(f"Could not write the batch summary in {output_dir}: {error}")
        return
    log(f"Batch summary: {path}")
