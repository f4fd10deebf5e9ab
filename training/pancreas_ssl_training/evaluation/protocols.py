"""Generalization protocols: which samples train and which test, by ``source`` and ``patient``.

Works on any samples with a ``source`` attribute (``SliceSample``, dataset records) and, for patient
selection, a ``patient`` attribute.

- Single-source generalization: train on one source, test on every other source (one split per
  source). This is the setting the methods were designed for: one hospital's data, unseen others.
- Leave-one-source-out: train on all sources but one, test on the one left out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Split:
    """One train/test split; ``test`` maps each test source to its samples."""

    name: str
    train_sources: tuple[str, ...]
    train: list[Any]
    test: dict[str, list[Any]]


def group_by_source(samples: Iterable[Any]) -> dict[str, list[Any]]:
    """Samples per ``source``, sources in first-seen order."""
    groups: dict[str, list[Any]] = {}
    for sample in samples:
        groups.setdefault(sample.source, []).append(sample)
    return groups


def _require_sources(groups: dict[str, list[Any]], needed: int, protocol: str) -> None:
    if len(groups) < needed:
        raise ValueError(f"{protocol} needs samples from at least {needed} sources, got "
                         f"{sorted(groups)}")


def single_source_splits(samples: Iterable[Any]) -> list[Split]:
    """One split per source: train on it, test on each of the others."""
    groups = group_by_source(samples)
    _require_sources(groups, 2, "single-source generalization")
    return [Split(name=f"train-{source}", train_sources=(source,), train=list(groups[source]),
                  test={other: list(items) for other, items in groups.items() if other != source})
            for source in groups]


def leave_one_source_out_splits(samples: Iterable[Any]) -> list[Split]:
    """One split per source: train on all the others, test on it."""
    groups = group_by_source(samples)
    _require_sources(groups, 2, "leave-one-source-out")
    return [Split(name=f"without-{source}",
                  train_sources=tuple(other for other in groups if other != source),
                  train=[s for other, items in groups.items() if other != source for s in items],
                  test={source: list(groups[source])})
            for source in groups]


def patient_range(first: int, last: int) -> list[str]:
    """Zero-padded NIH patient ids ``first..last`` inclusive: ``patient_range(4, 6)`` →
    0004…0006."""
    return [f"{number:04d}" for number in range(first, last + 1)]


def select_patients(samples: Iterable[Any], patients: Sequence[str]) -> list[Any]:
    """The samples whose ``patient`` is in ``patients`` (order kept)."""
    wanted = set(patients)
    return [sample for sample in samples if sample.patient in wanted]
