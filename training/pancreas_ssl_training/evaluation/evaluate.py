"""Run a trained model on labelled data and write its metrics: ``run_evaluation(model, data, out)``.

One inference path: every case goes through the engine's own predictor. A model with both
stages (a bundle folder, or a training checkpoint holding both) is run as users run it —
``pancreas_ssl_seg.segment`` (resampling, the bundle's intensity reference, test-time flips,
cascade box, lesion operating point, clean-up, mapping back onto the input grid); NIH slices go
in as single axial slices. A checkpoint holding one stage is run through the engine's fine-stage
predictor on the whole image (``mode: "stage"``; e.g. the domain-shift experiment's models).

Per-stage diagnostics of a cascade (pancreas rows of ``cases.csv``): ``coarse_hit`` (the coarse
stage's largest component touches the true pancreas), ``box_coverage`` (fraction of the true
pancreas inside the coarse stage's box grown by the margin), ``fine_box_coverage`` (fraction
inside the region the fine stage finally looked at: that box grown to the fine patch and, with the
bundle's ``box_growth_mm``, where the organ reached its sides), ``dice_true_box`` (pancreas Dice of
the fine stage run in the box around the *true* pancreas grown by the same margin: the fine
stage's own accuracy).

``data``: a YAML file or mapping, with the keys of a config's ``data.sources``: slice sources
(``nih_hu``, ``nih_8bit`` with optional ``patients``; each slice one case) and volume sources
(``task07``, ``nih_dicom``, ``folders``, ``corrections``, ``volumes``; see
``data.volumes.volume_cases_from_spec``; each volume one 3-D case). Optional
``evaluation``: ``{"surface_tolerance_mm", "uncertainty_threshold", "tta_flip"}``
(``tta_flip: false`` = the engine's Fast mode). 8-bit slices are fed as they are (grey levels
taken for HU) unless ``grey_to_hu: {"data_root", "method"?}`` maps them to HU first (the fit of
``data.intensity_mapping.estimate_grey_mapping``, as the trainer's ``data.grey_to_hu``).
``corruption: {"name", "severity", "seed"?}`` applies one acquisition shift of
``evaluation.corruptions`` to every slice (in HU: 8-bit slices need ``grey_to_hu``), with a
seed per slice from ``seed`` and the slice's name; labels are left as they are.

Writes to ``out_dir``: ``cases.csv`` (one row per case and region), ``calibration.csv`` (one row
per case), ``summary.csv`` + ``summary.md`` (mean ± sd per source and region), ``dice.png`` and
``hd95_mm.png`` (box plots per source), ``evaluation.json`` (what was run, and the summary).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch
import yaml

from pancreas_ssl_seg.bundle import ModelBundle, load_bundle
from pancreas_ssl_seg.bundle_format import METADATA_FILE, STAGES
from pancreas_ssl_seg.cascade import (Box, CoarseResult, FineResult, TtaSettings,
                                       box_around, fine_labels, run_coarse, run_fine,
                                       slice_references)
from pancreas_ssl_seg.errors import BundleError, InputError
from pancreas_ssl_seg.inference import select_device
from pancreas_ssl_seg.labels import PANCREAS
from pancreas_ssl_seg.pipeline import onto_input_grid, segment
from pancreas_ssl_seg.uncertainty import normalized_entropy

from ..checkpoint import STATE_FILE, load_checkpoint
from ..config import resolve_config
from ..data.slice_datasets import ASSUMED_NIH_SPACING_MM, build_slice_sources
from ..data.intensity_mapping import estimate_grey_mapping, to_hu
from ..data.slices import read_canonical, remap_labels
from ..data.volumes import VOLUME_SPEC_KEYS, volume_cases_from_spec
from ..export import in_memory_bundle
from .calibration import error_uncertainty_overlap, expected_calibration_error
from .corruptions import case_seed, corrupt
from .metrics import DEFAULT_SURFACE_TOLERANCE_MM, METRIC_NAMES, case_metrics, mask_dice
from .plots import box_plot
from .tables import summarize, write_csv, write_markdown

SLICE_SOURCE_KEYS = ("nih_hu", "nih_8bit")


@dataclass
class EvaluatedModel:
    """The model as the engine runs it, and how it is run."""

    bundle: ModelBundle
    origin: str
    mode: str               # "cascade" (segment()) or "stage" (one stage on the whole image)
    stage: str              # the stage evaluated alone, or "cascade"
    tta_flip: bool = True   # False: one pass, as the engine's Fast mode


def load_model(path: str | Path) -> EvaluatedModel:
    """A bundle folder, or a checkpoint folder as the bundle its export would write."""
    path = Path(path)
    if (path / METADATA_FILE).is_file():
        return EvaluatedModel(load_bundle(path), f"bundle {path}", "cascade", "cascade")
    if (path / STATE_FILE).is_file():
        checkpoint = load_checkpoint(path)
        trained = [s for s in STAGES if s in checkpoint.progress.get("completed", [])]
        if not trained:
            raise BundleError(f"checkpoint {path}: no trained stage")
        config = resolve_config(checkpoint.config)
        if len(trained) == len(STAGES):
            return EvaluatedModel(in_memory_bundle(config, checkpoint.network_states),
                                  f"checkpoint {path}", "cascade", "cascade")
        stage = trained[-1]  # the one stage, run in the fine stage's place
        states = {"fine": checkpoint.network_states[stage]}
        stages = {"fine": {**config["stages"][stage], "margin_mm": 0.0}}
        return EvaluatedModel(in_memory_bundle({**config, "stages": stages}, states),
                              f"checkpoint {path}", "stage", stage)
    raise BundleError(f"{path}: expected a model bundle folder ({METADATA_FILE}) or a training "
                      f"checkpoint folder ({STATE_FILE})")


def read_data_spec(data: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(data, Mapping):
        return dict(data)
    path = Path(data)
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"data spec {path}: expected a readable YAML file ({exc})") from None
    if not isinstance(spec, dict):
        raise InputError(f"data spec {path}: expected a mapping with keys "
                         f"{[*SLICE_SOURCE_KEYS, *VOLUME_SPEC_KEYS, 'grey_to_hu', 'evaluation']}")
    return spec


def _tta(model: EvaluatedModel) -> TtaSettings:
    """Accurate mode's test-time augmentation without MC dropout (deterministic figures), or
    Fast mode's single pass."""
    return dataclasses.replace(TtaSettings.of(model.bundle, not model.tta_flip),
                               mc_dropout_samples=0)


def _probabilities_on_input(fine: FineResult, image: sitk.Image) -> np.ndarray:
    """(C, z, y, x) fine-stage probabilities on the input grid; background outside the box."""
    channels = [onto_input_grid(p, fine.grid, image, is_label=False, fill=float(c == 0))
                for c, p in enumerate(fine.probabilities)]
    stacked = np.stack(channels)
    return stacked / np.maximum(stacked.sum(axis=0, keepdims=True), 1e-6)


def _fine_on_box(model: EvaluatedModel, image: sitk.Image, box: Box, coarse: CoarseResult,
                 device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) of the fine stage run in ``box``, on the input grid."""
    fine = run_fine(image, box, model.bundle, device, coarse, _tta(model),
                    float(model.bundle.inference["sw_overlap"]))
    labels = onto_input_grid(fine_labels(fine, model.bundle), fine.grid, image, is_label=True)
    return labels, _probabilities_on_input(fine, image)


def predict(model: EvaluatedModel, image: sitk.Image, truth: np.ndarray, device: torch.device
            ) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """(labels, probabilities (C, z, y, x), diagnostics) of a canonical ``image``."""
    bundle = model.bundle
    if model.mode == "stage":
        references = slice_references(sitk.GetArrayFromImage(image), bundle.intensity_reference)
        whole = ([0, 0, 0], list(image.GetSize()))
        labels, probabilities = _fine_on_box(model, image, whole,
                                             CoarseResult(image, None, None, references), device)
        return labels, probabilities, {}
    result = segment(image, model=bundle, device=str(device), fast=not model.tta_flip,
                     keep_probabilities=True)
    diagnostics = stage_diagnostics(model, image, truth, device)
    diagnostics["fine_box_coverage"] = _coverage(result.fine_window, truth >= PANCREAS)
    return result.labels, result.probabilities, diagnostics


def stage_diagnostics(model: EvaluatedModel, image: sitk.Image, truth: np.ndarray,
                      device: torch.device) -> dict[str, float]:
    """Per-stage figures of a cascade on a canonical ``image`` with labels ``truth``: the same
    coarse pass as ``segment()``'s, and the fine stage given the box around the true pancreas
    (see the module docstring)."""
    bundle = model.bundle
    overlap, margin = float(bundle.inference["sw_overlap"]), bundle.stage("fine").margin_mm
    coarse = run_coarse(image, bundle, device, overlap, members=_tta(model).coarse_members)
    true_pancreas = truth >= PANCREAS
    coarse_box = box_around(coarse.grid, coarse.foreground, image, margin)
    coarse_found = onto_input_grid(coarse.foreground.astype(np.uint8), coarse.grid, image,
                                   is_label=True)
    diagnostics = {"coarse_hit": float(bool((coarse_found & true_pancreas).any())),
                   "box_coverage": _coverage(_box_window(coarse_box), true_pancreas)}
    true_box = box_around(image, true_pancreas, image, margin)
    if true_box is not None:
        true_box_labels, _ = _fine_on_box(model, image, true_box, coarse, device)
        diagnostics["dice_true_box"] = mask_dice(true_box_labels >= PANCREAS, true_pancreas)
    return diagnostics


def _box_window(box: Box | None) -> tuple[slice, ...] | None:
    """A box (index ranges, SimpleITK order x, y, z) as array slices (z, y, x)."""
    if box is None:
        return None
    lo, hi = box
    return tuple(slice(lo[axis], hi[axis]) for axis in (2, 1, 0))


def _coverage(window: tuple[slice, ...] | None, mask: np.ndarray) -> float:
    """Fraction of ``mask`` inside ``window`` (array slices; ``None``: nothing looked at)."""
    if not mask.any():
        return float("nan")
    return 0.0 if window is None else float(mask[window].sum() / mask.sum())


def _slice_image(array: np.ndarray, spacing_xy: tuple[float, float]) -> sitk.Image:
    """One axial slice as a canonical 3-D image one slice thick (what the engine makes of a
    2-D input)."""
    image = sitk.GetImageFromArray(np.asarray(array, dtype=np.float32)[None])
    image.SetSpacing([float(spacing_xy[0]), float(spacing_xy[1]), 1.0])
    return image


@functools.lru_cache(maxsize=4)
def _grey_mapping(data_root: str, method: str):
    """The 8-bit -> HU fit, once per process (it reads every NIH slice of patients 0001-0003)."""
    return estimate_grey_mapping(data_root, method)


def labelled_cases(spec: Mapping[str, Any]):
    """Yield ``(info, canonical image, labels (z, y, x))``: slices of the slice sources (one
    slice thick), then each volume whole."""
    slice_spec = {key: spec[key] for key in SLICE_SOURCE_KEYS if key in spec}
    grey_to_hu = spec.get("grey_to_hu")
    mapping = None if not grey_to_hu else _grey_mapping(
        str(grey_to_hu["data_root"]), grey_to_hu.get("method", "percentile"))
    corruption = spec.get("corruption")
    if corruption and any(key in spec for key in VOLUME_SPEC_KEYS):
        raise InputError("data spec: 'corruption' applies to slice sources (nih_hu, nih_8bit) "
                         "only")
    for sample in build_slice_sources(slice_spec) if slice_spec else []:
        spacing = tuple(sample.spacing_mm or ASSUMED_NIH_SPACING_MM)
        image, units = sample.image, sample.units
        if units == "8bit" and mapping is not None:
            image, units = to_hu(image, mapping), "8bit-mapped-hu"
        info = {"source": sample.source, "case": sample.case, "patient": sample.patient,
                "units": units}
        if corruption:
            image = _corrupted(image, units, spacing, sample.case, corruption, mapping)
            info.update(corruption=corruption["name"], severity=int(corruption["severity"]))
        yield info, _slice_image(image, spacing), sample.label[None]
    for volume in volume_cases_from_spec(spec):
        if volume.label_path is None:
            raise InputError(f"{volume.image_path}: evaluation needs a label map for every case")
        image = read_canonical(volume.image_path, "CT image")
        label_image = read_canonical(volume.label_path, "label map")
        labels = remap_labels(sitk.GetArrayFromImage(label_image), volume.label_map)
        if labels.shape != sitk.GetArrayViewFromImage(image).shape:
            raise InputError(f"{volume.label_path}: expected the grid of {volume.image_path}")
        info = {"source": volume.source, "case": volume.case,
                "patient": volume.patient or volume.case, "units": "hu"}
        yield info, image, labels


def _corrupted(image: np.ndarray, units: str, spacing_xy: tuple[float, float], case: str,
               corruption: Mapping[str, Any], mapping) -> np.ndarray:
    """``image`` (HU) under the spec's corruption; the window corruption reads back with the
    8-bit mapping in use (its window), as the pipeline would."""
    if units == "8bit":
        raise InputError("data spec: 'corruption' needs slices in HU; add grey_to_hu for the "
                         "8-bit slices")
    options = {} if mapping is None else {"source_window_hu": mapping.window_hu}
    seed = case_seed(int(corruption.get("seed", 0)), case)
    try:
        return corrupt(image, str(corruption["name"]), int(corruption["severity"]), spacing_xy,
                       seed, **options)
    except (KeyError, ValueError) as exc:
        raise InputError(f"data spec: corruption {dict(corruption)}: {exc}") from None


def evaluate_case(model: EvaluatedModel, image: sitk.Image, labels: np.ndarray,
                  surface_tolerance_mm: float, uncertainty_threshold: float,
                  device: torch.device) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(metric rows per region, calibration row) of one canonical case; a one-slice case is
    scored as the 2-D slice it is."""
    predicted, probabilities, diagnostics = predict(model, image, labels, device)
    spacing_array_order = tuple(reversed(image.GetSpacing()))
    if labels.shape[0] == 1:
        predicted, labels, probabilities = predicted[0], labels[0], probabilities[:, 0]
        spacing_array_order = spacing_array_order[1:]
    rows = case_metrics(predicted, labels, spacing_array_order,
                        surface_tolerance_mm=surface_tolerance_mm)
    for row in rows:
        if row["region"] == "pancreas":
            row.update(diagnostics)
    ece = expected_calibration_error(probabilities, labels)
    overlap = error_uncertainty_overlap(predicted, labels, normalized_entropy(probabilities),
                                        uncertainty_threshold)
    calibration = {"ece_pancreas": ece[1], "ece_lesion": ece[2], **overlap}
    return rows, calibration


def _nan_to_none(value: Any) -> Any:
    """JSON has no NaN: undefined metrics become ``null``."""
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def run_evaluation(model: str | Path, data_spec: str | Path | Mapping[str, Any],
                   out_dir: str | Path, *, device: str = "auto",
                   extra_columns: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate ``model`` on ``data_spec``, write the files listed above; return the summary.

    ``extra_columns`` (e.g. ``{"method": "baseline", "seed": 0}``) are prepended to every row.
    """
    started = time.time()
    spec = read_data_spec(data_spec)
    settings = spec.get("evaluation", {}) or {}
    loaded = load_model(model)
    loaded.tta_flip = bool(settings.get("tta_flip", True))
    torch_device = select_device(device)
    tolerance = float(settings.get("surface_tolerance_mm", DEFAULT_SURFACE_TOLERANCE_MM))
    threshold = float(settings.get("uncertainty_threshold",
                                   loaded.bundle.inference["uncertainty_threshold"]))
    extra = dict(extra_columns or {})
    case_rows, calibration_rows = [], []
    for info, image, labels in labelled_cases(spec):
        rows, calibration = evaluate_case(loaded, image, labels, tolerance, threshold,
                                          torch_device)
        case_rows += [{**extra, **info, **row} for row in rows]
        calibration_rows.append({**extra, **info, **calibration})
    if not case_rows:
        raise InputError("data spec: expected at least one labelled case "
                         f"({[*SLICE_SOURCE_KEYS, *VOLUME_SPEC_KEYS]})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_csv(case_rows, out / "cases.csv")
    write_csv(calibration_rows, out / "calibration.csv")
    group = ("source", "region")
    summary = summarize(case_rows, group, METRIC_NAMES)
    write_csv(summary, out / "summary.csv")
    write_markdown(summary, group, METRIC_NAMES, out / "summary.md",
                   title=f"Evaluation of {loaded.origin} ({loaded.stage})",
                   digits={"hd95_mm": 1})
    pancreas_rows = [row for row in case_rows if row["region"] == "pancreas"]
    for metric in ("dice", "hd95_mm"):
        box_plot(pancreas_rows, metric, "source", out / f"{metric}.png",
                 title=f"Pancreas {metric} per source")
    calibration_summary = summarize(calibration_rows, ("source",),
                                    ("ece_pancreas", "error_uncertainty_dice"))
    result = {"model": loaded.origin, "mode": loaded.mode, "stage": loaded.stage,
              "cases": len(calibration_rows),
              "tta_flip": loaded.tta_flip,
              "surface_tolerance_mm": tolerance, "uncertainty_threshold": threshold,
              "summary": summary, "calibration": calibration_summary,
              "seconds": round(time.time() - started, 1)}
    (out / "evaluation.json").write_text(json.dumps(_nan_to_none(result), indent=2) + "\n",
                                         encoding="utf-8")
    return result
