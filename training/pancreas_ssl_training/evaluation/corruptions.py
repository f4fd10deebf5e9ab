"""Acquisition shifts simulated on one axial CT slice in Hounsfield units (HU in, HU out).

``corrupt(hu, name, severity, spacing_mm, seed)`` returns a new float32 array of the same shape;
the label of the slice is never an input, so it cannot change. Severity 0 is the slice itself;
1 < 2 < 3 are ordered by how far the slice moves from the original (``PARAMETERS`` holds every
number). The same arguments and seed always give the same output. ``spacing_mm`` is the pixel
spacing ``(x, y)`` (columns, rows) in mm; every physical size below is in mm, not pixels.

Models (what each one changes, and what it leaves alone):

- ``non_contrast`` — a scan without intravenous contrast. Enhancing soft tissue and vessels lose
  a share of their enhancement: ``hu - (1 - keep) * E``, with ``E = max(0, s - 30 HU) * taper(s)``
  where ``s`` is the slice smoothed with a Gaussian of 1.5 mm (so the enhancement is removed from
  the tissue, while its noise and texture stay) and ``taper`` is 1 below 250 HU, falls linearly
  to 0 at 400 HU. 30 HU is taken as the unenhanced level of blood and parenchyma (unenhanced
  pancreas ~40–50 HU, blood ~40 HU; portal-venous pancreas ~100–130 HU, aorta ~150–200 HU):
  with ``keep`` 0.2, 110 HU becomes 46 HU. Air, fat and water (``s`` <= 30 HU) and cortical bone
  (``s`` >= 400 HU) are untouched. A value model: spongy bone of 150–350 HU is pulled down like
  a vessel (no organ mask exists to tell them apart).
- ``low_dose`` — a scan at a fraction ``f`` of the dose, noise added in the projection domain
  (as in dose-reduction simulators, e.g. Yu et al. 2012): HU → linear attenuation
  ``mu = mu_water * (1 + HU/1000)`` (air 0), parallel-beam line integrals ``p`` (scikit-image
  ``radon``), Gaussian noise of variance ``(1 - f) / f * exp(p) / N0`` per ray (Poisson photon
  counting, ``N0`` photons per ray at full dose, no electronic noise), filtered back-projection
  (``iradon``, ramp filter) of that noise alone, added to the slice. Rays through more tissue
  count fewer photons, so the noise grows with the attenuation along the rays through a pixel
  (a larger or denser body is noisier, the centre noisier than the rim) and is correlated like
  CT noise, not independent per pixel. The mean is unchanged (zero-mean noise). For speed the
  line integrals use a 4x coarser grid and the noise is reconstructed on a 2x coarser grid, then
  interpolated (noise grain ~2 pixels). Severity = dose fraction 0.5, 0.25, 0.1.
- ``smooth_kernel`` — a softer reconstruction kernel: Gaussian blur of the slice (sigma 0.6,
  1.0, 1.5 mm). Lowers high-frequency power; keeps the mean and uniform regions.
- ``sharp_kernel`` — a sharper kernel: unsharp masking ``hu + a * (hu - G_1mm * hu)`` (a = 0.5,
  1, 2), the transfer function ``1 + a (1 - exp(-2 pi^2 sigma^2 f^2))``: 1 at frequency 0 (mean
  kept), above 1 elsewhere (edges and the slice's own noise amplified, as with bone kernels).
- ``thick_slice`` — a thicker reconstructed slice (5, 7.5, 10 mm; NIH Pancreas-CT slices are
  1.5–2.5 mm). A 2-D slice has no neighbours, so they are simulated: the slab is the mean of 7
  copies at heights ``z`` spread evenly over the slab, copy ``z`` warped by ``z * g(x)`` where
  ``g`` is a smooth random field of in-plane boundary shift per mm of height (Gaussian-filtered
  noise, correlation 15 mm, RMS 0.5 mm/mm: oblique organ boundaries move about half a mm per mm
  along the body axis). Edges smear along ``g`` (partial volume), small structures fade, uniform
  regions stay exactly as they were. The label is the centre slice's, as for a real thick slice
  centred on it.
- ``window`` — an 8-bit slice exported with another display window and read back with the
  source's grey-to-HU mapping (the data's own problem: the window of the NIH JPEGs is not
  recorded). ``grey = round(255 * (clip(hu, lo_t, hi_t) - lo_t) / (hi_t - lo_t))`` with the
  target window ``[lo_t, hi_t]`` = [-150, 250], [-250, 350], [-450, 550] HU (level 50, width
  400, 600, 1000), then
  ``hu' = lo_s + grey / 255 * (hi_s - lo_s)`` with the source window ``[lo_s, hi_s]`` (default
  the NIH 8-bit percentile fit's, -10.7…280.1 HU; ``source_window_hu=`` to change it). Grey 0
  stands for "below the window": a pixel already below ``lo_s`` (fat or air that the source
  mapping filled in) keeps its value, the others become ``lo_s``. Every target window puts
  50 HU at 135 HU; wider ones compress contrast more (gain 0.73, 0.48, 0.29: the severity) and
  lift fat (-100 HU) into the soft-tissue range (26, 62, 91 HU).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from skimage.transform import iradon, radon

CORRUPTIONS = ("non_contrast", "low_dose", "smooth_kernel", "sharp_kernel", "thick_slice",
               "window")
SEVERITIES = (1, 2, 3)

# Every number of every model, by severity (see the module docstring).
PARAMETERS: dict[str, dict[int, dict[str, float | tuple[float, float]]]] = {
    "non_contrast": {1: {"keep": 0.7}, 2: {"keep": 0.45}, 3: {"keep": 0.2}},
    "low_dose": {1: {"dose_fraction": 0.5}, 2: {"dose_fraction": 0.25},
                 3: {"dose_fraction": 0.1}},
    "smooth_kernel": {1: {"sigma_mm": 0.6}, 2: {"sigma_mm": 1.0}, 3: {"sigma_mm": 1.5}},
    "sharp_kernel": {1: {"amount": 0.5}, 2: {"amount": 1.0}, 3: {"amount": 2.0}},
    "thick_slice": {1: {"thickness_mm": 5.0}, 2: {"thickness_mm": 7.5},
                    3: {"thickness_mm": 10.0}},
    "window": {1: {"window_hu": (-150.0, 250.0)}, 2: {"window_hu": (-250.0, 350.0)},
               3: {"window_hu": (-450.0, 550.0)}},
}

# non_contrast
UNENHANCED_HU = 30.0
ENHANCEMENT_TAPER_HU = (250.0, 400.0)
ENHANCEMENT_SMOOTHING_MM = 1.5
# low_dose
MU_WATER_PER_MM = 0.0195  # linear attenuation of water near 70 keV (0.195 /cm)
# N0 at full dose; adds 12, 21, 36 HU sd in the pancreas of NIH HU slice img_000 (half dose on
# a routine abdominal scan: ~10-15 HU more noise).
PHOTONS_PER_RAY = 5.0e5
PROJECTION_ANGLES = 360
# sharp_kernel
SHARPEN_SIGMA_MM = 1.0
# thick_slice
THICK_SUBSLICES = 7
BOUNDARY_SLOPE = 0.5          # in-plane shift (mm) per mm along the body axis, RMS
SHIFT_CORRELATION_MM = 15.0
# window: the display window the NIH 8-bit slices were read back with (percentile fit,
# ``data.intensity_mapping``: grey = 0.877 HU + 9.34)
SOURCE_WINDOW_HU = (-10.7, 280.1)


def case_seed(seed: int, case: str) -> int:
    """A seed for one slice: the experiment's ``seed`` mixed with the slice's name (the same slice
    gets the same noise in every run; different slices get different noise)."""
    return int(np.random.SeedSequence([int(seed), zlib.crc32(case.encode("utf-8"))])
               .generate_state(1)[0])


def corrupt(hu: np.ndarray, name: str, severity: int,
            spacing_mm: Sequence[float] = (0.8, 0.8), seed: int = 0,
            source_window_hu: Sequence[float] = SOURCE_WINDOW_HU) -> np.ndarray:
    """The slice ``hu`` (2-D, HU) under corruption ``name`` at ``severity`` (0 = unchanged)."""
    if name not in CORRUPTIONS:
        raise ValueError(f"corruption {name!r}: expected one of {CORRUPTIONS}")
    if severity not in (0, *SEVERITIES):
        raise ValueError(f"corruption {name}: severity {severity!r}, expected 0 or one of "
                         f"{SEVERITIES}")
    hu = np.asarray(hu, dtype=np.float32)
    if hu.ndim != 2:
        raise ValueError(f"corruption {name}: expected one 2-D slice, got shape {hu.shape}")
    if severity == 0:
        return hu.copy()
    spacing_yx = (float(spacing_mm[1]), float(spacing_mm[0]))  # array order (rows, columns)
    params = PARAMETERS[name][severity]
    if name == "non_contrast":
        out = non_contrast(hu, spacing_yx, float(params["keep"]))
    elif name == "low_dose":
        out = low_dose(hu, spacing_yx, float(params["dose_fraction"]),
                       np.random.default_rng(seed))
    elif name == "smooth_kernel":
        out = ndimage.gaussian_filter(hu, _sigma_px(float(params["sigma_mm"]), spacing_yx))
    elif name == "sharp_kernel":
        blurred = ndimage.gaussian_filter(hu, _sigma_px(SHARPEN_SIGMA_MM, spacing_yx))
        out = hu + float(params["amount"]) * (hu - blurred)
    elif name == "thick_slice":
        out = thick_slice(hu, spacing_yx, float(params["thickness_mm"]),
                          np.random.default_rng(seed))
    else:
        out = rewindow(hu, params["window_hu"], source_window_hu)
    return np.asarray(out, dtype=np.float32)


def _sigma_px(sigma_mm: float, spacing_yx: Sequence[float]) -> tuple[float, float]:
    return (sigma_mm / spacing_yx[0], sigma_mm / spacing_yx[1])


def non_contrast(hu: np.ndarray, spacing_yx: Sequence[float], keep: float) -> np.ndarray:
    """Remove ``1 - keep`` of the enhancement (module docstring)."""
    smooth = ndimage.gaussian_filter(hu, _sigma_px(ENHANCEMENT_SMOOTHING_MM, spacing_yx))
    low, high = ENHANCEMENT_TAPER_HU
    taper = np.clip((high - smooth) / (high - low), 0.0, 1.0)
    enhancement = np.maximum(smooth - UNENHANCED_HU, 0.0) * taper
    return hu - (1.0 - keep) * enhancement


def low_dose_noise(hu: np.ndarray, spacing_yx: Sequence[float], dose_fraction: float,
                   rng: np.random.Generator) -> np.ndarray:
    """The noise (HU, zero mean) that lowering the dose to ``dose_fraction`` adds."""
    rows, cols = hu.shape
    pixel_mm = float(np.mean(spacing_yx))
    mu = np.clip(MU_WATER_PER_MM * (1.0 + hu / 1000.0), 0.0, None)  # per mm
    # Line integrals on a 4x coarser grid (they vary slowly across rays), noise FBP on a 2x
    # coarser grid; square grids covering the slice.
    size = max(rows, cols)
    square = np.zeros((size, size), np.float32)
    square[:rows, :cols] = mu
    angles = np.linspace(0.0, 180.0, PROJECTION_ANGLES, endpoint=False)
    coarse = ndimage.zoom(square, 0.25, order=1)
    integrals = radon(coarse, angles, circle=False) * pixel_mm * 4.0  # dimensionless
    noise_size = size // 2
    detector = int(np.ceil(np.sqrt(2.0) * noise_size)) + 1
    integrals = ndimage.zoom(integrals, (detector / integrals.shape[0], 1.0), order=1)
    variance = (1.0 - dose_fraction) / dose_fraction * np.exp(integrals) / PHOTONS_PER_RAY
    sinogram_noise = rng.standard_normal(variance.shape) * np.sqrt(variance)
    # iradon of a sinogram in "per detector bin" units gives attenuation per pixel of its grid.
    noise_mu = iradon(sinogram_noise, angles, circle=False, filter_name="ramp",
                      output_size=noise_size) / (2.0 * pixel_mm)
    noise_hu = noise_mu * 1000.0 / MU_WATER_PER_MM
    noise_hu = ndimage.zoom(noise_hu, size / noise_size, order=1)[:rows, :cols]
    return noise_hu.astype(np.float32)


def low_dose(hu: np.ndarray, spacing_yx: Sequence[float], dose_fraction: float,
             rng: np.random.Generator) -> np.ndarray:
    return hu + low_dose_noise(hu, spacing_yx, dose_fraction, rng)


def thick_slice(hu: np.ndarray, spacing_yx: Sequence[float], thickness_mm: float,
                rng: np.random.Generator) -> np.ndarray:
    """Mean of warped copies over a slab ``thickness_mm`` thick (module docstring)."""
    field = np.stack([ndimage.gaussian_filter(rng.standard_normal(hu.shape),
                                              _sigma_px(SHIFT_CORRELATION_MM, spacing_yx))
                      for _ in range(2)])
    rms = float(np.sqrt(np.mean(np.sum(field ** 2, axis=0))))
    field *= BOUNDARY_SLOPE / max(rms, 1e-12)  # mm of shift per mm of height
    heights = np.linspace(-thickness_mm / 2.0, thickness_mm / 2.0, THICK_SUBSLICES)
    grid = np.mgrid[0:hu.shape[0], 0:hu.shape[1]].astype(np.float32)
    copies = []
    for z in heights:
        shift_px = np.stack([z * field[0] / spacing_yx[0], z * field[1] / spacing_yx[1]])
        copies.append(ndimage.map_coordinates(hu, grid + shift_px, order=1, mode="nearest"))
    return np.mean(copies, axis=0)


def rewindow(hu: np.ndarray, target_window_hu: Sequence[float],
             source_window_hu: Sequence[float] = SOURCE_WINDOW_HU) -> np.ndarray:
    """HU displayed in ``target_window_hu`` as 8 bits, read back as if the window were
    ``source_window_hu`` (module docstring)."""
    lo_t, hi_t = (float(v) for v in target_window_hu)
    lo_s, hi_s = (float(v) for v in source_window_hu)
    grey = np.round(255.0 * (np.clip(hu, lo_t, hi_t) - lo_t) / (hi_t - lo_t))
    out = lo_s + grey / 255.0 * (hi_s - lo_s)
    below = (grey == 0) & (hu < lo_s)
    out[below] = hu[below]
    return out
