"""The progress protocol: reporters (JSON lines a program can parse, a terminal bar, silence) and
the parser the Slicer module reads the lines with."""

from __future__ import annotations

import io
import json

import pytest

from pancreas_ssl_seg.progress import (CASE_STAGES, BarProgress, JsonLinesProgress,
                                        NoProgress, default_progress_kind, make_progress,
                                        parse_line)


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
    reporter("case_done", 1.0, "case finished")
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


def test_the_parser_reads_back_what_the_reporter_writes():
    stream = io.StringIO()
    reporter = make_progress("json", stream, case="ct1")
    reporter("fine", 0.5, "fine pass")
    reporter.finish("error", message="ct1.nii.gz: is 2-D", cases_failed=1)
    fine, end = [parse_line(line) for line in stream.getvalue().splitlines()]
    assert (fine.stage, fine.fraction, fine.message, fine.fields["case"]) == (
        "fine", 0.5, "fine pass", "ct1")
    assert not fine.is_run_end and fine.status is None
    assert end.is_run_end and (end.status, end.message) == ("error", "ct1.nii.gz: is 2-D")
    assert end.fields["cases_failed"] == 1


@pytest.mark.parametrize("line", ["Loading model...", "{not json", "[1, 2]",
                                  '{"fraction": 0.5}', '{"stage": "x", "fraction": "half"}', ""])
def test_the_parser_leaves_other_output_alone(line):
    assert parse_line(line) is None


def test_case_stages_start_with_reading_and_end_with_the_case_not_the_run():
    assert CASE_STAGES[0] == "reading" and CASE_STAGES[-1] == "case_done"
    assert len(set(CASE_STAGES)) == len(CASE_STAGES) and "done" not in CASE_STAGES
