"""A bundle's ``metadata.json``: the defaults a new bundle starts from, and its validation.

:func:`default_metadata` is what training's export (and any bundle built in code) fills in;
:func:`validate_metadata` is what the loader accepts: bounded network sizes and inference
settings, so a hostile bundle cannot ask for endless passes or a giant network.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

from .bundle_format import (FORMAT_NAME, FORMAT_VERSION, MAX_MEMBERS, STAGES, WEIGHTS_FILE,
                            bundle_error, is_int, require, short)
from .hounsfield import DEFAULT_HU_WINDOW
from .labels import LABEL_VALUES, LABEL_VALUES_TEXT, LABELS, UNCERTAIN_REGION
from .networks import validate_network_config
from .quality import DEFAULT_QUALITY

REQUIRED_KEYS = ("format", "format_version", "name", "version", "license", "labels",
                 "uncertain_region", "intensity", "stages", "inference", "weights",
                 "provenance", "metrics")
REQUIRED_INFERENCE_KEYS = ("tta_flips", "mc_dropout_samples", "uncertainty_threshold",
                           "min_component_fraction", "lesion_dilation_mm", "sw_overlap")
INTENSITY_REFERENCES = ("slice", "scan")
# Bounds that keep a hostile bundle from asking for endless passes or a giant network.
# Optional keys (absent: the behaviour of bundles that predate them, see cascade.py).
INFERENCE_RANGES = {"min_component_fraction": (0, 1), "lesion_dilation_mm": (0, 100),
                    "sw_overlap": (0, 0.95), "region_min_volume_ml": (0, 1000),
                    "coarse_component_fraction": (0, 1), "coarse_organ_threshold": (0, 1),
                    "lesion_probability_threshold": (0, 1),
                    "lesion_min_area_mm2": (0, 10000), "max_component_gap_mm": (0, 1000),
                    "box_growth_mm": (0, 200)}
MAX_BOX_GROWTH_ROUNDS = 5
MAX_TTA_FLIPS = 8
MAX_MC_DROPOUT_SAMPLES = 64
MAX_NETWORK_LEVELS = 8
INFERENCE_DEFAULTS = {
    "tta_flips": [[], [2]],          # array axes of the canonical (z, y, x) volume to flip
    "mc_dropout_samples": 0,
    "uncertainty_threshold": 0.5,    # normalised predictive entropy
    "min_component_fraction": 0.1,   # pancreas components kept: >= this fraction of the largest
    "lesion_dilation_mm": 5.0,       # lesions kept only inside the pancreas dilated by this much
    "sw_overlap": 0.25,
    "region_min_volume_ml": 0.05,    # smaller uncertain components are not listed
    "quality": DEFAULT_QUALITY,      # the verdict's thresholds (export settings override keys)
}


def default_metadata(*, name: str, version: str, coarse: dict[str, Any] | None,
                     fine: dict[str, Any],
                     hu_window=DEFAULT_HU_WINDOW, intensity_reference: str = "scan",
                     description: str = "",
                     license: str = "Apache-2.0", provenance: dict[str, Any] | None = None,
                     metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """Bundle metadata (all but ``weights``, which ``save_bundle`` fills in) for two stage specs.

    ``coarse``/``fine``: ``{"network": config, "spacing_mm": [x, y, z], "patch_size": [...]}``,
    the fine stage with ``"margin_mm"`` too. Labels and the review region come from
    :mod:`.labels`.
    """
    return {
        "format": FORMAT_NAME, "format_version": FORMAT_VERSION,
        "name": name, "version": version, "description": description, "license": license,
        "labels": copy.deepcopy(LABELS), "uncertain_region": copy.deepcopy(UNCERTAIN_REGION),
        "intensity": {"hu_window": [float(hu_window[0]), float(hu_window[1])],
                      "normalization": "clip, minus soft-tissue median, / 100 HU",
                      "reference": intensity_reference},
        "stages": {"coarse": copy.deepcopy(coarse), "fine": copy.deepcopy(fine)},
        "inference": copy.deepcopy(INFERENCE_DEFAULTS),
        "provenance": provenance or {}, "metrics": metrics or {},
    }


def _is_number(value: Any) -> bool:
    # Metadata is parsed with non-finite floats refused, so any float here is finite.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_rgb(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 3
            and all(is_int(c) and 0 <= c <= 255 for c in value))


def _is_code(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(value.get(k), str) and value.get(k)
                                           for k in ("scheme", "code", "meaning"))


def _check_segment_entry(entry: Any, path: Path, where: str) -> None:
    require(isinstance(entry, dict) and isinstance(entry.get("name"), str) and entry["name"],
            path, f"{where} needs a non-empty name")
    require(_is_rgb(entry.get("color")), path, f"{where} needs color [r, g, b] in 0..255")
    terminology = entry.get("terminology")
    require(isinstance(terminology, dict) and _is_code(terminology.get("category"))
            and _is_code(terminology.get("type")), path,
            f"{where} needs terminology.category and terminology.type codes "
            "(scheme, code, meaning)")


def _check_network(where: str, config: Any, path: Path) -> None:
    """Stricter than ``validate_network_config``: the engine feeds one CT channel and reads one
    output per label, and a hostile config must not be able to request a giant network."""
    require(isinstance(config, dict), path, f"{where} must be an object")
    try:
        validate_network_config(config)
    except (ValueError, TypeError) as exc:
        raise bundle_error(path, f"{where}: {exc}") from None
    require(is_int(config["spatial_dims"]), path, f"{where}.spatial_dims must be 2 or 3")
    require(is_int(config["in_channels"]) and config["in_channels"] == 1, path,
            f"{where}.in_channels must be 1 (one CT channel)")
    require(is_int(config["out_channels"]) and config["out_channels"] == len(LABEL_VALUES),
            path, f"{where}.out_channels must be {len(LABEL_VALUES)} (one per label)")
    channels, strides = config["channels"], config["strides"]
    require(isinstance(channels, list) and len(channels) <= MAX_NETWORK_LEVELS, path,
            f"{where}.channels must be a list of at most {MAX_NETWORK_LEVELS} levels")
    require(isinstance(strides, list) and all(is_int(s) and 1 <= s <= 4 for s in strides),
            path, f"{where}.strides must be a list of integers in 1..4")
    dropout = config.get("dropout", 0.0)
    require(dropout is None or (_is_number(dropout) and 0 <= dropout < 1), path,
            f"{where}.dropout must be a number in [0, 1)")
    heads = config.get("heads", [])
    require(isinstance(heads, list) and all(isinstance(h, str) for h in heads), path,
            f"{where}.heads must be a list of head names")
    projection_dim = config.get("projection_dim", 64)
    require(is_int(projection_dim) and 1 <= projection_dim <= 1024, path,
            f"{where}.projection_dim must be an integer in 1..1024")


def _check_stage(name: str, spec: Any, path: Path) -> None:
    require(isinstance(spec, dict), path, f"stages.{name} must be an object")
    _check_network(f"stages.{name}.network", spec.get("network"), path)
    dims = spec["network"]["spatial_dims"]
    spacing, patch = spec.get("spacing_mm"), spec.get("patch_size")
    require(isinstance(spacing, list) and len(spacing) == 3
            and all(_is_number(s) and 0.1 <= s <= 20 for s in spacing),
            path, f"stages.{name}.spacing_mm must be 3 numbers in 0.1..20 mm")
    require(isinstance(patch, list) and len(patch) == dims
            and all(is_int(p) and 8 <= p <= 512 for p in patch),
            path, f"stages.{name}.patch_size must be {dims} integers in 8..512")
    members = spec.get("members", 1)
    require(is_int(members) and 1 <= members <= MAX_MEMBERS, path,
            f"stages.{name}.members must be an integer in 1..{MAX_MEMBERS}")
    if name == "fine":
        margin = spec.get("margin_mm")
        require(_is_number(margin) and 0 <= margin <= 200, path,
                "stages.fine.margin_mm must be a number in 0..200")


def _check_scales(inference: dict, path: Path) -> None:
    scales = inference.get("tta_scales", [1.0])
    require(isinstance(scales, list) and 1 <= len(scales) <= MAX_TTA_FLIPS
            and all(_is_number(s) and 0.5 <= s <= 2.0 for s in scales), path,
            f"inference.tta_scales must be 1..{MAX_TTA_FLIPS} numbers in 0.5..2")


def _is_flip(axes: Any) -> bool:
    return (isinstance(axes, list) and all(is_int(a) and 0 <= a <= 2 for a in axes)
            and len(set(axes)) == len(axes))


def _check_inference(inference: Any, path: Path) -> None:
    require(isinstance(inference, dict), path, "inference must be an object")
    missing = [key for key in REQUIRED_INFERENCE_KEYS if key not in inference]
    require(not missing, path, f"inference lacks {missing}")
    flips = inference["tta_flips"]
    require(isinstance(flips, list) and 1 <= len(flips) <= MAX_TTA_FLIPS
            and all(_is_flip(axes) for axes in flips), path,
            f"inference.tta_flips must be 1..{MAX_TTA_FLIPS} lists of distinct array axes 0..2")
    _check_scales(inference, path)
    samples = inference["mc_dropout_samples"]
    require(is_int(samples) and 0 <= samples <= MAX_MC_DROPOUT_SAMPLES, path,
            f"inference.mc_dropout_samples must be an integer in 0..{MAX_MC_DROPOUT_SAMPLES}")
    threshold = inference["uncertainty_threshold"]
    require(_is_number(threshold) and 0 < threshold < 1, path,
            "inference.uncertainty_threshold must be a number in (0, 1)")
    for key, (low, high) in INFERENCE_RANGES.items():
        if key in inference:
            require(_is_number(inference[key]) and low <= inference[key] <= high, path,
                    f"inference.{key} must be a number in {low}..{high}")
    rounds = inference.get("box_growth_rounds", 0)
    require(is_int(rounds) and 0 <= rounds <= MAX_BOX_GROWTH_ROUNDS, path,
            f"inference.box_growth_rounds must be an integer in 0..{MAX_BOX_GROWTH_ROUNDS}")
    require(isinstance(inference.get("organ_touches_coarse", False), bool), path,
            "inference.organ_touches_coarse must be true or false")
    _check_quality(inference.get("quality", {}), path)


def _check_quality(quality: Any, path: Path) -> None:
    """``inference.quality``: the verdict's thresholds (``quality.DEFAULT_QUALITY`` names them)."""
    require(isinstance(quality, dict), path, "inference.quality must be an object")
    unknown = sorted(set(quality) - set(DEFAULT_QUALITY))
    require(not unknown, path, f"inference.quality has unknown keys {unknown}; known: "
            f"{sorted(DEFAULT_QUALITY)}")
    for key, value in quality.items():
        require(_is_number(value) and math.isfinite(value), path,
                f"inference.quality.{key} must be a finite number")
    merged = {**DEFAULT_QUALITY, **quality}
    require(0 <= merged["check_score"] <= merged["ok_score"] <= 1, path,
            "inference.quality needs 0 <= check_score <= ok_score <= 1")


def validate_metadata(metadata: Any, path: Path) -> None:
    """Raise ``BundleError`` naming the first way ``metadata`` breaks format version 1."""
    require(isinstance(metadata, dict), path, "metadata.json must hold a JSON object")
    missing = [key for key in REQUIRED_KEYS if key not in metadata]
    require(not missing, path, f"metadata.json lacks {missing}")
    require(metadata["format"] == FORMAT_NAME, path, f"format must be {FORMAT_NAME!r}")
    require(is_int(metadata["format_version"]) and metadata["format_version"] == FORMAT_VERSION,
            path, f"format_version {short(metadata['format_version'])} is not supported "
            f"(this engine reads {FORMAT_VERSION})")
    for key in ("name", "version", "license"):
        require(isinstance(metadata[key], str) and metadata[key], path, f"{key} must be a string")
    require(isinstance(metadata.get("description", ""), str), path,
            "description must be a string")
    for key in ("provenance", "metrics"):
        require(isinstance(metadata[key], dict), path, f"{key} must be an object")
    labels = metadata["labels"]
    values = [lbl.get("value") if isinstance(lbl, dict) else None for lbl in labels] \
        if isinstance(labels, list) else None
    require(values == list(LABEL_VALUES) and all(is_int(v) for v in values),
            path, f"labels must list values {LABEL_VALUES_TEXT} in order")
    for label in labels[1:]:
        _check_segment_entry(label, path, f"label {label['value']}")
    _check_segment_entry(metadata["uncertain_region"], path, "uncertain_region")
    window = metadata["intensity"].get("hu_window") if isinstance(metadata["intensity"],
                                                                  dict) else None
    require(isinstance(window, list) and len(window) == 2
            and all(_is_number(v) for v in window) and window[0] < window[1],
            path, "intensity.hu_window must be [low, high] HU with low < high")
    require(metadata["intensity"].get("reference", "scan") in INTENSITY_REFERENCES, path,
            f"intensity.reference must be one of {list(INTENSITY_REFERENCES)}")
    stages = metadata["stages"]
    require(isinstance(stages, dict) and set(stages) == set(STAGES), path,
            f"stages must be exactly {list(STAGES)}")
    for name in STAGES:
        _check_stage(name, stages[name], path)
    _check_inference(metadata["inference"], path)
    weights = metadata["weights"]
    require(isinstance(weights, dict) and weights.get("file") == WEIGHTS_FILE
            and isinstance(weights.get("sha256"), str) and len(weights["sha256"]) == 64,
            path, f"weights must be {{'file': '{WEIGHTS_FILE}', 'sha256': <64 hex digits>}}")
