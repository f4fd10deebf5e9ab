"""Progress reporters: JSON lines a program can parse, a terminal bar, and silence."""

from __future__ import annotations

import io
import json

import pytest

from PancreasSSLSegLib.progress import (BarProgress, JsonLinesProgress, NoProgress,
                                        default_progress_kind, make_progress)


class FlushCountingStream(io.StringIO):
    def __init__(self):
        super().__init__()
        self.flushes = 0

    def flush(self):
        self.flushes += 1
        super().flush()


def test_json_lines_one_object_per_line_flushed_with_done_last():
    stream = FlushCountingStream()
    reporter = make_progress("json", stream, case="ct1")
    reporter("read", 0.0, "reading")
    reporter("coarse", 1.7, "clamped")
    reporter("done", 1.0, "case finished")
    reporter.close("ok")
    reporter.finish("ok", cases_ok=1, cases_failed=0)
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [r["stage"] for r in records] == ["read", "coarse", "case_done", "done"]
    assert records[0] == {"stage": "read", "fraction": 0.0, "message": "reading", "case": "ct1"}
    assert records[1]["fraction"] == 1.0
    assert records[-1] == {"stage": "done", "fraction": 1.0, "status": "ok", "cases_ok": 1,
                           "cases_failed": 0}
    assert stream.flushes == 4  # every line reaches the reader at once


def test_json_error_final_line_carries_message():
    stream = io.StringIO()
    JsonLinesProgress(stream).finish("error", message="x.nii.gz: is 2-D")
    assert json.loads(stream.getvalue()) == {"stage": "done", "fraction": 1.0, "status": "error",
                                            "message": "x.nii.gz: is 2-D"}


def test_bar_writes_to_its_stream_and_closes():
    stream = io.StringIO()
    reporter = make_progress("bar", stream, case="ct1")
    assert isinstance(reporter, BarProgress)
    reporter("fine", 0.5, "sliding window")
    assert reporter.bar.n == 50
    reporter.close("ok")
    assert reporter.bar.n == 100
    text = stream.getvalue()
    assert "ct1 fine sliding window" in text and "100%" in text


def test_none_prints_nothing(capsys):
    reporter = make_progress("none")
    assert isinstance(reporter, NoProgress)
    reporter("read", 0.5, "x")
    reporter.finish("ok")
    assert capsys.readouterr() == ("", "")


def test_unknown_kind_and_default_kind():
    with pytest.raises(ValueError, match="unknown progress kind"):
        make_progress("fancy")

    class Tty(io.StringIO):
        def isatty(self):
            return True

    assert default_progress_kind(Tty()) == "bar"
    assert default_progress_kind(io.StringIO()) == "none"
