"""Issue 12, items 1-3: non-finite voxels, implausible voxel sizes, intensities outside CT's range.

Inputs are the real 3 mm CT (and the real DICOM series) with values planted at known places, so
each expectation (counts, slices, replaced voxels) is computed from the planting, not by the code
under test. Where an exit code matters the real CLI runs in a subprocess.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from bad_inputs import write_dicom_series

from pancreas_ssl_seg.errors import InputError
from pancreas_ssl_seg.ct_plausibility import check_ct_intensities
from pancreas_ssl_seg.image_io import as_image

FILL_HU = -1024.0  # documented value for non-finite voxels (air)


@pytest.fixture(scope="module")
def ct(example_ct: Path) -> sitk.Image:
    return sitk.ReadImage(str(example_ct), sitk.sitkFloat32)


def planted(ct: sitk.Image) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """The real CT with NaN on slice 5, +inf on two rows of slices 40 and 41, -inf at 3 voxels
    of slice 90; returns (array, mask of planted voxels, counts by kind)."""
    array = sitk.GetArrayFromImage(ct)
    mask = np.zeros(array.shape, bool)
    array[5, 50, 60] = np.nan
    array[40:42, 7, :] = np.inf
    array[90, 0, :3] = -np.inf
    mask[5, 50, 60] = mask[40:42, 7, :] = mask[90, 0, :3] = True
    width = array.shape[2]
    return array, mask, {"NaN": 1, "+inf": 2 * width, "-inf": 3}


def to_image(array: np.ndarray, like: sitk.Image, pixel=sitk.sitkFloat32) -> sitk.Image:
    image = sitk.Cast(sitk.GetImageFromArray(array), pixel)
    image.CopyInformation(like)
    return image


@pytest.mark.parametrize("suffix, pixel", [
    (".nii.gz", sitk.sitkFloat32), (".nii", sitk.sitkFloat32), (".nii.gz", sitk.sitkFloat64),
    (".nrrd", sitk.sitkFloat32), (".mha", sitk.sitkFloat64),
])
def test_non_finite_voxels_in_files_are_replaced_by_air_and_reported(ct, tmp_path, suffix, pixel):
    """ITK's NIfTI reader turns NaN/inf into 0 (water) silently: every format must give the same
    result, air at exactly the planted voxels and the rest untouched, and one note."""
    array, mask, counts = planted(ct)
    path = tmp_path / f"scan{suffix}"
    sitk.WriteImage(to_image(array, ct, pixel), str(path))
    notes: list[str] = []
    image = as_image(path, notes=notes)
    values = sitk.GetArrayFromImage(image)
    assert np.all(values[mask] == FILL_HU)
    np.testing.assert_array_equal(values[~mask], sitk.GetArrayViewFromImage(ct)[~mask])
    total = sum(counts.values())
    assert len(notes) == 1
    assert notes[0].startswith(f"scan{suffix}: {total} voxel(s) are not finite numbers "
                               f"(NaN 1, +inf {counts['+inf']}, -inf 3) on 4 of 112 slice(s) "
                               "(index k = 5, 40-41, 90); they were set to -1024 HU (air)")


def test_arrays_and_sitk_images_get_the_same_policy(ct):
    array, mask, counts = planted(ct)
    for given, name, kwargs in [(array, "input array", {"spacing_mm": ct.GetSpacing()}),
                                (to_image(array, ct), "input image", {})]:
        notes: list[str] = []
        image = as_image(given, notes=notes, **kwargs)
        assert np.all(sitk.GetArrayViewFromImage(image)[mask] == FILL_HU)
        assert len(notes) == 1 and notes[0].startswith(f"{name}: {sum(counts.values())} voxel(s)")


def test_a_few_slices_of_nan_in_a_nifti(ct, tmp_path):
    """Whole NaN slices at both ends (a resampled scan padded with NaN)."""
    array = sitk.GetArrayFromImage(ct)
    array[:3] = np.nan
    array[-2:] = np.nan
    path = tmp_path / "padded.nii.gz"
    sitk.WriteImage(to_image(array, ct), str(path))
    notes: list[str] = []
    values = sitk.GetArrayFromImage(as_image(path, notes=notes))
    assert np.all(values[:3] == FILL_HU) and np.all(values[-2:] == FILL_HU)
    per_slice = array.shape[1] * array.shape[2]
    assert f"{5 * per_slice} voxel(s) are not finite numbers (NaN {5 * per_slice})" in notes[0]
    assert "on 5 of 112 slice(s) (index k = 0-2, 110-111)" in notes[0]


def test_dicom_series_goes_through_the_same_checks(shared_data):
    """DICOM CT stores integers (GDCM refuses to write float pixel data), so it cannot hold NaN:
    the real series reads with no note."""
    notes: list[str] = []
    as_image(shared_data / "ct-dicom-series", notes=notes)
    assert notes == []


def run_cli(*args, timeout=180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pancreas_ssl_seg", "segment",
                           *map(str, args), "--device", "cpu", "--progress", "none"],
                          capture_output=True, text=True, encoding="utf-8", timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_cli_all_nan_refused_some_nan_runs_with_the_warning(ct, tmp_path, random_bundle):
    array, mask, counts = planted(ct)
    some = tmp_path / "in" / "some-nan.nii.gz"
    every = tmp_path / "in" / "all-nan.nii.gz"
    some.parent.mkdir()
    sitk.WriteImage(to_image(array, ct), str(some))
    sitk.WriteImage(to_image(np.full(array.shape, np.nan, np.float32), ct), str(every))

    refused = run_cli(every, "-o", tmp_path / "refused", "--model", random_bundle)
    assert refused.returncode == 2
    assert refused.stderr == "error: all-nan.nii.gz: every voxel is NaN or infinite; expected a " \
                             "CT volume\n"
    assert not (tmp_path / "refused").exists() or not any((tmp_path / "refused").iterdir())

    ran = run_cli(some, "-o", tmp_path / "out", "--model", random_bundle, "--fast")
    assert (ran.returncode, ran.stderr) == (0, "")
    report = json.loads((tmp_path / "out" / "some-nan_report.json").read_text(encoding="utf-8"))
    assert any(w.startswith(f"some-nan.nii.gz: {sum(counts.values())} voxel(s) are not finite")
               and "index k = 5, 40-41, 90" in w for w in report["warnings"]), report["warnings"]


# ---- item 2: implausible voxel sizes, refused from the header ----------------------------------

def nifti_header(size_xyz, spacing_xyz, datatype=4, bitpix=16) -> bytes:
    header = bytearray(352)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 3, *size_xyz, 1, 1, 1, 1)
    struct.pack_into("<hh", header, 70, datatype, bitpix)
    struct.pack_into("<8f", header, 76, 1, *spacing_xyz, 1, 1, 1, 1)
    struct.pack_into("<f", header, 108, 352.0)
    struct.pack_into("<f", header, 112, 1.0)
    header[344:348] = b"n+1\0"
    return bytes(header)


def forbid_reading_voxels(monkeypatch):
    def refuse(self, *args):
        pytest.fail("voxels were read although the header should have been refused")
    monkeypatch.setattr(sitk.ImageFileReader, "Execute", refuse)
    monkeypatch.setattr(sitk.ImageSeriesReader, "Execute", refuse)


@pytest.mark.parametrize("spacing, shown", [
    ((100.0, 1.0, 1.0), r"\[100.0, 1.0, 1.0\]"),      # cm written as mm x 10, or a broken header
    ((0.0008, 0.0008, 0.002), r"\[0.0008, 0.0008, 0.002\]"),  # metres
    ((0.8, 0.8, 25.0), r"\[0.8, 0.8, 25.0\]"),
])
def test_implausible_spacing_refused_before_reading_voxels(tmp_path, monkeypatch, spacing, shown):
    path = tmp_path / "odd.nii.gz"
    path.write_bytes(gzip.compress(nifti_header((64, 64, 32), spacing) + bytes(64 * 64 * 32 * 2)))
    forbid_reading_voxels(monkeypatch)
    with pytest.raises(InputError, match=rf"^odd.nii.gz: voxel spacing {shown} mm is not "
                                         r"plausible for CT \(expected 0.05 to 20 mm"):
        as_image(path)


def test_spacing_limits_themselves_are_accepted(tmp_path):
    volume = np.random.default_rng(0).normal(0, 300, (4, 6, 6)).astype(np.float32)
    assert as_image(volume, spacing_mm=(0.05, 0.05, 20.0)).GetSpacing() == (0.05, 0.05, 20.0)
    with pytest.raises(InputError, match="input array: voxel spacing"):
        as_image(volume, spacing_mm=(0.8, 0.8, 20.5))


def test_dicom_slice_gap_beyond_20_mm_refused_from_headers(tmp_path, monkeypatch):
    folder = tmp_path / "gap50"
    write_dicom_series(folder, "1.2.826.0.1.3680043.8.498.1212", gaps_mm=[50.0] * 9)
    forbid_reading_voxels(monkeypatch)
    with pytest.raises(InputError, match=r"^gap50: voxel spacing \[2.0, 2.0, 50.0\] mm"):
        as_image(folder)


def test_cli_refuses_implausible_spacing_with_exit_2(tmp_path):
    path = tmp_path / "metres.nii.gz"
    path.write_bytes(gzip.compress(nifti_header((32, 32, 8), (0.0008, 0.0008, 0.003))
                                   + bytes(32 * 32 * 8 * 2)))
    # the shipped bundle: the refusal comes before any network is built
    completed = run_cli(path, "-o", tmp_path / "out")
    assert completed.returncode == 2, completed.stderr
    assert completed.stderr.startswith("error: metres.nii.gz: voxel spacing [0.0008, 0.0008, "
                                       "0.003] mm is not plausible for CT")
    assert len(completed.stderr.splitlines()) == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ---- item 3: intensities far outside CT's range ------------------------------------------------

def scaled(image: sitk.Image, factor: float, offset: float = 0.0) -> sitk.Image:
    return to_image(sitk.GetArrayFromImage(image) * factor + offset, image)


def test_real_ct_raises_no_intensity_warning(ct, shared_data):
    assert check_ct_intensities(ct) == []
    assert check_ct_intensities(as_image(shared_data / "ct-dicom-series")) == []


def test_ct_scaled_by_ten_is_far_outside(ct):
    warnings = check_ct_intensities(scaled(ct, 10.0))
    # 1st / 99th percentile of the real CT (-1012 / 307 HU, measured) times ten
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("intensities far outside CT's range: 1st/50th/99th percentile "
                                  "-10120/")
    assert "darker than air" in warnings[0]


def test_dicom_series_scaled_by_two_is_darker_than_air(shared_data):
    """Mostly air (median -981 HU): doubled, the bulk of the scan is far darker than air."""
    warnings = check_ct_intensities(scaled(as_image(shared_data / "ct-dicom-series"), 2.0))
    assert len(warnings) == 1 and "darker than air" in warnings[0], warnings


def test_bright_far_beyond_bone_is_named(ct):
    """The top percent of voxels far above any tissue (a data set stored x10 with air clipped)."""
    array = sitk.GetArrayFromImage(ct)
    array[array > 200] *= 20.0
    warnings = check_ct_intensities(to_image(array, ct))
    assert len(warnings) == 1 and "brighter than any tissue (above 4000 HU)" in warnings[0]


def test_padding_outside_the_field_of_view_is_not_mistaken(ct):
    """-3024 outside a circular field of view (as Siemens/GE write it) is not 'darker than air'."""
    array = sitk.GetArrayFromImage(ct)
    _, rows, cols = array.shape
    y, x = np.ogrid[:rows, :cols]
    outside = (y - rows / 2) ** 2 + (x - cols / 2) ** 2 > (min(rows, cols) / 2) ** 2
    array[:, outside] = -3024.0
    assert outside.mean() > 0.05
    assert check_ct_intensities(to_image(array, ct)) == []


def test_missing_rescale_intercept_says_no_air(ct):
    warnings = check_ct_intensities(scaled(ct, 1.0, 1024.0))
    assert len(warnings) == 1 and "no air" in warnings[0] and "intercept" in warnings[0]
