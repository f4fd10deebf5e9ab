"""``segment()``: the engine's entry point, CT in → labels, uncertainty, regions and a report out.

Cascade (``cascade.py``; NOTES.md "Canonical orientation"): reorient to LPS → coarse stage on the
whole scan at its coarse spacing → box around the largest coarse pancreas component, grown by the
fine stage's ``margin_mm`` → fine stage (flip TTA, optional MC dropout) in that box, run again in
a larger box while the kept organ reaches its side (``box_growth_mm``) → lesion operating point
and clean-up → map back onto the input's exact grid. Bundles with 2-D stages
also take a single axial slice. Full-size arrays are uint8/float32/int32 only; class probabilities
exist only in the coarse grid and the fine box, which keeps a 500x500x220 CT within a few GB.
Outside the fine box labels are 0 and the uncertainty is the coarse stage's own (a single pass at
its spacing): where the cascade did not look closely the map still says how sure the model is
(the report's ``uncertainty.definition`` says so). ``quality.py`` judges the result.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import psutil
import SimpleITK as sitk
import torch

from . import __version__
from .bundle import ModelBundle, default_bundle_path, load_bundle
from .ct_plausibility import check_ct_intensities
from .errors import ResourceError
from .geometry import index_range_on, voxel_volume_ml
from .image_io import as_image
from .cascade import (Box, CoarseResult, FineResult, TtaSettings, box_around, run_coarse,
                      run_fine_growing)
from .inference import select_device
from .memory import GridGuard, check_fine_box
from .progress import CASE_DONE, COARSE, FINE, MAPPING, POSTPROCESS, READING, REPORT
from .preprocessing import resample_onto, to_canonical
from .quality import quality_signals, quality_thresholds, verdict
from .report import build_report
from .uncertainty import (REGIONS_SCORE, UNCERTAINTY_FLOOR, normalized_entropy,
                          rank_uncertain_regions, uncertainty_definition)


ProgressCallback = Callable[[str, float, str], None]


@dataclass
class SegmentationResult:
    """Arrays are numpy (z, y, x) on the input's exact grid; ``image`` is the input itself."""

    labels: np.ndarray        # uint8: 0 background, 1 pancreas, 2 lesion
    uncertainty: np.ndarray   # float32 in [0, 1]
    regions: np.ndarray       # int32: 0 none, 1 = highest ranked uncertain region
    report: dict[str, Any]
    image: sitk.Image
    # (C, z, y, x) float32 fine-stage class probabilities (background 1 outside the fine box);
    # only with ``segment(..., keep_probabilities=True)`` (evaluation), else None.
    probabilities: np.ndarray | None = None
    # Array slices (z, y, x) of the input grid the fine stage covered (its box grown to the
    # patch and by ``box_growth_mm``); None when the coarse stage found nothing.
    fine_window: tuple[slice, ...] | None = None

    def to_sitk(self, array: np.ndarray) -> sitk.Image:
        """``array`` as an image with the input's size, spacing, origin and direction."""
        out = sitk.GetImageFromArray(np.asarray(array))
        out.CopyInformation(self.image)
        return out


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far (MB).

    Linux: ``VmHWM`` of this process's own memory; ``ru_maxrss`` would carry over the peak of
    the process that started it (kept across ``exec``: a large parent such as Slicer or pytest
    would be reported as the engine's peak)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    try:
        import resource
        scale = 1024.0 if sys.platform != "darwin" else 2.0**20  # KiB on Linux, bytes on macOS
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale
    except ImportError:  # Windows
        return psutil.Process(os.getpid()).memory_info().peak_wset / 2**20


def _is_canonical(image: sitk.Image) -> bool:
    """Already LPS: reorienting would only copy the volume (0.7 s and 220 MB for 500x500x220)."""
    cosines = image.GetDirection()
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(cosines) == "LPS"


def _resolve_bundle(model) -> ModelBundle:
    if isinstance(model, ModelBundle):
        return model
    return load_bundle(default_bundle_path() if model is None else model)


def _input_window(fine: sitk.Image, image: sitk.Image) -> tuple[slice, ...]:
    """Array slices (z, y, x) of the input grid covering the fine grid's physical extent."""
    low, high = index_range_on(fine, tuple(slice(0, n) for n in fine.GetSize()[::-1]), image)
    lo = np.maximum(0, np.floor(low)).astype(int)
    hi = np.minimum(image.GetSize(), np.ceil(high) + 1).astype(int)
    return tuple(slice(int(lo[a]), int(hi[a])) for a in (2, 1, 0))


def _onto_window(fine: sitk.Image, image: sitk.Image, window: tuple[slice, ...],
                 is_label: bool) -> np.ndarray:
    """Resample a fine-box image onto the input grid's ``window`` only (not the whole grid)."""
    start_xyz = [window[2].start, window[1].start, window[0].start]
    size_xyz = [window[2].stop - window[2].start, window[1].stop - window[1].start,
                window[0].stop - window[0].start]
    out = resample_onto(fine, size=size_xyz, spacing=image.GetSpacing(),
                        origin=image.TransformIndexToPhysicalPoint(start_xyz),
                        direction=image.GetDirection(), is_label=is_label)
    return sitk.GetArrayFromImage(out)


def onto_input_grid(fine_array: np.ndarray, fine: sitk.Image, image: sitk.Image,
                    is_label: bool, fill: float = 0.0) -> np.ndarray:
    """A (z, y, x) array on the fine grid ``fine`` as an array on ``image``'s whole grid
    (``fill`` outside the fine grid's extent)."""
    fine_image = sitk.GetImageFromArray(np.ascontiguousarray(fine_array))
    fine_image.CopyInformation(fine)
    window = _input_window(fine, image)
    resampled = _onto_window(fine_image, image, window, is_label)
    if resampled.shape == tuple(image.GetSize()[::-1]) and resampled.dtype == fine_array.dtype:
        return resampled  # the window is the whole grid (the coarse grid covers the scan)
    out = np.full(image.GetSize()[::-1], fill, dtype=fine_array.dtype)
    out[window] = resampled
    return out


@dataclass
class CascadeOutputs:
    """What ``_run_cascade`` hands back: the coarse stage's result and, when it found the organ,
    the fine stage's labels and uncertainty (canonical images on the fine grid)."""

    coarse: CoarseResult
    fine: FineResult | None = None
    labels: sitk.Image | None = None
    uncertainty: sitk.Image | None = None
    quality_signals: dict[str, Any] | None = None


def _fine_image(array: np.ndarray, fine: FineResult) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(fine.grid)
    return image


def _run_cascade(canonical: sitk.Image, bundle: ModelBundle, device: torch.device, *,
                 tta: TtaSettings, progress: ProgressCallback,
                 timings: dict[str, float]) -> CascadeOutputs:
    overlap = float(bundle.inference["sw_overlap"])
    started = time.perf_counter()
    coarse = run_coarse(canonical, bundle, device, overlap, members=tta.coarse_members)
    timings["coarse"] = time.perf_counter() - started
    extent_z_mm = canonical.GetSize()[2] * canonical.GetSpacing()[2]
    box = box_around(coarse.grid, coarse.foreground, canonical, bundle.stage("fine").margin_mm)
    if box is None:
        return CascadeOutputs(coarse, quality_signals={"found": False,
                                                       "scan_extent_z_mm": extent_z_mm})

    def check_box(box: Box) -> None:
        check_fine_box(np.subtract(box[1], box[0]), canonical.GetSpacing(), bundle,
                       len(tta.flips) * len(tta.scales))

    check_box(box)
    progress(FINE, 0.35, "fine stage: segmenting the pancreas region")
    started = time.perf_counter()
    fine, labels = run_fine_growing(canonical, box, bundle, device, coarse, tta, overlap,
                                    check_box)  # labels: the lesion point and clean-up too
    timings["fine"] = time.perf_counter() - started
    progress(POSTPROCESS, 0.75, "measuring the result's quality")
    started = time.perf_counter()
    entropy = normalized_entropy(fine.probabilities)
    thresholds = quality_thresholds(bundle.inference)
    signals = quality_signals(labels, fine.probabilities, entropy, fine.grid,
                              coarse.probabilities, coarse.grid, extent_z_mm,
                              float(thresholds["outside_uncertainty"]),
                              float(thresholds["near_mm"]))
    timings["postprocess"] = time.perf_counter() - started
    return CascadeOutputs(coarse, fine, _fine_image(labels, fine), _fine_image(entropy, fine),
                          signals)


def _run_cascade_or_on_cpu(canonical: sitk.Image, bundle: ModelBundle, device: torch.device, *,
                           tta: TtaSettings, progress: ProgressCallback,
                           timings: dict[str, float],
                           warnings: list[str]) -> tuple[CascadeOutputs, torch.device]:
    """``_run_cascade`` on ``device`` and, when a GPU runs out of memory, again on the CPU (with
    a warning); returns the outputs and the device that made them."""
    try:
        return _run_cascade(canonical, bundle, device, tta=tta, progress=progress,
                            timings=timings), device
    except torch.cuda.OutOfMemoryError:
        if device.type == "cpu":
            raise ResourceError("the networks ran out of memory on the CPU") from None
        warnings.append(f"GPU ({device}) ran out of memory; the run was repeated on the CPU")
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    cpu = torch.device("cpu")
    return _run_cascade(canonical, bundle, cpu, tta=tta, progress=progress,
                        timings=timings), cpu


def segment(image, model=None, device: str = "auto", uncertainty: bool = True,
            progress: ProgressCallback | None = None, fast: bool = False,
            uncertainty_threshold: float | None = None, *, spacing_mm=None, origin=None,
            direction=None, keep_probabilities: bool = False) -> SegmentationResult:
    """Segment the pancreas and lesions of one CT (path, ``SimpleITK.Image`` or (z, y, x) array
    with ``spacing_mm``/``origin``/``direction``). ``progress(stage, fraction, message)`` gets
    the overall fraction 0..1 and may raise ``CancelledError`` to stop the run."""
    progress = progress or (lambda stage, fraction, message: None)
    total_started = started = time.perf_counter()
    timings: dict[str, float] = {}
    progress(READING, 0.0, "reading the input")
    warnings: list[str] = []
    bundle = _resolve_bundle(model)
    # 2-D stages can segment one axial slice on its own; 3-D stages need a volume.
    single_slice = all(bundle.stage(name).spatial_dims == 2 for name in ("coarse", "fine"))
    input_image = as_image(image, spacing_mm, origin, direction, notes=warnings,
                           single_slice=single_slice,
                           check_grid=GridGuard(lambda: bundle, fast=fast))
    # Percentiles of every voxel of a 500x500x220 CT take 4 s; a 1-in-32 subsample gives the same.
    warnings += check_ct_intensities(input_image[::4, ::4, ::2])
    torch_device = select_device(device)
    inference = bundle.inference
    threshold = float(inference["uncertainty_threshold"] if uncertainty_threshold is None
                      else uncertainty_threshold)
    tta = TtaSettings.of(bundle, fast)
    canonical = input_image if _is_canonical(input_image) else to_canonical(input_image)
    timings["read"] = time.perf_counter() - started
    progress(COARSE, 0.05, "coarse stage: locating the pancreas")
    outputs, torch_device = _run_cascade_or_on_cpu(canonical, bundle, torch_device, tta=tta,
                                                   progress=progress, timings=timings,
                                                   warnings=warnings)
    del canonical  # a reoriented copy is a full-size volume: freed before the maps are made

    progress(MAPPING, 0.85, "mapping the results onto the input grid")
    started = time.perf_counter()
    size_zyx = input_image.GetSize()[::-1]
    labels = np.zeros(size_zyx, np.uint8)
    uncertainty_map = np.zeros(size_zyx, np.float32)
    if uncertainty:  # the coarse stage's own uncertainty where the fine stage did not look
        uncertainty_map = onto_input_grid(normalized_entropy(outputs.coarse.probabilities),
                                          outputs.coarse.grid, input_image, is_label=False)
    probabilities = window = None
    if outputs.fine is None:
        warnings.append("no pancreas was found by the coarse stage; labels are empty")
    else:
        fine = outputs.fine
        if keep_probabilities:
            probabilities = np.stack([
                onto_input_grid(channel, fine.grid, input_image, is_label=False,
                                fill=float(index == 0))
                for index, channel in enumerate(fine.probabilities)])
        window = _input_window(outputs.labels, input_image)
        labels[window] = _onto_window(outputs.labels, input_image, window, is_label=True)
        if uncertainty:
            uncertainty_map[window] = _onto_window(outputs.uncertainty, input_image, window,
                                                   is_label=False)
        if not labels.any():
            warnings.append("the fine stage found no pancreas; labels are empty")
    np.clip(uncertainty_map, 0.0, 1.0, out=uncertainty_map)
    uncertainty_map[uncertainty_map < UNCERTAINTY_FLOOR] = 0.0
    regions_map, regions = (rank_uncertain_regions(
        uncertainty_map, labels, threshold, voxel_volume_ml(input_image),
        float(inference.get("region_min_volume_ml", 0.0))) if uncertainty
        else (np.zeros(size_zyx, np.int32), []))
    quality = verdict(outputs.quality_signals, quality_thresholds(inference))
    timings["mapping"] = time.perf_counter() - started

    progress(REPORT, 0.95, "writing the report")
    started = time.perf_counter()
    report = build_report(image=input_image, labels=labels,
                          uncertainty=uncertainty_map if uncertainty else None, regions=regions,
                          metadata=bundle.metadata, engine_version=__version__,
                          device=str(torch_device), mode="fast" if fast else "accurate",
                          threshold=threshold,
                          uncertainty_definition=uncertainty_definition(tta, bundle),
                          regions_score=REGIONS_SCORE, quality=quality, warnings=warnings,
                          timings_s=timings,
                          peak_memory_mb=peak_memory_mb())
    report["timings_s"]["report"] = time.perf_counter() - started
    report["timings_s"]["total"] = time.perf_counter() - total_started
    progress(CASE_DONE, 1.0, "finished")
    if keep_probabilities and probabilities is None:  # nothing found: certain background
        probabilities = np.zeros((len(bundle.labels), *size_zyx), np.float32)
        probabilities[0] = 1.0
    return SegmentationResult(labels=labels, uncertainty=uncertainty_map, regions=regions_map,
                              report=report, image=input_image, probabilities=probabilities,
                              fine_window=window)
