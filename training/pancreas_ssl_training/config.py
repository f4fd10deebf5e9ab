"""Training configs: YAML in, a validated plain dict with every default filled in out.

Sections: ``data`` (defaults for every stage's slice sources), ``network`` (the engine's
``build_network`` config; SSL heads are added from the active methods), ``methods``
(``{name: {enabled, weight | weights, params}}``), ``optim``, ``train``, ``stages``
(``coarse`` and/or ``fine``: spacing, patch, their own ``data``, ``network`` and ``train``
overrides), ``export`` (bundle metadata), and optional ``init_encoder`` (a PolyCL checkpoint
whose encoder initialises every stage) or ``init_weights`` (a fit checkpoint whose stages
initialise the same stages here: continued training).

``extends: other.yaml`` (relative to the config's folder) starts from another config and lays
this one over it, so a method's config states only what differs from ``baseline.yaml``
(``data.sources`` is replaced, not merged).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from pancreas_ssl_seg.bundle_format import STAGES
from pancreas_ssl_seg.errors import PancreasSSLSegError
from pancreas_ssl_seg.hounsfield import DEFAULT_HU_WINDOW
from pancreas_ssl_seg.networks import size_divisor, validate_network_config

SECTIONS = ("name", "extends", "data", "network", "methods", "optim", "train", "stages", "export",
            "init_encoder", "init_weights")

DEFAULTS: dict[str, Any] = {
    "name": "run",
    "data": {"hu_window": list(DEFAULT_HU_WINDOW)},
    "network": {"spatial_dims": 2, "in_channels": 1, "out_channels": 3,
                "channels": [16, 32, 64, 128], "strides": [2, 2, 2], "dropout": 0.1},
    "methods": {"supervised": {"enabled": True, "weight": 1.0}},
    "optim": {"lr": 1e-3, "weight_decay": 1e-4, "warmup_iterations": 0, "schedule": "cosine",
              "grad_clip": 5.0},
    "train": {"iterations": 100, "batch_size": 4, "seed": 0, "amp": True, "log_every": 1,
              "checkpoint_every": 100, "threads": 0},
    "stages": {},
    "export": {"name": "pancreas-model", "version": "0.1.0", "description": "",
               "license": "Apache-2.0"},
    "init_encoder": None,
    "init_weights": None,
}
STAGE_DEFAULTS: dict[str, Any] = {"spacing_mm": [1.0, 1.0, 3.0], "patch_size": [96, 96],
                                  "data": {}, "network": {}, "train": {}}


class ConfigError(PancreasSSLSegError):
    """A training config is missing, unreadable or inconsistent."""


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` laid over it, recursively for nested dicts (copies both)."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a YAML config (following ``extends``) and return it validated, with defaults."""
    path = Path(path)
    return resolve_config(_read_with_parents(path, seen=()), source=str(path))


def read_yaml_mapping(path: Path, what: str, expected: str) -> dict[str, Any]:
    """The mapping a YAML file holds, or ``ConfigError`` naming ``what``, the file and the
    problem (unreadable, not YAML, not ``expected``)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{what} {path}: expected {expected}")
    return raw


def _read_with_parents(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    if path.resolve() in seen:
        raise ConfigError(f"config {path}: 'extends' loops back to itself")
    raw = read_yaml_mapping(path, "config", f"a mapping of sections {list(SECTIONS)}")
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    # Sections merge recursively (a child switches methods on over its parent's set), except
    # data.sources: a child's list of datasets replaces its parent's.
    merged = deep_merge(_read_with_parents(path.parent / parent, (*seen, path.resolve())), raw)
    if isinstance(raw.get("data"), dict) and "sources" in raw["data"]:
        merged["data"]["sources"] = copy.deepcopy(raw["data"]["sources"])
    return merged


def resolve_config(raw: dict[str, Any], source: str = "<dict>") -> dict[str, Any]:
    """Validate a config mapping and fill in defaults (``source`` names it in errors)."""
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"config {source}: unknown sections {unknown}; known: {list(SECTIONS)}")
    config = deep_merge(DEFAULTS, raw)
    if raw.get("methods") is not None:  # a config's methods replace the default set, not extend it
        config["methods"] = copy.deepcopy(raw["methods"])
    _check_train(config["train"], config["optim"], source)
    _check(isinstance(config["stages"], dict) and config["stages"], source,
           f"stages must name at least one of {list(STAGES)}")
    bad_stages = sorted(set(config["stages"]) - set(STAGES))
    _check(not bad_stages, source, f"unknown stages {bad_stages}; known: {list(STAGES)}")
    config["stages"] = {name: _resolve_stage(name, spec or {}, config, source)
                        for name, spec in config["stages"].items()}
    _check_methods(config["methods"], source)
    return config


def _check(condition: bool, source: str, problem: str) -> None:
    if not condition:
        raise ConfigError(f"config {source}: {problem}")


def _resolve_stage(name: str, spec: dict[str, Any], config: dict[str, Any],
                   source: str) -> dict[str, Any]:
    stage = deep_merge(STAGE_DEFAULTS, spec)
    stage["network"] = deep_merge(config["network"], stage["network"])
    stage["data"] = deep_merge(config["data"], stage["data"])
    stage["train"] = deep_merge(config["train"], stage["train"])  # e.g. fewer coarse iterations
    _check_train(stage["train"], config["optim"], f"{source} (stages.{name})")
    try:
        validate_network_config(stage["network"])
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"config {source}: stages.{name}.network: {exc}") from None
    dims = stage["network"]["spatial_dims"]
    patch = stage["patch_size"]
    _check(isinstance(patch, list) and len(patch) == dims, source,
           f"stages.{name}.patch_size must list {dims} sizes (network spatial_dims {dims})")
    factor = size_divisor(stage["network"])
    _check(all(isinstance(p, int) and p % factor == 0 for p in patch), source,
           f"stages.{name}.patch_size {patch} must be integers divisible by {factor} "
           "(the product of the network strides and stem_stride)")
    spacing = stage["spacing_mm"]
    _check(isinstance(spacing, list) and len(spacing) == 3
           and all(isinstance(s, (int, float)) and s > 0 for s in spacing), source,
           f"stages.{name}.spacing_mm must be 3 positive numbers (x, y, z) in mm")
    if name == "fine":
        stage.setdefault("margin_mm", 20.0)
    return stage


def _check_methods(methods: Any, source: str) -> None:
    _check(isinstance(methods, dict), source, "methods must map method names to settings")
    for name, settings in methods.items():
        _check(isinstance(settings, dict), source, f"methods.{name} must be a mapping")
        weights = settings.get("weights", {})
        _check(isinstance(weights, dict)
               and all(isinstance(w, (int, float)) for w in weights.values()), source,
               f"methods.{name}.weights must map loss terms to numbers")
        _check(isinstance(settings.get("weight", 1.0), (int, float)), source,
               f"methods.{name}.weight must be a number")
    _check(any(s.get("enabled", True) for s in methods.values()), source,
           "at least one method must be enabled")


def _check_train(train: dict[str, Any], optim: dict[str, Any], source: str) -> None:
    for key in ("iterations", "batch_size", "log_every", "checkpoint_every"):
        _check(isinstance(train[key], int) and train[key] > 0, source,
               f"train.{key} must be a positive integer")
    _check(isinstance(optim["lr"], (int, float)) and optim["lr"] > 0, source,
           "optim.lr must be a positive number")
    _check(optim["schedule"] in ("cosine", "constant"), source,
           "optim.schedule must be 'cosine' or 'constant'")


def enabled_methods(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``methods`` entries that are switched on."""
    return {name: s for name, s in config["methods"].items() if s.get("enabled", True)}
