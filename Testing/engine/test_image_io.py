"""Input reading and checks: real NIfTI and DICOM data, and every kind of bad input we refuse."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from pancreas_ssl_seg.errors import InputError
from pancreas_ssl_seg.ct_plausibility import check_ct_intensities
from pancreas_ssl_seg.image_io import as_image, read_image


@pytest.fixture(scope="module")
def dicom_folder(shared_data: Path) -> Path:
    return shared_data / "ct-dicom-series"


def dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file())


def copy_series(files: list[Path], folder: Path) -> Path:
    folder.mkdir()
    for file in files:
        shutil.copy(file, folder)
    return folder


def write_small_ct_series(folder: Path, series_uid: str, slices: int = 3) -> None:
    """A tiny extra CT series (16×16) written by SimpleITK, to put two series in one folder."""
    rng = np.random.default_rng(0)
    volume = sitk.GetImageFromArray(rng.integers(-1000, 1000, (slices, 16, 16)).astype(np.int16))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for index in range(slices):
        slice_image = volume[:, :, index]
        for tag, value in [("0008|0060", "CT"), ("0008|0016", "1.2.840.10008.5.1.4.1.1.2"),
                           ("0020|000d", series_uid + ".9"), ("0020|000e", series_uid),
                           ("0008|0018", f"{series_uid}.{index + 10}"),
                           ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0020|0032", f"0\\0\\{2.0 * index}"),
                           ("0020|0013", str(index + 1))]:
            slice_image.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"extra{index}.dcm"))
        writer.Execute(slice_image)


def test_reads_real_nifti_as_float32_3d(example_ct: Path):
    image = as_image(example_ct)
    assert image.GetSize() == (122, 101, 112)
    assert image.GetSpacing() == pytest.approx((3.0, 3.0, 3.0))
    assert image.GetPixelID() == sitk.sitkFloat32
    original = sitk.ReadImage(str(example_ct))
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image),
                                  sitk.GetArrayViewFromImage(original).astype(np.float32))
    assert check_ct_intensities(image) == []


def test_reads_real_dicom_series_folder(dicom_folder: Path):
    notes: list[str] = []
    image = as_image(dicom_folder, notes=notes)
    assert image.GetSize() == (512, 512, 20)
    assert image.GetSpacing() == pytest.approx((0.9765625, 0.9765625, 2.0))
    assert notes == []
    assert check_ct_intensities(image) == []


def test_several_series_picks_largest_ct_and_notes_it(dicom_folder: Path, tmp_path: Path):
    folder = copy_series(dicom_files(dicom_folder), tmp_path / "two-series")
    write_small_ct_series(folder, "1.2.826.0.1.3680043.8.498.77")
    notes: list[str] = []
    image = read_image(folder, notes)
    assert image.GetSize() == (512, 512, 20)
    assert len(notes) == 1 and "2 DICOM series" in notes[0] and "two-series" in notes[0]


def test_missing_dicom_slice_is_refused_naming_the_folder(dicom_folder: Path, tmp_path: Path):
    files = dicom_files(dicom_folder)
    folder = copy_series(files[:9] + files[10:], tmp_path / "gap-series")
    with pytest.raises(InputError, match=r"gap-series: .*not uniformly spaced"):
        as_image(folder)


def test_corrupt_dicom_slice_is_refused_naming_the_folder(dicom_folder: Path, tmp_path: Path):
    folder = copy_series(dicom_files(dicom_folder), tmp_path / "corrupt-series")
    victim = dicom_files(folder)[10]
    victim.write_bytes(victim.read_bytes()[:2000])
    with pytest.raises(InputError, match=r"^corrupt-series: "):
        as_image(folder)


def test_array_with_geometry(tmp_path: Path):
    array = np.random.default_rng(1).normal(0, 300, (4, 5, 6))
    image = as_image(array, spacing_mm=(0.8, 0.9, 2.5), origin=(1, 2, 3))
    assert image.GetSize() == (6, 5, 4)
    assert image.GetSpacing() == pytest.approx((0.8, 0.9, 2.5))
    assert image.GetOrigin() == pytest.approx((1, 2, 3))
    np.testing.assert_allclose(sitk.GetArrayViewFromImage(image), array.astype(np.float32))
    with pytest.raises(InputError, match="spacing_mm"):
        as_image(array)


def write_image(array: np.ndarray, path: Path, spacing=None, vector=False) -> Path:
    image = sitk.GetImageFromArray(array, isVector=vector)
    if spacing is not None:
        image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


def nifti_with_zero_spacing(tmp_path: Path) -> Path:
    path = write_image(np.arange(64, dtype=np.int16).reshape(4, 4, 4), tmp_path / "flat.nii",
                       spacing=(1.0, 2.0, 3.0))
    header = bytearray(path.read_bytes())
    header[84:88] = struct.pack("<f", 0.0)  # pixdim[2]
    path.write_bytes(bytes(header))
    return path


def nrrd_with_zero_spacing(tmp_path: Path) -> Path:
    header = ("NRRD0004\ntype: short\ndimension: 3\nsizes: 4 4 4\nspace: left-posterior-superior\n"
              "space directions: (1,0,0) (0,0,0) (0,0,1)\nencoding: raw\nendian: little\n\n")
    path = tmp_path / "zero.nrrd"
    path.write_bytes(header.encode() + np.arange(64, dtype="<i2").tobytes())
    return path


def ct_like(shape=(6, 8, 8)) -> np.ndarray:
    return np.random.default_rng(0).normal(0, 300, shape).astype(np.float32)


BAD_INPUTS = {
    "missing": (lambda tmp, ex: tmp / "nope.nii.gz", "no such file"),
    "text_named_nii_gz": (lambda tmp, ex: _text(tmp / "notes.nii.gz"), "notes.nii.gz: "),
    "truncated_gzip": (lambda tmp, ex: _truncated(ex, tmp / "cut.nii.gz"),
                       "cut.nii.gz: .*truncated"),
    "2d": (lambda tmp, ex: write_image(ct_like((8, 8)), tmp / "flat.nrrd"), "flat.nrrd: is 2-D"),
    "4d": (lambda tmp, ex: write_image(ct_like((2, 3, 4, 5)), tmp / "time.nii.gz"),
           "time.nii.gz: is 4-D"),
    "rgb": (lambda tmp, ex: write_image(np.zeros((4, 5, 6, 3), np.uint8), tmp / "rgb.nrrd",
                                        vector=True),
            "rgb.nrrd: has 3 components"),
    "empty_folder": (lambda tmp, ex: _folder(tmp / "empty"), "empty: folder is empty"),
    "not_dicom_folder": (lambda tmp, ex: _folder(tmp / "misc", "readme.txt"),
                         "misc: no DICOM series"),
    "constant": (lambda tmp, ex: write_image(np.full((4, 5, 6), 7, np.int16), tmp / "c.mha"),
                 "c.mha: every voxel has the value 7"),
    "all_nan": (lambda tmp, ex: write_image(np.full((4, 5, 6), np.nan, np.float32),
                                            tmp / "n.nrrd"),
                "n.nrrd: every voxel is NaN or infinite"),
    "zero_spacing_nifti": (lambda tmp, ex: nifti_with_zero_spacing(tmp), "flat.nii: .*spacing"),
    "zero_spacing_nrrd": (lambda tmp, ex: nrrd_with_zero_spacing(tmp), "zero.nrrd: .*[Ss]pacing"),
    "wrong_suffix": (lambda tmp, ex: _text(tmp / "scan.png"), "scan.png: unsupported file type"),
}


def _text(path: Path) -> Path:
    path.write_text("not an image\n", encoding="utf-8")
    return path


def _truncated(source: Path, path: Path) -> Path:
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _folder(path: Path, *files: str) -> Path:
    path.mkdir()
    for name in files:
        (path / name).write_text("x", encoding="utf-8")
    return path


@pytest.mark.parametrize("kind", sorted(BAD_INPUTS))
def test_bad_inputs_raise_input_error_naming_the_file(kind: str, tmp_path: Path, example_ct: Path):
    make, message = BAD_INPUTS[kind]
    path = make(tmp_path, example_ct)
    with pytest.raises(InputError, match=message) as raised:
        as_image(path)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("array, spacing, message", [
    (ct_like((8, 8)), (1, 1, 1), "2 dimensions"),
    (ct_like(), (1, 0, 1), "positive"),
    (ct_like(), (1, -1, 1), "positive"),
    (ct_like().astype(np.complex64), (1, 1, 1), "dtype"),
])
def test_bad_arrays(array, spacing, message):
    with pytest.raises(InputError, match=message):
        as_image(array, spacing_mm=spacing)


def test_single_time_point_4d_is_accepted(tmp_path: Path):
    array = ct_like((1, 6, 8, 8))
    image = sitk.JoinSeries([sitk.GetImageFromArray(array[0])])
    assert image.GetDimension() == 4
    assert as_image(image).GetSize() == (8, 8, 6)


def test_mr_like_intensities_warn(example_ct: Path):
    ct = sitk.ReadImage(str(example_ct), sitk.sitkFloat32)
    mr_like = sitk.RescaleIntensity(ct, 0.0, 1000.0)
    warnings = check_ct_intensities(mr_like)
    assert len(warnings) == 1 and "no air" in warnings[0]
    assert check_ct_intensities(ct) == []
