"""The progress protocol, both ends: the reporters the engine calls as it runs, and the parser
the Slicer module reads the engine's ``--progress json`` lines with.

Reporters are callables ``progress(stage, fraction, message)``, chosen with
:func:`make_progress`: a tqdm bar on stderr (people at a terminal), JSON lines on stdout
(programs such as the Slicer module; one object per line, flushed at once), and none. Each also
has ``close(status)``, called when one case ends (the bar closes), and ``finish(status,
**fields)``, called once when the whole run ends.

Lines (one JSON object each, on stdout):

- a case's stage: ``{"stage": S, "fraction": 0..1, "message": str, "case": str}``, S one of
  :data:`CASE_STAGES` in that order (the pipeline's), or :data:`SKIPPED` for a case whose outputs
  exist;
- the run's last line: ``{"stage": "done", "fraction": 1.0, "status": "ok"|"error", **fields}``
  (:data:`RUN_DONE`; fields: ``message`` on error, the CLI's case counts, ``cases``, ``quality``,
  ``summary``).

:func:`parse_line` turns a line back into a :class:`ProgressRecord` (None for plain log text).
Nothing here imports tqdm before a bar is made: the Slicer module imports this file before the
engine's packages are installed.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

PROGRESS_KINDS = ("bar", "json", "none")
# A case's stages, in the order the pipeline reports them; CASE_DONE is its last.
READING, COARSE, FINE, POSTPROCESS, MAPPING, REPORT, CASE_DONE = (
    "reading", "coarse", "fine", "postprocess", "mapping", "report", "case_done")
CASE_STAGES = (READING, COARSE, FINE, POSTPROCESS, MAPPING, REPORT, CASE_DONE)
SKIPPED = "skipped"  # a case whose outputs exist (not segmented again)
RUN_DONE = "done"    # the run's last line, with its status
RUN_OK, RUN_ERROR = "ok", "error"


@dataclass(frozen=True)
class ProgressRecord:
    """One line of the JSON protocol; ``fields`` is the whole object as printed."""

    stage: str
    fraction: float
    message: str = ""
    fields: dict[str, Any] = field(default_factory=dict)

    @property
    def is_run_end(self) -> bool:
        return self.stage == RUN_DONE

    @property
    def status(self) -> str | None:
        """The run's status (:data:`RUN_OK`/:data:`RUN_ERROR`) on its last line, else None."""
        return self.fields.get("status") if self.is_run_end else None


def format_line(record: dict[str, Any]) -> str:
    """One protocol line (no newline) for a record with at least ``stage`` and ``fraction``."""
    return json.dumps(record, default=str)


def parse_line(line: str) -> ProgressRecord | None:
    """The record on ``line``, or None for any other output (plain log text, broken JSON)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(record, dict) or "stage" not in record:
        return None
    try:
        fraction = float(record.get("fraction", 0.0))
    except (TypeError, ValueError):
        return None
    return ProgressRecord(str(record["stage"]), fraction, str(record.get("message", "")), record)


class NoProgress:
    """Reports nothing."""

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        pass

    def close(self, status: str) -> None:
        pass

    def finish(self, status: str, **fields: Any) -> None:
        pass


class JsonLinesProgress(NoProgress):
    """One JSON object per line; ``context`` fields (e.g. the case name) are added to each."""

    def __init__(self, stream: TextIO | None = None, **context: Any):
        self.stream = stream if stream is not None else sys.stdout
        self.context = context

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        self._write({"stage": stage, "fraction": _clamp(fraction), "message": message,
                     **self.context})

    def finish(self, status: str, **fields: Any) -> None:
        self._write({"stage": RUN_DONE, "fraction": 1.0, "status": status, **fields})

    def _write(self, record: dict[str, Any]) -> None:
        # Flush per line: the reader (a GUI) polls while this process is still running.
        self.stream.write(format_line(record) + "\n")
        self.stream.flush()


class BarProgress(NoProgress):
    """A tqdm bar on stderr, 0–100 %, described by the current stage and message."""

    def __init__(self, stream: TextIO | None = None, label: str = ""):
        from tqdm import tqdm

        self.label = label
        self.bar = tqdm(total=100, file=stream if stream is not None else sys.stderr,
                        bar_format="{desc} {percentage:3.0f}%|{bar}| {elapsed}", leave=True)

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        self.bar.set_description_str(" ".join(p for p in (self.label, stage, message) if p))
        self.bar.n = round(100 * _clamp(fraction))
        self.bar.refresh()

    def close(self, status: str) -> None:
        if status == "ok":
            self.bar.n = 100
        self.bar.set_description_str(" ".join(p for p in (self.label, status) if p))
        self.bar.close()


def _clamp(fraction: float) -> float:
    return min(1.0, max(0.0, float(fraction)))


def make_progress(kind: str, stream: TextIO | None = None, **context: Any):
    """A reporter of ``kind`` (one of :data:`PROGRESS_KINDS`)."""
    if kind == "json":
        return JsonLinesProgress(stream, **context)
    if kind == "bar":
        return BarProgress(stream, label=str(context.get("case", "")))
    if kind == "none":
        return NoProgress()
    raise ValueError(f"unknown progress kind {kind!r}; expected one of {PROGRESS_KINDS}")


def default_progress_kind(stream: TextIO | None = None) -> str:
    """``bar`` when stderr is a terminal, else ``none`` (no bar noise in logs and pipes)."""
    stream = stream if stream is not None else sys.stderr
    return "bar" if getattr(stream, "isatty", lambda: False)() else "none"
