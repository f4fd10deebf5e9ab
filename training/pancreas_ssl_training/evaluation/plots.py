"""Box plots of a per-case metric, one box per group (e.g. per method), written as PNG.

Uses matplotlib's Agg backend: no display is needed, and importing this never opens a window.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from .tables import finite_values  # noqa: E402


def box_plot(rows: Sequence[dict[str, Any]], metric: str, group_by: str, path: str | Path,
             title: str = "", ylabel: str | None = None,
             order: Sequence[str] | None = None) -> Path:
    """Write one box per value of ``group_by`` (in ``order``, else first-seen), points overlaid.

    Rows whose metric is NaN or missing are left out; a group with no value keeps its empty slot.
    """
    groups: dict[str, list[Any]] = {str(name): [] for name in (order or [])}
    for row in rows:
        groups.setdefault(str(row[group_by]), []).append(row.get(metric))
    names = list(groups)
    values = [finite_values(groups[name]) for name in names]
    figure, axes = plt.subplots(figsize=(max(4.0, 1.1 * len(names) + 1.5), 4.0), dpi=120)
    axes.boxplot([v if v.size else [np.nan] for v in values], showfliers=False)
    axes.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right")
    rng = np.random.default_rng(0)  # fixed jitter: the same rows always give the same picture
    for position, v in enumerate(values, start=1):
        axes.scatter(position + rng.uniform(-0.15, 0.15, v.size), v, s=6, alpha=0.4)
    axes.set_ylabel(ylabel or metric)
    axes.set_title(title)
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
