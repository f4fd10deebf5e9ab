"""Comparisons of an arm with the baseline: paired per-case differences, bootstrap intervals,
spread over seeds, medians.

Rows are the flat dicts of ``tables`` (``{"method", "seed", "case", "patient", "dice", ...}``).
A difference is paired: the same case scored by the arm and by the baseline *of the same seed*
(same data, same initial seed). Intervals are percentile bootstrap intervals of the mean
difference that resample **patients** with all their pairs (a cluster bootstrap): slices of one
patient are correlated, and resampling them one by one would give intervals that are too narrow.
scipy's ``stats.bootstrap`` resamples observations independently, hence the few lines here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .tables import finite_values

DEFAULT_RESAMPLES = 10_000


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def paired_differences(rows: Sequence[dict[str, Any]], metric: str, arm: str,
                       baseline: str = "baseline", method_key: str = "method",
                       pair_keys: Sequence[str] = ("seed", "case")) -> list[dict[str, Any]]:
    """``arm - baseline`` of ``metric`` per pair (``pair_keys``), pairs where both are finite.

    Each output row holds the pair keys, ``patient`` (when the rows have it) and ``difference``.
    """
    def key(row: dict[str, Any]) -> tuple:
        return tuple(str(row[k]) for k in pair_keys)

    base = {key(r): _number(r.get(metric)) for r in rows if r[method_key] == baseline}
    out = []
    for row in rows:
        if row[method_key] != arm:
            continue
        value, reference = _number(row.get(metric)), base.get(key(row), math.nan)
        if math.isfinite(value) and math.isfinite(reference):
            out.append({**dict(zip(pair_keys, key(row))), "patient": row.get("patient", ""),
                        "difference": value - reference})
    return out


def bootstrap_interval(values: Sequence[float], groups: Sequence[Any] | None = None,
                       confidence: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES,
                       seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values``.

    ``groups`` (one label per value, e.g. the patient): resample whole groups with replacement
    and take the mean of all values drawn; ``None``: every value is its own group.
    ``(nan, nan)`` without values.
    """
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return math.nan, math.nan
    labels = np.arange(values.size) if groups is None else np.asarray(groups)
    if labels.shape != values.shape:
        raise ValueError(f"groups: expected one label per value ({values.size}), got "
                         f"{labels.shape}")
    _, index = np.unique(labels, return_inverse=True)
    sums = np.bincount(index, weights=values)
    counts = np.bincount(index).astype(float)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, sums.size, size=(n_resamples, sums.size))
    means = sums[draws].sum(axis=1) / counts[draws].sum(axis=1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def verdict(low: float, high: float, higher_is_better: bool = True) -> str:
    """``better`` / ``worse`` when the interval of ``arm - baseline`` excludes 0, else
    ``indistinguishable`` (``–`` without an interval)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return "–"
    if low > 0 or high < 0:
        return "better" if (low > 0) == higher_is_better else "worse"
    return "indistinguishable"


def compare_to_baseline(rows: Sequence[dict[str, Any]], metric: str, arm: str,
                        baseline: str = "baseline", higher_is_better: bool = True,
                        confidence: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES,
                        seed: int = 0) -> dict[str, Any]:
    """Mean and median of the paired differences, the patient-cluster bootstrap interval of
    the mean, the verdict, and how many pairs and patients it rests on."""
    pairs = paired_differences(rows, metric, arm, baseline)
    differences = np.array([p["difference"] for p in pairs], dtype=float)
    low, high = bootstrap_interval(differences, [p["patient"] for p in pairs], confidence,
                                   n_resamples, seed)
    return {f"{metric}_diff_mean": float(differences.mean()) if pairs else math.nan,
            f"{metric}_diff_median": float(np.median(differences)) if pairs else math.nan,
            f"{metric}_diff_low": low, f"{metric}_diff_high": high,
            f"{metric}_verdict": verdict(low, high, higher_is_better),
            f"{metric}_pairs": len(pairs),
            f"{metric}_pair_patients": len({p["patient"] for p in pairs})}


def over_seeds(rows: Sequence[dict[str, Any]], metric: str,
               seed_key: str = "seed") -> dict[str, Any]:
    """Mean ± sd over seeds of each seed's mean over cases, and the median over all cases."""
    by_seed: dict[str, list[Any]] = {}
    for row in rows:
        by_seed.setdefault(str(row[seed_key]), []).append(row.get(metric))
    seed_means = np.array([v.mean() for v in map(finite_values, by_seed.values()) if v.size])
    pooled = finite_values(row.get(metric) for row in rows)
    return {f"{metric}_mean": float(seed_means.mean()) if seed_means.size else math.nan,
            f"{metric}_sd": float(seed_means.std(ddof=1)) if seed_means.size > 1 else math.nan,
            f"{metric}_median": float(np.median(pooled)) if pooled.size else math.nan,
            f"{metric}_seeds": int(seed_means.size), f"{metric}_cases": int(pooled.size)}
