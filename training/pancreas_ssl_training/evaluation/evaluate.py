"""Run a trained model on labelled data and write its metrics: ``run_evaluation(model, data, out)``.

``model``: a bundle folder (``metadata.json`` …) or a training checkpoint folder (``state.json``
…). One stage's network is evaluated: by default the finest one it has (``fine``, else
``coarse``); inference uses the network without SSL heads, as an exported bundle would.

``data``: a YAML file or mapping, with the keys of a config's ``data.sources``: slice sources
(``nih_hu``, ``nih_8bit`` with optional ``patients``; each slice one case) and volume sources
(``task07``, ``nih_dicom``, ``folders``, ``corrections``, ``volumes``; see
``data.volumes.volume_cases_from_spec``; each volume one 3-D case). Optional
``evaluation``: ``{"stage", "surface_tolerance_mm", "uncertainty_threshold", "tta_flip"}``. 8-bit slices are
fed to the network as they are (grey levels taken for HU), like ``SliceDataset(to_hu=None)``,
unless ``grey_to_hu: {"data_root", "method"?}`` maps them to HU first (the fit of
``data.intensity_mapping.estimate_grey_mapping``, as the trainer's ``data.grey_to_hu``).

Prediction: resample to the stage's spacing (SimpleITK), ``normalize_ct`` with the per-slice
(2-D) or per-volume (3-D) soft-tissue reference, MONAI sliding-window inference, softmax averaged
over a left–right flip, probabilities resampled back onto the input grid. Uncertainty: normalised
entropy of those probabilities.

Writes to ``out_dir``: ``cases.csv`` (one row per case and region), ``calibration.csv`` (one row
per case), ``summary.csv`` + ``summary.md`` (mean ± sd per source and region), ``dice.png`` and
``hd95_mm.png`` (box plots per source), ``evaluation.json`` (what was run, and the summary).
"""

from __future__ import annotations

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
from monai.inferers import sliding_window_inference

from PancreasSSLSegLib.bundle import METADATA_FILE, load_bundle
from PancreasSSLSegLib.errors import BundleError, InputError
from PancreasSSLSegLib.networks import PancreasUNet, build_network
from PancreasSSLSegLib.preprocessing import normalize_ct, resample_to_spacing, soft_tissue_reference

from ..bundle_metadata import INFERENCE_DEFAULTS
from ..checkpoint import STATE_FILE, load_checkpoint
from ..config import STAGE_NAMES
from ..data.datasets import ASSUMED_NIH_SPACING_MM, build_slice_sources
from ..data.intensity_mapping import estimate_grey_mapping, to_hu
from ..data.slices import read_canonical, remap_labels
from ..data.volumes import VOLUME_SPEC_KEYS, volume_cases_from_spec
from ..export import inference_state
from .calibration import error_uncertainty_overlap, expected_calibration_error, normalized_entropy
from .metrics import DEFAULT_SURFACE_TOLERANCE_MM, METRIC_NAMES, case_metrics
from .plots import box_plot
from .tables import summarize, write_csv, write_markdown

SLICE_SOURCE_KEYS = ("nih_hu", "nih_8bit")
SW_OVERLAP = 0.25
INFERENCE_CHUNK = 16


@dataclass
class EvaluatedModel:
    """One stage's inference network and what is needed to feed it."""

    network: PancreasUNet
    stage: str
    spacing_mm: tuple[float, float, float]  # (x, y, z)
    patch_size: tuple[int, ...]
    hu_window: tuple[float, float]
    uncertainty_threshold: float
    origin: str
    tta_flip: bool = True  # average with a left-right flipped pass (halves the cost when off)

    @property
    def spatial_dims(self) -> int:
        return int(self.network.config["spatial_dims"])

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_model(path: str | Path, stage: str | None = None,
               device: torch.device | str = "cpu") -> EvaluatedModel:
    """A bundle or checkpoint folder's stage network, in eval mode on ``device``."""
    path = Path(path)
    if (path / METADATA_FILE).is_file():
        bundle = load_bundle(path)
        stage = stage or "fine"
        spec = bundle.stage(stage)
        return EvaluatedModel(bundle.load_network(stage, device), stage, spec.spacing_mm,
                              spec.patch_size, bundle.hu_window,
                              float(bundle.inference["uncertainty_threshold"]), f"bundle {path}")
    if (path / STATE_FILE).is_file():
        checkpoint = load_checkpoint(path)
        completed = checkpoint.progress.get("completed", [])
        stage = stage or next((s for s in reversed(STAGE_NAMES) if s in completed), None)
        if stage not in completed:
            raise BundleError(f"checkpoint {path}: stage {stage!r} is not trained "
                              f"(trained: {completed})")
        spec = checkpoint.config["stages"][stage]
        config, weights = inference_state(spec, checkpoint.network_states[stage])
        network = build_network(config)
        network.load_state_dict(weights)
        inference = {**INFERENCE_DEFAULTS, **checkpoint.config.get("export", {}).get("inference",
                                                                                     {})}
        window = spec["data"]["hu_window"]
        return EvaluatedModel(network.eval().to(device), stage,
                              tuple(float(s) for s in spec["spacing_mm"]),
                              tuple(int(p) for p in spec["patch_size"]),
                              (float(window[0]), float(window[1])),
                              float(inference["uncertainty_threshold"]), f"checkpoint {path}")
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


@torch.no_grad()
def _network_probabilities(model: EvaluatedModel, normalized: np.ndarray) -> np.ndarray:
    """Softmax ``(N, C, *spatial)`` of normalised images ``(N, *spatial)``, averaged over a
    left–right flip unless ``model.tta_flip`` is off; images go through the network in chunks (few large calls beat many small
    ones on a CPU)."""
    outputs = []
    for start in range(0, normalized.shape[0], INFERENCE_CHUNK):
        chunk = np.ascontiguousarray(normalized[start:start + INFERENCE_CHUNK], dtype=np.float32)
        tensor = torch.from_numpy(chunk)[:, None].to(model.device)
        total = None
        # the last array axis is x (patient left) in 2-D and 3-D alike
        flips = ((), (-1,)) if model.tta_flip else ((),)
        for flip in flips:
            flipped = torch.flip(tensor, flip) if flip else tensor
            logits = sliding_window_inference(flipped, model.patch_size,
                                              sw_batch_size=INFERENCE_CHUNK,
                                              predictor=model.network, overlap=SW_OVERLAP,
                                              mode="gaussian")
            probabilities = torch.softmax(logits.float(), dim=1)
            probabilities = torch.flip(probabilities, flip) if flip else probabilities
            total = probabilities if total is None else total + probabilities
        outputs.append((total / len(flips)).cpu().numpy())
    return np.concatenate(outputs)


def _back_to_grid(probabilities: np.ndarray, resampled: sitk.Image,
                  original: sitk.Image) -> np.ndarray:
    """Resample each class channel onto ``original``'s grid and renormalise to sum 1."""
    channels = []
    for channel in probabilities:
        image = sitk.GetImageFromArray(channel.astype(np.float32))
        image.CopyInformation(resampled)
        # Not preprocessing.resample_like: the input's edge pixels can lie beyond the last
        # resampled pixel centre, and they need the nearest probability, not a default of 0.
        back = sitk.Resample(image, original, sitk.Transform(), sitk.sitkLinear, 0.0,
                             sitk.sitkFloat32, True)
        channels.append(sitk.GetArrayFromImage(back))
    stacked = np.stack(channels)
    return stacked / np.maximum(stacked.sum(axis=0, keepdims=True), 1e-6)


def predict_probabilities(model: EvaluatedModel, image: sitk.Image) -> np.ndarray:
    """Class probabilities ``(C, *array shape)`` on ``image``'s grid (2-D slice or 3-D volume).

    A 2-D network sees each axial slice of a volume on its own (in-plane resampling only, and a
    per-slice intensity reference, as in training); a 3-D network needs a volume.
    """
    dims = image.GetDimension()
    if model.spatial_dims == 3 and dims == 2:
        raise InputError(f"{model.origin}: the {model.stage} stage is 3-D and cannot segment "
                         "2-D slices")
    spacing = list(model.spacing_mm[:dims])
    if model.spatial_dims == 2 and dims == 3:
        spacing[2] = image.GetSpacing()[2]
    pad_hu = float(sitk.GetArrayViewFromImage(image).min())  # air (HU) or black (8-bit)
    resampled = resample_to_spacing(image, spacing, default_value=pad_hu)
    hu = sitk.GetArrayFromImage(resampled).astype(np.float32)
    if model.spatial_dims == 2:
        slices = hu.reshape(-1, *hu.shape[-2:])
        batch = np.stack([normalize_ct(s, model.hu_window, soft_tissue_reference(s))
                          for s in slices])
        per_slice = _network_probabilities(model, batch)  # (slices, C, y, x)
        probabilities = np.moveaxis(per_slice, 1, 0).reshape(-1, *hu.shape)
    else:
        normalized = normalize_ct(hu, model.hu_window, soft_tissue_reference(hu))
        probabilities = _network_probabilities(model, normalized[None])[0]
    return _back_to_grid(probabilities, resampled, image)


def _slice_image(array: np.ndarray, spacing_xy: tuple[float, float]) -> sitk.Image:
    image = sitk.GetImageFromArray(np.asarray(array, dtype=np.float32))
    image.SetSpacing([float(s) for s in spacing_xy])
    return image


def labelled_cases(spec: Mapping[str, Any]):
    """Yield ``(info, image, labels)``: slices of the slice sources, then each volume whole."""
    slice_spec = {key: spec[key] for key in SLICE_SOURCE_KEYS if key in spec}
    grey_to_hu = spec.get("grey_to_hu")
    mapping = None if not grey_to_hu else estimate_grey_mapping(
        grey_to_hu["data_root"], grey_to_hu.get("method", "percentile"))
    for sample in build_slice_sources(slice_spec) if slice_spec else []:
        spacing = tuple(sample.spacing_mm or ASSUMED_NIH_SPACING_MM)
        image, units = sample.image, sample.units
        if units == "8bit" and mapping is not None:
            image, units = to_hu(image, mapping), "8bit-mapped-hu"
        info = {"source": sample.source, "case": sample.case, "patient": sample.patient,
                "units": units}
        yield info, _slice_image(image, spacing), sample.label
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


def evaluate_case(model: EvaluatedModel, image: sitk.Image, labels: np.ndarray,
                  surface_tolerance_mm: float, uncertainty_threshold: float
                  ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(metric rows per region, calibration row) of one case."""
    probabilities = predict_probabilities(model, image)
    predicted = probabilities.argmax(axis=0).astype(np.uint8)
    spacing_array_order = tuple(reversed(image.GetSpacing()))
    rows = case_metrics(predicted, labels, spacing_array_order,
                        surface_tolerance_mm=surface_tolerance_mm)
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
    loaded = load_model(model, settings.get("stage"), pick_device(device))
    loaded.tta_flip = bool(settings.get("tta_flip", True))
    tolerance = float(settings.get("surface_tolerance_mm", DEFAULT_SURFACE_TOLERANCE_MM))
    threshold = float(settings.get("uncertainty_threshold", loaded.uncertainty_threshold))
    extra = dict(extra_columns or {})
    case_rows, calibration_rows = [], []
    for info, image, labels in labelled_cases(spec):
        rows, calibration = evaluate_case(loaded, image, labels, tolerance, threshold)
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
                   title=f"Evaluation of {loaded.origin} ({loaded.stage} stage)",
                   digits={"hd95_mm": 1})
    pancreas_rows = [row for row in case_rows if row["region"] == "pancreas"]
    for metric in ("dice", "hd95_mm"):
        box_plot(pancreas_rows, metric, "source", out / f"{metric}.png",
                 title=f"Pancreas {metric} per source")
    calibration_summary = summarize(calibration_rows, ("source",),
                                    ("ece_pancreas", "error_uncertainty_dice"))
    result = {"model": loaded.origin, "stage": loaded.stage, "cases": len(calibration_rows),
              "tta_flip": loaded.tta_flip,
              "surface_tolerance_mm": tolerance, "uncertainty_threshold": threshold,
              "summary": summary, "calibration": calibration_summary,
              "seconds": round(time.time() - started, 1)}
    (out / "evaluation.json").write_text(json.dumps(_nan_to_none(result), indent=2) + "\n",
                                         encoding="utf-8")
    return result
