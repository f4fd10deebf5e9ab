"""Corruption suite: each corruption changes what it claims and nothing else; severities are
ordered; the same seed gives the same slice; labels never change.

Phantoms are built here from blocks of known HU; expectations come from the physics or the
documented formula, not from the functions under test.
"""

from __future__ import annotations

import numpy as np
import pytest

from pancreas_ssl_training.evaluation.corruptions import (CORRUPTIONS, MU_WATER_PER_MM,
                                                          PARAMETERS, SEVERITIES,
                                                          SOURCE_WINDOW_HU, case_seed, corrupt)

SPACING = (0.8, 0.8)
SIZE = 256
# Block name -> (HU, rows, cols); each block is 50 px (40 mm) wide; the body is fat.
BLOCKS = {"enhanced": (120.0, slice(40, 90), slice(40, 90)),
          "vessel": (200.0, slice(40, 90), slice(110, 160)),
          "water": (10.0, slice(110, 160), slice(40, 90)),
          "bone": (800.0, slice(110, 160), slice(110, 160)),
          "fat": (-100.0, slice(180, 230), slice(40, 90))}
MARGIN = 10  # px kept away from block edges (smoothing reaches ~4 sigma = 8 px)


def _interior(block: str) -> tuple[slice, slice]:
    _, rows, cols = BLOCKS[block]
    return (slice(rows.start + MARGIN, rows.stop - MARGIN),
            slice(cols.start + MARGIN, cols.stop - MARGIN))


@pytest.fixture(scope="module")
def phantom() -> np.ndarray:
    hu = np.full((SIZE, SIZE), -1000.0, np.float32)
    rows, cols = np.mgrid[:SIZE, :SIZE]
    hu[((rows - 128) / 120) ** 2 + ((cols - 115) / 112) ** 2 < 1] = -100.0  # body: fat
    for value, block_rows, block_cols in BLOCKS.values():
        hu[block_rows, block_cols] = value
    return hu


def _high_frequency_power(image: np.ndarray, cutoff: float = 0.25) -> float:
    """Power of the spectrum above ``cutoff`` cycles per pixel."""
    spectrum = np.abs(np.fft.fft2(image - image.mean())) ** 2
    fy, fx = np.meshgrid(np.fft.fftfreq(image.shape[0]), np.fft.fftfreq(image.shape[1]),
                         indexing="ij")
    return float(spectrum[np.hypot(fy, fx) > cutoff].sum())


def _water_disk(radius_mm: float, spacing_mm: float = 1.5, size: int = 256,
                hu: float = 0.0) -> np.ndarray:
    image = np.full((size, size), -1000.0, np.float32)
    rows, cols = np.mgrid[:size, :size]
    image[np.hypot(rows - size / 2, cols - size / 2) * spacing_mm < radius_mm] = hu
    return image


def _centre(image: np.ndarray, half: int = 10) -> np.ndarray:
    c = image.shape[0] // 2
    return image[c - half:c + half, c - half:c + half]


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_severity_zero_is_the_slice_and_every_severity_keeps_the_shape(phantom, name):
    assert np.array_equal(corrupt(phantom, name, 0), phantom)
    for severity in SEVERITIES:
        out = corrupt(phantom, name, severity, SPACING, seed=3)
        assert out.shape == phantom.shape and out.dtype == np.float32
        assert not np.array_equal(out, phantom)
        assert np.array_equal(out, corrupt(phantom, name, severity, SPACING, seed=3))


def test_bad_names_and_severities_are_refused(phantom):
    with pytest.raises(ValueError, match="expected one of"):
        corrupt(phantom, "motion", 1)
    with pytest.raises(ValueError, match="severity 4"):
        corrupt(phantom, "low_dose", 4)
    with pytest.raises(ValueError, match="2-D slice"):
        corrupt(phantom[None], "window", 1)


def test_non_contrast_removes_enhancement_and_leaves_air_fat_water_and_bone(phantom):
    previous = {"enhanced": 120.0, "vessel": 200.0}
    for severity in SEVERITIES:
        keep = PARAMETERS["non_contrast"][severity]["keep"]
        out = corrupt(phantom, "non_contrast", severity, SPACING)
        for block, value in (("enhanced", 120.0), ("vessel", 200.0)):
            expected = 30.0 + keep * (value - 30.0)  # the documented unenhanced level: 30 HU
            assert out[_interior(block)] == pytest.approx(expected, abs=0.5)
            assert out[_interior(block)].mean() < previous[block]  # ordered by severity
            previous[block] = out[_interior(block)].mean()
        for block in ("water", "bone", "fat"):
            assert np.array_equal(out[_interior(block)], phantom[_interior(block)]), block
        assert np.array_equal(out[:5, :5], phantom[:5, :5])  # air outside the body
    # Texture inside an enhanced organ is kept (the shift comes from the smoothed slice).
    rng = np.random.default_rng(0)
    textured = phantom.copy()
    textured[BLOCKS["enhanced"][1:]] += rng.normal(0, 10, (50, 50)).astype(np.float32)
    out = corrupt(textured, "non_contrast", 3, SPACING)
    inner = _interior("enhanced")
    assert out[inner].std() == pytest.approx(textured[inner].std(), rel=0.15)


def test_low_dose_noise_grows_with_attenuation_as_photon_counting_predicts():
    small, large = _water_disk(60.0), _water_disk(170.0)
    noise_small = corrupt(small, "low_dose", 2, (1.5, 1.5), seed=1) - small
    noise_large = corrupt(large, "low_dose", 2, (1.5, 1.5), seed=1) - large
    # Every ray through a disk's centre crosses 2R of water: counts fall by exp(mu 2R), the
    # noise variance rises by it, so the centre's sd ratio is exp(mu_water (R_large - R_small)).
    expected_ratio = np.exp(MU_WATER_PER_MM * (170.0 - 60.0))
    measured_ratio = _centre(noise_large).std() / _centre(noise_small).std()
    assert measured_ratio == pytest.approx(expected_ratio, rel=0.3)
    # Denser tissue of the same size attenuates more: noisier.
    dense = _water_disk(60.0, hu=1000.0)
    noise_dense = corrupt(dense, "low_dose", 2, (1.5, 1.5), seed=1) - dense
    assert _centre(noise_dense).std() > 1.5 * _centre(noise_small).std()


def test_low_dose_keeps_the_mean_orders_severities_and_is_not_white_noise(phantom):
    body = phantom > -500
    sds = []
    for severity in SEVERITIES:
        noise = corrupt(phantom, "low_dose", severity, SPACING, seed=5) - phantom
        sds.append(noise[body].std())
        assert abs(noise[body].mean()) < 0.05 * noise[body].std()
    assert sds[0] < sds[1] < sds[2]
    # Dose fraction f adds variance proportional to (1 - f) / f (same seed, same ray noise).
    f = [PARAMETERS["low_dose"][s]["dose_fraction"] for s in SEVERITIES]
    assert sds[2] / sds[0] == pytest.approx(np.sqrt((1 - f[2]) / f[2] / ((1 - f[0]) / f[0])),
                                            rel=0.05)
    noise = corrupt(phantom, "low_dose", 2, SPACING, seed=5) - phantom
    neighbour_correlation = np.corrcoef(noise[60:200, 60:199].ravel(),
                                        noise[60:200, 61:200].ravel())[0, 1]
    assert neighbour_correlation > 0.3  # CT noise grain, unlike independent Gaussian pixels
    other_seed = corrupt(phantom, "low_dose", 2, SPACING, seed=6) - phantom
    assert not np.allclose(noise, other_seed)


def test_smooth_kernel_lowers_high_frequencies_and_keeps_mean_and_flat_regions(phantom):
    powers = [_high_frequency_power(phantom)]
    for severity in SEVERITIES:
        out = corrupt(phantom, "smooth_kernel", severity, SPACING)
        powers.append(_high_frequency_power(out))
        assert out.mean() == pytest.approx(phantom.mean(), abs=0.5)
        for block in ("water", "bone", "fat"):
            assert out[_interior(block)] == pytest.approx(phantom[_interior(block)], abs=1e-3)
    assert powers == sorted(powers, reverse=True) and powers[-1] < 0.5 * powers[0]
    # White noise through a Gaussian of sigma s px keeps sd / (2 s sqrt(pi)).
    white = np.random.default_rng(0).normal(0, 100, (SIZE, SIZE)).astype(np.float32)
    sigma_px = PARAMETERS["smooth_kernel"][2]["sigma_mm"] / SPACING[0]
    blurred = corrupt(white, "smooth_kernel", 2, SPACING)
    assert blurred.std() == pytest.approx(100 / (2 * sigma_px * np.sqrt(np.pi)), rel=0.1)


def test_sharp_kernel_raises_high_frequencies_and_keeps_mean_and_flat_regions(phantom):
    powers = [_high_frequency_power(phantom)]
    for severity in SEVERITIES:
        out = corrupt(phantom, "sharp_kernel", severity, SPACING)
        powers.append(_high_frequency_power(out))
        assert out.mean() == pytest.approx(phantom.mean(), abs=0.5)
        for block in ("water", "bone", "fat"):
            assert out[_interior(block)] == pytest.approx(phantom[_interior(block)], abs=1e-3)
    assert powers == sorted(powers)
    # At the Nyquist frequency the Gaussian passes nothing: a checkerboard gains 1 + amount.
    checker = (np.indices((64, 64)).sum(axis=0) % 2 * 2 - 1).astype(np.float32) * 10
    amount = PARAMETERS["sharp_kernel"][3]["amount"]
    out = corrupt(checker, "sharp_kernel", 3, SPACING)
    assert np.abs(out[16:48, 16:48]) == pytest.approx(10 * (1 + amount), rel=0.01)


def test_thick_slice_blurs_edges_and_fades_small_structures_but_keeps_flat_regions(phantom):
    flat = np.full((64, 64), 40.0, np.float32)
    assert np.array_equal(corrupt(flat, "thick_slice", 3, SPACING, seed=0), flat)
    dotted = phantom.copy()
    dotted[60:62, 60:62] = 400.0  # a 1.6 mm bright structure inside the enhanced block
    powers, peaks = [_high_frequency_power(dotted)], [400.0]
    for severity in SEVERITIES:
        out = corrupt(dotted, "thick_slice", severity, SPACING, seed=2)
        powers.append(_high_frequency_power(out))
        peaks.append(float(out[58:64, 58:64].max()))
        assert out.mean() == pytest.approx(dotted.mean(), rel=0.01)
        assert np.array_equal(out[_interior("water")], dotted[_interior("water")])
    assert powers == sorted(powers, reverse=True)
    assert peaks == sorted(peaks, reverse=True) and peaks[-1] < 0.9 * 400.0
    assert not np.array_equal(corrupt(dotted, "thick_slice", 2, SPACING, seed=2),
                              corrupt(dotted, "thick_slice", 2, SPACING, seed=3))


def test_window_follows_the_documented_mapping():
    lo_s, hi_s = SOURCE_WINDOW_HU
    for severity in SEVERITIES:
        lo_t, hi_t = PARAMETERS["window"][severity]["window_hu"]
        hu = np.array([[lo_t, hi_t, hi_t + 500.0, 50.0, -1024.0, -100.0]], np.float32)
        out = corrupt(hu, "window", severity)
        assert out[0, 0] == pytest.approx(lo_s) or hu[0, 0] < lo_s  # window bottom
        assert out[0, 1] == pytest.approx(hi_s, abs=1e-3)  # window top
        assert out[0, 2] == pytest.approx(hi_s, abs=1e-3)  # saturated high
        grey_50 = round(255 * (50.0 - lo_t) / (hi_t - lo_t))
        assert out[0, 3] == pytest.approx(lo_s + grey_50 / 255 * (hi_s - lo_s), abs=1e-3)
        assert out[0, 4] == -1024.0  # air below both windows keeps its value
    # Level 50 HU in every window: 50 HU lands mid-window; wider windows compress contrast.
    tissue = np.linspace(0.0, 100.0, 101, dtype=np.float32)[None]
    gains = [np.polyfit(tissue[0], corrupt(tissue, "window", s)[0], 1)[0] for s in SEVERITIES]
    expected = [(hi_s - lo_s) / (PARAMETERS["window"][s]["window_hu"][1]
                                 - PARAMETERS["window"][s]["window_hu"][0]) for s in SEVERITIES]
    assert gains == pytest.approx(expected, rel=0.02)
    assert gains == sorted(gains, reverse=True)
    # Fat that the source mapping filled in at -100 HU: kept by the narrowest window (grey 0
    # there would read back as fat), lifted into soft tissue by the wider ones.
    fat = np.full((1, 1), -100.0, np.float32)
    assert [round(float(corrupt(fat, "window", s)[0, 0])) for s in SEVERITIES] == [26, 62, 91]
    inside = np.linspace(-240, 600, 5000, dtype=np.float32)[None]  # above grey 0 of window 2
    assert len(np.unique(corrupt(inside, "window", 2))) <= 256  # 8 bits


def test_case_seed_is_stable_and_differs_between_slices():
    assert case_seed(0, "PANCREAS_0031-1100") == case_seed(0, "PANCREAS_0031-1100")
    assert case_seed(0, "PANCREAS_0031-1100") != case_seed(0, "PANCREAS_0031-1101")
    assert case_seed(0, "PANCREAS_0031-1100") != case_seed(1, "PANCREAS_0031-1100")


def test_corrupted_evaluation_cases_keep_their_labels(shared_data):
    from pancreas_ssl_training.evaluation.evaluate import labelled_cases

    import SimpleITK as sitk

    spec = {"nih_8bit": {"path": str(shared_data / "nih-pancreas-slices-8bit"),
                         "patients": ["0031"]},
            "grey_to_hu": {"data_root": str(shared_data)}}
    clean = list(labelled_cases(spec))
    for name in CORRUPTIONS:
        corrupted = list(labelled_cases({**spec, "corruption": {"name": name, "severity": 2,
                                                                "seed": 0}}))
        assert [info["case"] for info, _, _ in corrupted] == [info["case"] for info, _, _ in clean]
        for (info, image, labels), (_, clean_image, clean_labels) in zip(corrupted, clean):
            assert np.array_equal(labels, clean_labels)
            assert (info["corruption"], info["severity"]) == (name, 2)
            assert image.GetSpacing() == clean_image.GetSpacing()
            assert not np.array_equal(sitk.GetArrayFromImage(image),
                                      sitk.GetArrayFromImage(clean_image))
