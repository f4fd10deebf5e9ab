"""Result tables: per-case rows to CSV, grouped summaries (mean ± sd) to CSV and Markdown.

A row is a flat dict, e.g. ``{"method": "baseline", "seed": 0, "source": "nih-8bit",
"case": "PANCREAS_0031-1100", "region": "pancreas", "dice": 0.71, "hd95_mm": 9.3, ...}``.
NaN values (a metric undefined for a case, see ``metrics``) are left out of means and counts.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def write_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write rows with the union of their keys as columns (first-seen order)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns: list[str] = []
    for row in rows:
        columns.extend(key for key in row if key not in columns)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
    return path


def read_csv(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def finite_values(values: Iterable[Any]) -> np.ndarray:
    """Floats of the values that are set and finite (CSV blanks and NaN dropped)."""
    array = np.array([float(v) for v in values if v not in ("", None)], dtype=float)
    return array[np.isfinite(array)]


def summarize(rows: Sequence[dict[str, Any]], group_by: Sequence[str],
              metrics: Sequence[str]) -> list[dict[str, Any]]:
    """Mean, sample sd (ddof 1) and count of each metric per group, groups in first-seen order.

    Output rows: the ``group_by`` keys, then ``<metric>_mean``, ``<metric>_sd``, ``<metric>_n``.
    sd is NaN for fewer than two values.
    """
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[key] for key in group_by), []).append(row)
    summary = []
    for key, members in groups.items():
        out: dict[str, Any] = dict(zip(group_by, key))
        for metric in metrics:
            values = finite_values(member.get(metric) for member in members)
            out[f"{metric}_mean"] = float(values.mean()) if values.size else math.nan
            out[f"{metric}_sd"] = float(values.std(ddof=1)) if values.size > 1 else math.nan
            out[f"{metric}_n"] = int(values.size)
        summary.append(out)
    return summary


def format_mean_sd(mean: float, sd: float, digits: int = 3) -> str:
    """``0.712 ± 0.034``; ``–`` when there is no value, the mean alone when sd is undefined."""
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.{digits}f}" if not math.isfinite(sd) else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def markdown_table(summary: Sequence[dict[str, Any]], group_by: Sequence[str],
                   metrics: Sequence[str], digits: dict[str, int] | None = None) -> str:
    """A Markdown table: one row per summary row, one ``mean ± sd`` column per metric, plus n."""
    digits = digits or {}
    header = [*group_by, *metrics, "n"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary:
        cells = [str(row[key]) for key in group_by]
        cells += [format_mean_sd(row[f"{m}_mean"], row[f"{m}_sd"], digits.get(m, 3))
                  for m in metrics]
        cells.append(str(max(row[f"{m}_n"] for m in metrics)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_markdown(summary: Sequence[dict[str, Any]], group_by: Sequence[str],
                   metrics: Sequence[str], path: str | Path, title: str = "",
                   digits: dict[str, int] | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    heading = f"# {title}\n\n" if title else ""
    path.write_text(heading + markdown_table(summary, group_by, metrics, digits),
                    encoding="utf-8")
    return path
