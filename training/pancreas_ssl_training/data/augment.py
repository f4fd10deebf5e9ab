"""Training augmentation: contrast phase and scanner intensity (in HU), and spatial (MONAI).

Intensity augmentation runs on Hounsfield units, before ``normalize_ct``, so that one model works
on non-contrast and contrast-enhanced CT: the enhancement of soft tissue and vessels above the
unenhanced baseline is scaled (0.3× ≈ non-contrast, 1.3× ≈ strong arterial), then the contrast
around soft tissue is stretched or compressed (the NIH 8-bit slices carry per-patient display
windows that one global HU mapping cannot undo: this covers slopes 0.7–1.5× the fitted one), a
global HU shift, a gamma curve inside the HU window, Gaussian noise and blur. Works on 2-D and 3-D
arrays.
Spatial augmentation (flips, small rotations, zoom) uses MONAI dictionary transforms, applied to
image and label together on channel-first arrays.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from monai.transforms import Compose, RandFlipd, RandRotated, RandZoomd
from scipy import ndimage

# Unenhanced soft tissue sits near 30–50 HU; enhancement adds to what is above it. Above ~400 HU
# (bone, dense contrast) the added amount stays constant, so bone is shifted, not stretched.
ENHANCEMENT_BASELINE_HU = 30.0
ENHANCEMENT_CAP_HU = 400.0
ENHANCEMENT_SCALE = (0.3, 1.3)
CONTRAST_PIVOT_HU = 40.0
CONTRAST_SCALE = (0.7, 1.5)
HU_SHIFT = (-20.0, 20.0)
GAMMA = (0.8, 1.25)
NOISE_STD_HU = (0.0, 20.0)
BLUR_SIGMA_VOXELS = (0.0, 1.0)


def scale_enhancement(hu: np.ndarray, scale: float) -> np.ndarray:
    """Scale the part of each value between the baseline and the cap by ``scale`` (continuous)."""
    span_hu = ENHANCEMENT_CAP_HU - ENHANCEMENT_BASELINE_HU
    excess = np.clip(hu - ENHANCEMENT_BASELINE_HU, 0.0, span_hu)
    return hu + (scale - 1.0) * excess


def gamma_in_window(hu: np.ndarray, gamma: float, hu_window: Sequence[float]) -> np.ndarray:
    """Apply ``x**gamma`` to values rescaled to [0, 1] inside the window; clips to the window."""
    low, high = float(hu_window[0]), float(hu_window[1])
    unit = np.clip((hu - low) / (high - low), 0.0, 1.0)
    return low + unit ** gamma * (high - low)


def sample_intensity_augmentation(rng: np.random.Generator, probability: float = 0.5) -> dict:
    """Draw one augmentation: each step is on with ``probability`` (off = neutral value)."""
    def maybe(low_high, neutral):
        return rng.uniform(*low_high) if rng.random() < probability else neutral

    return {"enhancement_scale": maybe(ENHANCEMENT_SCALE, 1.0),
            "contrast_scale": maybe(CONTRAST_SCALE, 1.0), "shift_hu": maybe(HU_SHIFT, 0.0),
            "gamma": maybe(GAMMA, 1.0), "blur_sigma_voxels": maybe(BLUR_SIGMA_VOXELS, 0.0),
            "noise_std_hu": maybe(NOISE_STD_HU, 0.0)}


def apply_intensity_augmentation(hu: np.ndarray, params: dict, hu_window: Sequence[float],
                                 rng: np.random.Generator | None = None,
                                 pointwise_only: bool = False) -> np.ndarray:
    """Apply drawn parameters (float32, same shape). ``pointwise_only`` skips blur and noise,
    e.g. to follow the soft-tissue reference of a whole volume through the same curve."""
    hu = scale_enhancement(np.asarray(hu, dtype=np.float32), params["enhancement_scale"])
    contrast = params.get("contrast_scale", 1.0)
    if contrast != 1.0:  # skipped when neutral: the rounding would change every value
        hu = CONTRAST_PIVOT_HU + (hu - CONTRAST_PIVOT_HU) * np.float32(contrast)
    hu = hu + params["shift_hu"]
    if params["gamma"] != 1.0:
        hu = gamma_in_window(hu, params["gamma"], hu_window)
    if not pointwise_only:
        if params["blur_sigma_voxels"] > 0:
            hu = ndimage.gaussian_filter(hu, params["blur_sigma_voxels"])
        if params["noise_std_hu"] > 0:
            hu = hu + rng.normal(0.0, params["noise_std_hu"], hu.shape)
    return hu.astype(np.float32)


def augment_intensity(hu: np.ndarray, rng: np.random.Generator, hu_window: Sequence[float],
                      probability: float = 0.5) -> np.ndarray:
    """Random contrast-phase and scanner augmentation of an HU array (float32, same shape)."""
    params = sample_intensity_augmentation(rng, probability)
    return apply_intensity_augmentation(hu, params, hu_window, rng)


def build_spatial_augmentation(spatial_dims: int, flip_probability: float = 0.1,
                               rotate_probability: float = 0.5, max_rotation_rad: float = 0.26,
                               zoom_probability: float = 0.5, zoom_range=(0.9, 1.1)) -> Compose:
    """MONAI transforms on ``{"image", "label"}`` channel-first arrays.

    Flips are rare by default: a mirrored abdomen puts the pancreas on the wrong side, which real
    scans never do; they still help against over-reliance on absolute position.
    """
    keys = ("image", "label")
    modes = ("bilinear", "nearest")
    rotation = {"range_x": max_rotation_rad}
    if spatial_dims == 3:
        # Small tilts about the other axes; the main rotation stays in the axial plane.
        rotation.update(range_y=max_rotation_rad / 3, range_z=max_rotation_rad / 3)
    return Compose([
        RandFlipd(keys, prob=flip_probability, spatial_axis=spatial_dims - 1),
        RandRotated(keys, prob=rotate_probability, mode=modes, padding_mode="border",
                    **rotation),
        RandZoomd(keys, prob=zoom_probability, min_zoom=zoom_range[0], max_zoom=zoom_range[1],
                  mode=("bilinear", "nearest"), padding_mode="edge", keep_size=True),
    ])
