"""Tables: per-case CSV round trip, mean ± sd per group skipping NaN, Markdown, box plot PNG."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pancreas_ssl_training.evaluation.plots import box_plot
from pancreas_ssl_training.evaluation.tables import (format_mean_sd, markdown_table, read_csv,
                                                     summarize, write_csv, write_markdown)

ROWS = [
    {"method": "baseline", "source": "nih-8bit", "case": "a", "region": "pancreas", "dice": 0.5},
    {"method": "baseline", "source": "nih-8bit", "case": "b", "region": "pancreas", "dice": 0.7},
    {"method": "baseline", "source": "nih-8bit", "case": "c", "region": "pancreas",
     "dice": math.nan},
    {"method": "dual_ssl", "source": "nih-8bit", "case": "a", "region": "pancreas", "dice": 0.9,
     "hd95_mm": 4.0},
]


def test_summary_is_mean_and_sample_sd_per_group_without_nan():
    summary = summarize(ROWS, group_by=("method", "region"), metrics=("dice", "hd95_mm"))
    assert [row["method"] for row in summary] == ["baseline", "dual_ssl"]
    baseline, dual = summary
    assert baseline["dice_mean"] == pytest.approx(0.6)
    assert baseline["dice_sd"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert baseline["dice_n"] == 2
    assert math.isnan(baseline["hd95_mm_mean"]) and baseline["hd95_mm_n"] == 0
    assert dual["dice_mean"] == pytest.approx(0.9) and math.isnan(dual["dice_sd"])


def test_format_and_markdown():
    assert format_mean_sd(0.61234, 0.1) == "0.612 ± 0.100"
    assert format_mean_sd(0.5, math.nan) == "0.500"
    assert format_mean_sd(math.nan, math.nan) == "–"
    summary = summarize(ROWS, ("method",), ("dice",))
    table = markdown_table(summary, ("method",), ("dice",), digits={"dice": 2})
    lines = table.strip().splitlines()
    assert lines[0] == "| method | dice | n |"
    assert lines[2] == "| baseline | 0.60 ± 0.14 | 2 |"
    assert lines[3] == "| dual_ssl | 0.90 | 1 |"


def test_csv_round_trip_keeps_every_column(tmp_path):
    path = write_csv(ROWS, tmp_path / "cases.csv")
    back = read_csv(path)
    assert list(back[0]) == ["method", "source", "case", "region", "dice", "hd95_mm"]
    assert back[3]["hd95_mm"] == "4.0" and back[0]["hd95_mm"] == ""
    # read-back strings summarise like the original floats
    assert summarize(back, ("method",), ("dice",))[0]["dice_mean"] == pytest.approx(0.6)
    md = write_markdown(summarize(back, ("method",), ("dice",)), ("method",), ("dice",),
                        tmp_path / "t.md", title="Dice")
    assert md.read_text(encoding="utf-8").startswith("# Dice\n\n| method | dice | n |")


def test_box_plot_writes_png(tmp_path):
    path = box_plot(ROWS, "dice", "method", tmp_path / "plots" / "dice.png", title="Dice",
                    order=["baseline", "dual_ssl", "polycl"])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 5000
