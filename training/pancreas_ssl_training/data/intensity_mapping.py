"""Estimate and invert the unrecorded display mapping of the NIH 8-bit slices: ``grey ≈ a·HU + b``.

Patients 0001–0003 are in both NIH folders but no slice is in both, so the mapping is estimated
from neighbouring slices of the same patient, two ways:

- ``"neighbour"``: pair each 8-bit slice with its best-correlated HU slice of the same patient and
  least-squares fit the unsaturated pixel pairs. Anatomy differs between neighbours, and that
  noise in HU biases the slope towards 0 (regression dilution).
- ``"percentile"``: per patient, pair the quantiles of all its grey levels with the same quantiles
  of all its HU values (only ranks where grey is unsaturated) and fit a line to those pairs.
  Misregistration does not enter; it assumes neighbouring slices share their intensity histogram.

Grey levels 0 and 255 are saturated: the true HU is anywhere below / above the window edge and
cannot be recovered (:func:`saturated_mask` marks them). The fitted window is narrow (about
−11…280 HU), so fat saturates at 0; left at the window edge (−11 HU) it would count as soft
tissue and drag the per-slice reference of ``normalize_ct`` to the edge. :func:`to_hu` therefore
fills saturated-low pixels with fat (−100 HU) inside the body and dark pixels outside it with air
(−1024 HU) — an assumption (bowel gas inside the body also becomes −100); saturated-high pixels
stay at the upper edge (near the usual ``hu_window`` top of 300 HU anyway).

Measured on patients 0001–0003 (command:
``python -m pancreas_ssl_training.data.intensity_mapping ../shared/data``):
- percentile: grey = 0.877·HU + 9.34 (window −10.7…280.1 HU); pixel-pair residual 51.8 grey
  = 59.0 HU; pancreas mean HU error −1.9 / +6.8 / +4.0 HU (patients 0001/0002/0003); held out
  (fit on the other two) +0.6 / +4.0 / +4.0 HU, residual 56.2 / 45.9 / 56.5 grey;
- neighbour: grey = 0.106·HU + 77.4 (window −728…1672 HU); residual 52.7 grey = 496 HU;
  pancreas mean HU error +110 / +87 / +137 HU; held out +113 / +80 / +137 HU, residual
  56.6 / 47.2 / 57.2 grey; soft-tissue reference error +25 / −30 / −53 HU;
- soft-tissue reference of mapped slices minus that of the HU slices (percentile fit): with the
  fill +22.0 / −2.1 / −12.4 HU, without it −57 / −89 / −88 HU.
The residuals include the anatomy that differs between neighbouring slices.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from pancreas_ssl_seg.errors import InputError
from pancreas_ssl_seg.hounsfield import OUTSIDE_SCAN_HU
from pancreas_ssl_seg.preprocessing import soft_tissue_reference

from .slices import SliceSample, load_nih_8bit_slices, load_nih_hu_slices

GREY_MIN, GREY_MAX = 0, 255
METHODS = ("neighbour", "percentile")
FAT_HU = -100.0
# Outside the body, JPEG ringing leaves grey 1–15 near edges (measured outside the body on the 15
# slices of patients 0002/0010/0020/0030/0040: 64 840 pixels at 1–15, 4 033 at 16–31); real
# objects there (the table) are brighter.
JPEG_NOISE_GREY = 16
_QUANTILE_STEPS = 200


@dataclass(frozen=True)
class GreyMapping:
    """``grey = clip(a·HU + b, 0, 255)``.

    Residuals: RMS of ``grey - clip(a·HU + b)`` over unsaturated best-neighbour pixel pairs, in
    grey levels and divided by ``a`` in HU. They include the anatomy that differs between
    neighbouring slices, so they bound the mapping error from above.
    """

    a: float
    b: float
    method: str
    residual_grey: float
    residual_hu: float
    n_pairs: int

    @property
    def window_hu(self) -> tuple[float, float]:
        """HU range the 8-bit levels 0..255 cover; outside it the grey level saturates."""
        return ((GREY_MIN - self.b) / self.a, (GREY_MAX - self.b) / self.a)

    def to_dict(self) -> dict:
        return {**asdict(self), "window_hu": list(self.window_hu)}


def saturated_mask(grey: np.ndarray) -> np.ndarray:
    """True where the grey level is clipped (0 or 255): the HU there is only bounded."""
    return (grey <= GREY_MIN) | (grey >= GREY_MAX)


def body_mask(grey: np.ndarray) -> np.ndarray:
    """The patient's body in a 2-D slice: the largest non-black region with its holes filled
    (the skin encloses the fat under it)."""
    tissue = ndimage.binary_closing(grey > GREY_MIN, iterations=3)
    components, count = ndimage.label(tissue)
    if count == 0:
        return tissue
    sizes = ndimage.sum_labels(tissue, components, index=np.arange(1, count + 1))
    return ndimage.binary_fill_holes(components == 1 + int(np.argmax(sizes)))


def to_hu(grey: np.ndarray, fit: GreyMapping, fill_saturated: bool = True) -> np.ndarray:
    """Invert the mapping (float32 HU, same shape).

    ``fill_saturated``: grey 0 becomes fat (−100 HU) inside the body; outside it, grey below
    ``JPEG_NOISE_GREY`` (0 or JPEG ringing) becomes air (2-D slices only). Otherwise saturated
    levels stay on the window edge.
    """
    grey = np.asarray(grey, dtype=np.float32)
    hu = (grey - np.float32(fit.b)) / np.float32(fit.a)
    if fill_saturated:
        body = body_mask(grey)
        hu[(grey <= GREY_MIN) & body] = min(FAT_HU, fit.window_hu[0])
        hu[(grey < JPEG_NOISE_GREY) & ~body] = OUTSIDE_SCAN_HU
    return hu


def _by_patient(samples: Sequence[SliceSample]) -> dict[str, list[SliceSample]]:
    grouped = defaultdict(list)
    for sample in samples:
        grouped[sample.patient].append(sample)
    return grouped


def _paired(hu_samples, grey_samples) -> list[tuple[list[SliceSample], list[SliceSample]]]:
    hu_by_patient, grey_by_patient = _by_patient(hu_samples), _by_patient(grey_samples)
    shared = sorted(set(hu_by_patient) & set(grey_by_patient))
    if not shared:
        raise InputError("8-bit mapping: expected patients present in both the HU and the 8-bit "
                         f"slices; HU has {sorted(hu_by_patient)}, 8-bit {sorted(grey_by_patient)}")
    return [(hu_by_patient[p], grey_by_patient[p]) for p in shared]


def neighbour_pixel_pairs(hu_samples: Sequence[SliceSample], grey_samples: Sequence[SliceSample]
                          ) -> tuple[np.ndarray, np.ndarray]:
    """(HU, grey) of unsaturated pixels, each 8-bit slice against its best-correlated HU slice."""
    hu_values, grey_values = [], []
    for hu_slices, grey_slices in _paired(hu_samples, grey_samples):
        for grey_slice in grey_slices:
            grey = grey_slice.image.ravel()
            correlations = [np.corrcoef(grey, h.image.ravel())[0, 1] for h in hu_slices]
            hu = hu_slices[int(np.argmax(correlations))].image.ravel()
            keep = ~saturated_mask(grey)
            hu_values.append(hu[keep])
            grey_values.append(grey[keep])
    return np.concatenate(hu_values), np.concatenate(grey_values)


def percentile_pairs(hu_samples: Sequence[SliceSample], grey_samples: Sequence[SliceSample]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(HU, grey) quantile pairs per patient, over ranks where the grey level is unsaturated."""
    hu_values, grey_values = [], []
    for hu_slices, grey_slices in _paired(hu_samples, grey_samples):
        grey = np.concatenate([s.image.ravel() for s in grey_slices])
        hu = np.concatenate([s.image.ravel() for s in hu_slices])
        low, high = np.mean(grey <= GREY_MIN), 1.0 - np.mean(grey >= GREY_MAX)
        levels = np.linspace(low, high, _QUANTILE_STEPS + 2)[1:-1]
        hu_values.append(np.quantile(hu, levels))
        grey_values.append(np.quantile(grey, levels))
    return np.concatenate(hu_values), np.concatenate(grey_values)


def _rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(values))))


def _pair_residual(a: float, b: float, hu: np.ndarray, grey: np.ndarray) -> float:
    return _rms(grey - np.clip(a * hu + b, GREY_MIN, GREY_MAX))


def fit_grey_mapping(hu_samples: Sequence[SliceSample], grey_samples: Sequence[SliceSample],
                     method: str = "percentile") -> GreyMapping:
    """Fit ``grey = a·HU + b`` from patients present in both sample lists."""
    if method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    pairs = neighbour_pixel_pairs if method == "neighbour" else percentile_pairs
    a, b = np.polyfit(*pairs(hu_samples, grey_samples), deg=1)
    hu, grey = neighbour_pixel_pairs(hu_samples, grey_samples)
    residual_grey = _pair_residual(a, b, hu, grey)
    return GreyMapping(a=float(a), b=float(b), method=method, residual_grey=residual_grey,
                       residual_hu=residual_grey / float(a), n_pairs=int(hu.size))


def pancreas_mean_hu_error(fit: GreyMapping, hu_samples: Sequence[SliceSample],
                           grey_samples: Sequence[SliceSample]) -> dict[str, float]:
    """Per patient: mean mapped HU in the 8-bit pancreas masks minus mean HU in the HU masks.

    A check independent of how the fit was made: the pancreas of one patient has nearly the same
    attenuation on neighbouring slices.
    """
    errors = {}
    for hu_slices, grey_slices in _paired(hu_samples, grey_samples):
        true_hu = np.concatenate([s.image[s.label > 0] for s in hu_slices])
        mapped = np.concatenate([to_hu(s.image, fit)[s.label > 0] for s in grey_slices])
        errors[hu_slices[0].patient] = float(np.mean(mapped) - np.mean(true_hu))
    return errors


def reference_hu_error(fit: GreyMapping, hu_samples: Sequence[SliceSample],
                       grey_samples: Sequence[SliceSample], fill_saturated: bool = True
                       ) -> dict[str, float]:
    """Per patient: mean soft-tissue reference (``normalize_ct``'s) of the mapped 8-bit slices
    minus that of the HU slices."""
    errors = {}
    for hu_slices, grey_slices in _paired(hu_samples, grey_samples):
        mapped = np.mean([soft_tissue_reference(to_hu(s.image, fit, fill_saturated))
                          for s in grey_slices])
        errors[hu_slices[0].patient] = float(
            mapped - np.mean([soft_tissue_reference(s.image) for s in hu_slices]))
    return errors


def estimate_grey_mapping(data_root: str | Path, method: str = "percentile") -> GreyMapping:
    """Fit the mapping from ``<data_root>/nih-pancreas-slices-hu`` and ``…-8bit``."""
    data_root = Path(data_root)
    hu_samples = load_nih_hu_slices(data_root / "nih-pancreas-slices-hu")
    patients = sorted({s.patient for s in hu_samples})
    grey_samples = load_nih_8bit_slices(data_root / "nih-pancreas-slices-8bit", patients)
    return fit_grey_mapping(hu_samples, grey_samples, method)


def measure_mappings(data_root: str | Path) -> dict:
    """Each method fitted on all shared patients, and leave-one-patient-out.

    Leave-one-out: fit on two patients, report the held-out patient's pixel-pair residual and its
    pancreas mean-HU error.
    """
    data_root = Path(data_root)
    hu_samples = load_nih_hu_slices(data_root / "nih-pancreas-slices-hu")
    patients = sorted({s.patient for s in hu_samples})
    grey_samples = load_nih_8bit_slices(data_root / "nih-pancreas-slices-8bit", patients)
    report = {}
    for method in METHODS:
        fit = fit_grey_mapping(hu_samples, grey_samples, method)
        held_out = {}
        for patient in patients:
            train = [s for s in hu_samples if s.patient != patient]
            train_grey = [s for s in grey_samples if s.patient != patient]
            test = [s for s in hu_samples if s.patient == patient]
            test_grey = [s for s in grey_samples if s.patient == patient]
            loo = fit_grey_mapping(train, train_grey, method)
            hu, grey = neighbour_pixel_pairs(test, test_grey)
            held_out[patient] = {
                "residual_grey": _pair_residual(loo.a, loo.b, hu, grey),
                "pancreas_mean_hu_error": pancreas_mean_hu_error(loo, test, test_grey)[patient]}
        report[method] = {"fit": fit.to_dict(),
                          "pancreas_mean_hu_error": pancreas_mean_hu_error(fit, hu_samples,
                                                                           grey_samples),
                          "reference_hu_error": reference_hu_error(fit, hu_samples, grey_samples),
                          "reference_hu_error_unfilled": reference_hu_error(
                              fit, hu_samples, grey_samples, fill_saturated=False),
                          "leave_one_patient_out": held_out}
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=measure_mappings.__doc__.splitlines()[0])
    parser.add_argument("data_root", help="folder holding nih-pancreas-slices-hu and -8bit")
    args = parser.parse_args(argv)
    print(json.dumps(measure_mappings(args.data_root), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
