"""Experiment configs (``training/experiments/*.yaml``): what is trained, on what, and tested where.

Keys (``extends: other.yaml`` lays a file over another, e.g. a small preset over the full one):

- ``name``: names the results (``<name>.md``, ``<name>_summary.csv``, ...).
- ``recipe``: the training config every arm starts from (path relative to the experiment file);
  ``recipe_overrides``: laid over it for every arm alike (e.g. a tiny network for CI).
- ``source``: ``{patients: [first, last]}``: the NIH 8-bit slices trained on, mapped to HU as the
  recipe says (``data.grey_to_hu``).
- ``arms``: ``{name: {methods: {...}, pretrain: bool}}``; ``methods`` are laid over the recipe's,
  ``pretrain`` starts every stage's encoder from a PolyCL pre-training on the source slices
  (``pretrain``: ``{iterations, batch_size, rule}``). The arm named ``baseline`` is the reference.
- ``seeds``: one run per arm and seed (the seed of initial weights, batches and augmentation).
- ``targets``: ``{patients: [first, last]`` (held-out 8-bit patients), ``in_domain``,
  ``hu_slices``, ``other_mapping`` (a ``grey_to_hu`` method), ``corruptions``, ``severities``,
  ``slices_per_patient`` (null = all)``}``; see ``targets.py``.
- ``evaluation``: settings of ``run_evaluation`` (``tta_flip: false`` = Fast mode).
- ``stop_rule``: ``{arm, target, min_dice}``: the other arms are trained only when that arm's
  mean Dice on that target (mean over seeds) reaches ``min_dice``.
- ``jobs`` (runs at a time) and ``threads`` (torch threads per run).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from ..config import ConfigError, deep_merge, read_yaml_mapping
from ..evaluation.corruptions import CORRUPTIONS, SEVERITIES

KEYS = ("name", "extends", "recipe", "recipe_overrides", "source", "arms", "pretrain", "seeds",
        "targets", "evaluation", "stop_rule", "jobs", "threads")
REFERENCE_ARM = "baseline"


def load_experiment(path: str | Path) -> dict[str, Any]:
    """The experiment config at ``path`` (``extends`` followed), checked, paths absolute."""
    path = Path(path).resolve()
    spec = _read(path, ())
    _check(spec, path)
    return spec


def _read(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if path in seen:
        raise ConfigError(f"experiment {path}: 'extends' loops back to itself")
    raw = read_yaml_mapping(path, "experiment", f"a mapping with keys {list(KEYS)}")
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise ConfigError(f"experiment {path}: unknown keys {unknown}; known: {list(KEYS)}")
    if "recipe" in raw:
        raw["recipe"] = str((path.parent / raw["recipe"]).resolve())
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    merged = deep_merge(_read((path.parent / parent).resolve(), (*seen, path)), raw)
    if "arms" in raw:  # a preset's arms replace the parent's, as a list would
        merged["arms"] = copy.deepcopy(raw["arms"])
    return merged


def _check(spec: dict[str, Any], path: Path) -> None:
    def need(condition: bool, problem: str) -> None:
        if not condition:
            raise ConfigError(f"experiment {path}: {problem}")

    for key in ("name", "recipe", "source", "arms", "seeds", "targets", "stop_rule"):
        need(key in spec, f"missing '{key}'")
    need(Path(spec["recipe"]).is_file(), f"recipe {spec['recipe']} not found")
    need(REFERENCE_ARM in spec["arms"], f"arms must include '{REFERENCE_ARM}'")
    need(all(isinstance(a, dict) or a is None for a in spec["arms"].values()),
         "every arm must be a mapping ({methods: ..., pretrain: ...}) or empty")
    spec["arms"] = {name: dict(arm or {}) for name, arm in spec["arms"].items()}
    need(isinstance(spec["seeds"], list) and spec["seeds"]
         and all(isinstance(s, int) for s in spec["seeds"]), "seeds must list integers")
    if any(arm.get("pretrain") for arm in spec["arms"].values()):
        need(isinstance(spec.get("pretrain"), dict) and "iterations" in spec["pretrain"],
             "arms with 'pretrain: true' need a 'pretrain: {iterations, ...}' section")
    for key in ("source", "targets"):
        patients = spec[key].get("patients")
        need(isinstance(patients, list) and len(patients) == 2,
             f"{key}.patients must be [first, last]")
    targets = spec["targets"]
    bad = sorted(set(targets.get("corruptions", [])) - set(CORRUPTIONS))
    need(not bad, f"targets.corruptions: unknown {bad}; known: {list(CORRUPTIONS)}")
    bad_severities = sorted(set(targets.get("severities", [])) - set(SEVERITIES))
    need(not bad_severities, f"targets.severities: expected values in {list(SEVERITIES)}")
    rule = spec["stop_rule"]
    need(rule.get("arm") in spec["arms"] and "min_dice" in rule and "target" in rule,
         "stop_rule needs {arm: an arm, target: a target, min_dice: number}")
    spec.setdefault("recipe_overrides", {})
    spec.setdefault("evaluation", {})
    spec.setdefault("jobs", 1)
    spec.setdefault("threads", 1)
