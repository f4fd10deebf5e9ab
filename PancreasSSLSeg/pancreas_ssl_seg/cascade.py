"""The cascade predictor: coarse stage → box → fine stage → labels.

``segment()`` and the training package's evaluation both run these functions, so every figure
measured on held-out data is a figure of what users run. Arrays are canonical (z, y, x)
(``NOTES.md``); boxes are index ranges ``[lo, hi)`` in SimpleITK order (x, y, z) of the
canonical image.

Intensity: ``normalize_ct`` with the soft-tissue reference where the bundle says training
measured it (``ModelBundle.intensity_reference``): ``"slice"`` — each axial slice its own
(2-D stages learn from single slices), measured on the coarse grid's slices and interpolated
along z onto the fine grid's slices; ``"scan"`` — one value for the whole scan.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

from .bundle import ModelBundle, StageSpec
from .geometry import bounding_box, index_range_on
from .inference import predict_stage
from .labels import LESION, PANCREAS
from .postprocess import CONNECTIVITY_26, clean_labels, major_components
from .preprocessing import normalize_ct, resample_to_spacing, soft_tissue_reference

Box = tuple[list[int], list[int]]
DEFAULT_BOX_GROWTH_ROUNDS = 2


@dataclass
class CoarseResult:
    grid: sitk.Image            # the coarse grid's geometry (and HU)
    probabilities: np.ndarray   # (C, z, y, x) mean softmax
    foreground: np.ndarray      # bool (z, y, x): the organ components the box covers
    references: np.ndarray      # (z,) soft-tissue reference HU of each coarse slice


@dataclass
class FineResult:
    grid: sitk.Image            # the fine grid's geometry
    probabilities: np.ndarray   # (C, z, y, x) mean softmax over flips / dropout samples


def slice_references(hu: np.ndarray, mode: str) -> np.ndarray:
    """(z,) reference HU per axial slice of ``hu`` (z, y, x): each its own, or the scan's."""
    if mode == "slice":
        return np.array([soft_tissue_reference(s) for s in hu], np.float32)
    return np.full(hu.shape[0], soft_tissue_reference(hu), np.float32)


def references_on(grid: sitk.Image, coarse: CoarseResult) -> np.ndarray:
    """The coarse slices' references interpolated (linearly, along z) at ``grid``'s slices."""
    coarse_z = [coarse.grid.TransformPhysicalPointToContinuousIndex(
                    grid.TransformIndexToPhysicalPoint((0, 0, k)))[2]
                for k in range(grid.GetSize()[2])]
    return np.interp(coarse_z, np.arange(coarse.references.size),
                     coarse.references).astype(np.float32)


def normalized(hu: np.ndarray, bundle: ModelBundle, references: np.ndarray) -> np.ndarray:
    return normalize_ct(hu, bundle.hu_window, references[:, None, None])


def run_coarse(canonical: sitk.Image, bundle: ModelBundle, device: torch.device,
               overlap: float, members: int = 1) -> CoarseResult:
    """The coarse stage on the whole scan at its spacing (identity flip only), averaged over
    its first ``members`` networks."""
    grid = resample_to_spacing(canonical, bundle.stage("coarse").spacing_mm)
    hu = sitk.GetArrayFromImage(grid)
    references = slice_references(hu, bundle.intensity_reference)
    probabilities = predict_stage(bundle, "coarse", normalized(hu, bundle, references), device,
                                  flips=[[]], overlap=overlap, members=members)
    foreground = major_components(coarse_organ(probabilities, bundle.inference),
                                  float(bundle.inference.get("coarse_component_fraction", 1.0)),
                                  _max_gap(bundle.inference), grid.GetSpacing())
    return CoarseResult(grid, probabilities, foreground, references)


def coarse_organ(probabilities: np.ndarray, inference: dict) -> np.ndarray:
    """Where the coarse stage sees the organ: the argmax's pancreas or lesion, or, with
    ``coarse_organ_threshold`` t, wherever P(pancreas) + P(lesion) reaches t (a lower t finds
    more of a faint pancreas for the box). The box then covers the largest component and those
    at least ``coarse_component_fraction`` of it within ``max_component_gap_mm`` of it (on one
    slice a pancreas often shows as separate head and tail)."""
    threshold = inference.get("coarse_organ_threshold")
    if threshold is None:
        return probabilities.argmax(axis=0) >= PANCREAS
    return probabilities[0] <= 1.0 - float(threshold)


def box_around(grid: sitk.Image, mask: np.ndarray, canonical: sitk.Image,
               margin_mm: float) -> Box | None:
    """Index range of ``canonical`` covering ``mask`` (on ``grid``) grown by ``margin_mm``;
    ``None`` when the mask is empty."""
    box = bounding_box(mask)
    if box is None:
        return None
    low, high = index_range_on(grid, box, canonical)
    margin = margin_mm / np.array(canonical.GetSpacing())
    lo = np.maximum(0, np.floor(low - margin)).astype(int)
    hi = np.minimum(canonical.GetSize(), np.ceil(high + margin) + 1).astype(int)
    return lo.tolist(), hi.tolist()


def grown_to_patch(box: Box, canonical: sitk.Image, spec: StageSpec) -> Box:
    """``box`` grown (about its centre, within the image) to at least the stage's patch in
    every axis the network slides over, so the network sees real anatomy where it would
    otherwise see the inferer's constant padding (training never shows it that)."""
    lo, hi = np.array(box[0]), np.array(box[1])
    size = np.array(canonical.GetSize())
    axes = len(spec.patch_size)  # 2-D: x and y; 3-D: x, y and z
    patch_mm = np.array(spec.patch_size[::-1], float) * np.array(spec.spacing_mm[:axes])
    need = np.zeros(3)
    need[:axes] = np.ceil(patch_mm / np.array(canonical.GetSpacing()[:axes]))
    missing = np.maximum(0, need - (hi - lo))
    lo = np.maximum(0, lo - missing // 2)
    hi = np.minimum(size, np.maximum(hi, lo + need))
    lo = np.maximum(0, np.minimum(lo, hi - need))
    return lo.astype(int).tolist(), hi.astype(int).tolist()


@dataclass(frozen=True)
class TtaSettings:
    """What each stage averages over: the fine stage over its ensemble members, flips (canonical
    array axes), rescaled copies and MC dropout samples; the coarse stage over its members only.
    The one place that says what Fast and Accurate compute."""

    flips: tuple[tuple[int, ...], ...] = ((),)
    scales: tuple[float, ...] = (1.0,)
    mc_dropout_samples: int = 0
    coarse_members: int = 1
    fine_members: int = 1

    @classmethod
    def of(cls, bundle: ModelBundle, fast: bool) -> "TtaSettings":
        """Fast: one plain pass of each stage's first network. Accurate: every network of each
        stage, with the bundle's ``tta_flips``, ``tta_scales`` (default 1 only) and
        ``mc_dropout_samples``."""
        if fast:
            return cls()
        inference = bundle.inference
        return cls(tuple(tuple(axes) for axes in inference["tta_flips"]),
                   tuple(float(s) for s in inference.get("tta_scales", [1.0])),
                   int(inference["mc_dropout_samples"]),
                   bundle.members("coarse"), bundle.members("fine"))

    @property
    def passes(self) -> int:
        """Fine-stage passes per slice."""
        return (len(self.flips) * len(self.scales) * max(1, self.mc_dropout_samples)
                * self.fine_members)


def _scaled_spacing(spec: StageSpec, scale: float) -> list[float]:
    """The stage's spacing times ``scale`` along the axes its network slides over."""
    axes = len(spec.patch_size)
    return [s * scale if axis < axes else s for axis, s in enumerate(spec.spacing_mm)]


def run_fine(canonical: sitk.Image, box: Box, bundle: ModelBundle, device: torch.device,
             coarse: CoarseResult, tta: TtaSettings, overlap: float) -> FineResult:
    """The fine stage on ``box`` (grown to its patch) of the canonical image, at the fine
    stage's spacing; a rescaled copy (``tta.scales``) is predicted at its own spacing and its
    probabilities resampled onto the stage's grid before averaging."""
    spec = bundle.stage("fine")
    lo, hi = grown_to_patch(box, canonical, spec)
    crop = canonical[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    grid = resample_to_spacing(crop, spec.spacing_mm)
    total = None
    for scale in tta.scales:
        scaled = grid if scale == 1.0 else resample_to_spacing(crop, _scaled_spacing(spec, scale))
        probabilities = predict_stage(
            bundle, "fine", normalized(sitk.GetArrayFromImage(scaled), bundle,
                                       references_on(scaled, coarse)),
            device, flips=tta.flips, mc_dropout_samples=tta.mc_dropout_samples, overlap=overlap,
            members=tta.fine_members)
        if scale != 1.0:
            probabilities = _onto_grid(probabilities, scaled, grid)
        total = probabilities if total is None else total + probabilities
    return FineResult(grid, total / len(tta.scales))


def run_fine_growing(canonical: sitk.Image, box: Box, bundle: ModelBundle, device: torch.device,
                     coarse: CoarseResult, tta: TtaSettings, overlap: float,
                     check_box: Callable[[Box], None] | None = None
                     ) -> tuple[FineResult, np.ndarray]:
    """``run_fine`` on ``box`` (grown to the patch) and its ``fine_labels``; then, with the
    bundle's ``box_growth_mm`` g > 0, while the organ those labels keep reaches a side of the box
    that the image continues beyond, that side moves out by g and the fine stage runs again (at
    most ``box_growth_rounds`` times, default 2). Returns the last result (its grid is the box
    it was made in) and its labels; ``check_box`` sees each grown box before it is resampled
    (the memory guard).

    Why: the coarse stage at 3 mm sometimes finds only part of a pancreas (the head without the
    tail); the fine stage, which sees the part it was shown well, runs to the box's edge there
    (NOTES.md, session 8)."""
    inference = bundle.inference
    growth_mm = float(inference.get("box_growth_mm", 0.0))
    rounds = int(inference.get("box_growth_rounds", DEFAULT_BOX_GROWTH_ROUNDS)) if growth_mm else 0
    box = grown_to_patch(box, canonical, bundle.stage("fine"))
    fine = run_fine(canonical, box, bundle, device, coarse, tta, overlap)
    labels = fine_labels(fine, bundle, coarse)
    for _ in range(rounds):
        grown = grown_where_organ_reaches(box, labels >= PANCREAS, canonical, growth_mm)
        if grown is None:
            break
        if check_box is not None:
            check_box(grown)
        box = grown
        fine = run_fine(canonical, box, bundle, device, coarse, tta, overlap)
        labels = fine_labels(fine, bundle, coarse)
    return fine, labels


def grown_where_organ_reaches(box: Box, organ: np.ndarray, canonical: sitk.Image,
                              growth_mm: float) -> Box | None:
    """``box`` with each side that ``organ`` (bool (z, y, x) on the grid resampled from the box)
    reaches with its outermost layer moved out by ``growth_mm`` within the image; ``None`` when
    no side can move."""
    lo, hi = np.array(box[0]), np.array(box[1])
    size = np.array(canonical.GetSize())
    step = np.ceil(growth_mm / np.array(canonical.GetSpacing())).astype(int)
    new_lo, new_hi = lo.copy(), hi.copy()
    for axis in range(3):  # SimpleITK order x, y, z; array axis 2 - axis
        layers = np.moveaxis(organ, 2 - axis, 0)
        if layers[0].any():
            new_lo[axis] = max(0, lo[axis] - step[axis])
        if layers[-1].any():
            new_hi[axis] = min(size[axis], hi[axis] + step[axis])
    if (new_lo == lo).all() and (new_hi == hi).all():
        return None
    return new_lo.tolist(), new_hi.tolist()


def _onto_grid(probabilities: np.ndarray, source: sitk.Image, target: sitk.Image) -> np.ndarray:
    """(C, z, y, x) probabilities on ``source`` resampled (linearly) onto ``target``; edge
    voxels beyond the source's last centre take the nearest value."""
    channels = []
    for channel in probabilities:
        image = sitk.GetImageFromArray(channel)
        image.CopyInformation(source)
        channels.append(sitk.GetArrayFromImage(sitk.Resample(
            image, target, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32, True)))
    stacked = np.stack(channels)
    return stacked / np.maximum(stacked.sum(axis=0, keepdims=True), 1e-6)


def lesion_operating_point(labels: np.ndarray, lesion_probability: np.ndarray,
                           spacing_mm: Sequence[float], threshold: float | None,
                           min_area_mm2: float) -> np.ndarray:
    """Lesion voxels: organ voxels whose lesion probability reaches ``threshold`` (``None``:
    the argmax's own lesion label), in components whose largest axial cross-section reaches
    ``min_area_mm2``; other organ voxels are pancreas. ``spacing_mm`` is (x, y, z)."""
    organ = labels >= PANCREAS
    lesion = labels == LESION if threshold is None else organ & (lesion_probability >= threshold)
    if min_area_mm2 > 0 and lesion.any():
        components, count = ndimage.label(lesion, structure=CONNECTIVITY_26)
        pixel_mm2 = float(spacing_mm[0]) * float(spacing_mm[1])
        # per component, the largest number of its voxels on one axial slice
        per_slice = np.zeros((count + 1, labels.shape[0]), np.int64)
        z = np.nonzero(components)[0]
        np.add.at(per_slice, (components[components > 0], z), 1)
        keep = per_slice.max(axis=1) * pixel_mm2 >= min_area_mm2
        keep[0] = False
        lesion = keep[components]
    out = organ.astype(np.uint8) * PANCREAS
    out[lesion] = LESION
    return out


def fine_labels(fine: FineResult, bundle: ModelBundle,
                coarse: CoarseResult | None = None) -> np.ndarray:
    """uint8 (z, y, x) labels on the fine grid: argmax organ, the bundle's lesion operating
    point, with ``organ_touches_coarse`` (and ``coarse`` given) only the organ components that
    touch the coarse stage's organ, then ``clean_labels`` (largest organ component(s), lesions
    near the pancreas)."""
    inference = bundle.inference
    spacing = fine.grid.GetSpacing()
    threshold = inference.get("lesion_probability_threshold")
    labels = lesion_operating_point(
        fine.probabilities.argmax(axis=0).astype(np.uint8), fine.probabilities[LESION], spacing,
        None if threshold is None else float(threshold),
        float(inference.get("lesion_min_area_mm2", 0.0)))
    if inference.get("organ_touches_coarse", False) and coarse is not None:
        labels = touching_coarse(labels, coarse_organ_on(fine.grid, coarse))
    return clean_labels(labels, spacing, float(inference["min_component_fraction"]),
                        float(inference["lesion_dilation_mm"]), _max_gap(inference))


def _max_gap(inference: dict) -> float | None:
    gap = inference.get("max_component_gap_mm")
    return None if gap is None else float(gap)


def coarse_organ_on(grid: sitk.Image, coarse: CoarseResult) -> np.ndarray:
    """bool (z, y, x): the coarse stage's organ (the components the box covers) on ``grid``."""
    image = sitk.GetImageFromArray(coarse.foreground.astype(np.uint8))
    image.CopyInformation(coarse.grid)
    return sitk.GetArrayFromImage(sitk.Resample(image, grid, sitk.Transform(),
                                                sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)) > 0


def touching_coarse(labels: np.ndarray, coarse_organ: np.ndarray) -> np.ndarray:
    """``labels`` without the organ components (26-connected) that touch no coarse organ voxel.

    Why: the 30 mm box margin shows the fine stage neighbours the coarse stage ruled out; on the
    non-contrast 3 mm CT networks of equal slice accuracy kept a 19 mL piece of stomach as the
    largest "pancreas" (NOTES.md, session 7). Unchanged when no component touches it."""
    components, _ = ndimage.label(labels >= PANCREAS, structure=CONNECTIVITY_26)
    touching = np.unique(components[coarse_organ & (components > 0)])
    if touching.size == 0:
        return labels
    return np.where(np.isin(components, touching), labels, 0).astype(labels.dtype)
