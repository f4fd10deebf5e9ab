"""Progress reporters: callables ``progress(stage, fraction, message)`` the engine calls as it runs.

Three kinds, chosen with :func:`make_progress`: a tqdm bar on stderr (people at a terminal), JSON
lines on stdout (programs such as the Slicer module; one object per line, flushed at once), and
none. Each also has ``close(status)``, called when one case ends (the bar closes), and
``finish(status, **fields)``, called once when the whole run ends (the JSON reporter prints the
final line ``{"stage": "done", "fraction": 1.0, "status": ..., **fields}``).
"""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from tqdm import tqdm

PROGRESS_KINDS = ("bar", "json", "none")
DONE_STAGE, CASE_DONE_STAGE = "done", "case_done"


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
        # "done" marks the run's last line; a case's own end (the pipeline's "done") is renamed.
        if stage == DONE_STAGE:
            stage = CASE_DONE_STAGE
        self._write({"stage": stage, "fraction": _clamp(fraction), "message": message,
                     **self.context})

    def finish(self, status: str, **fields: Any) -> None:
        self._write({"stage": DONE_STAGE, "fraction": 1.0, "status": status, **fields})

    def _write(self, record: dict[str, Any]) -> None:
        # Flush per line: the reader (a GUI) polls while this process is still running.
        self.stream.write(json.dumps(record, default=str) + "\n")
        self.stream.flush()


class BarProgress(NoProgress):
    """A tqdm bar on stderr, 0–100 %, described by the current stage and message."""

    def __init__(self, stream: TextIO | None = None, label: str = ""):
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
