"""Generators of malformed and unusual CT inputs for ``test_bad_inputs.py`` (issue 6, item 1).

Every input is written into a test's temporary folder from code: tiny synthetic volumes, DICOM
slices written by SimpleITK with explicit tags, hand-written NRRD/MetaImage/NIfTI headers, or a
damaged copy of the real 3 mm CT. ``INPUTS`` maps each case name to ``(level, make)`` where
``make(folder, example_ct) -> Path``.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk

MakeInput = Callable[[Path, Path], Path]
CT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"
MR_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.4"
AXIAL = "1\\0\\0\\0\\1\\0"
SAGITTAL = "0\\1\\0\\0\\0\\-1"


def ct_like(shape_zyx=(10, 32, 32), seed: int = 0) -> np.ndarray:
    """Soft tissue around 40 HU with an air margin: passes the CT intensity checks."""
    volume = np.random.default_rng(seed).normal(40.0, 30.0, shape_zyx).astype(np.float32)
    volume[:, :, :3] = -1000.0
    return volume


def write_volume(array: np.ndarray, path: Path, spacing=(2.0, 2.0, 4.0), vector=False) -> Path:
    image = sitk.GetImageFromArray(array, isVector=vector)
    image.SetSpacing(spacing[:image.GetDimension()])
    sitk.WriteImage(image, str(path))
    return path


def write_dicom_series(folder: Path, uid: str, volume_zyx: np.ndarray | None = None, *,
                       modality: str = "CT", gaps_mm=None, spacing_mm=(2.0, 2.0),
                       shift_y_mm_per_slice: float = 0.0, start: int = 0) -> list[Path]:
    """One DICOM file per axial slice of ``volume_zyx`` (int16 HU), with positions from
    ``gaps_mm`` (default 4 mm apart). ``shift_y_mm_per_slice`` shears the stack as a gantry
    tilt does (and sets the tilt tag to match)."""
    folder.mkdir(exist_ok=True)
    volume_zyx = ct_like() if volume_zyx is None else volume_zyx
    count = volume_zyx.shape[0]
    gaps_mm = [4.0] * (count - 1) if gaps_mm is None else gaps_mm
    z_mm = np.concatenate([[0.0], np.cumsum(gaps_mm)])
    tilt_deg = math.degrees(math.atan2(shift_y_mm_per_slice, float(np.median(gaps_mm))))
    paths = []
    for index in range(count):
        position = (0.0, shift_y_mm_per_slice * index, float(z_mm[index]))
        tags = {"0008|0060": modality, "0008|0016": MR_SOP_CLASS if modality == "MR" else
                CT_SOP_CLASS, "0008|0008": "ORIGINAL\\PRIMARY\\AXIAL",
                "0020|000d": uid + ".1", "0020|000e": uid,
                "0008|0018": f"{uid}.{start + index + 10}", "0020|0037": AXIAL,
                "0020|0032": "\\".join(f"{p:.4f}" for p in position),
                "0020|0013": str(start + index + 1), "0018|1120": f"{tilt_deg:.2f}"}
        paths.append(_write_dicom_slice(volume_zyx[index], folder / f"{uid[-6:]}-{index:03d}.dcm",
                                        spacing_mm, position, tags))
    return paths


def _write_dicom_slice(slice_yx: np.ndarray, path: Path, spacing_mm, position, tags) -> Path:
    image = sitk.GetImageFromArray(slice_yx.astype(np.int16)[None])
    image.SetSpacing((*spacing_mm, 1.0))
    image.SetOrigin(position)
    for tag, value in tags.items():
        image.SetMetaData(tag, value)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetFileName(str(path))
    writer.Execute(image)
    return path


def add_localizer(folder: Path, uid: str) -> Path:
    """A sagittal scout image inside series ``uid``, as some scanners export it."""
    tags = {"0008|0060": "CT", "0008|0016": CT_SOP_CLASS,
            "0008|0008": "ORIGINAL\\PRIMARY\\LOCALIZER", "0020|000d": uid + ".1",
            "0020|000e": uid, "0008|0018": uid + ".999", "0020|0037": SAGITTAL,
            "0020|0032": "30\\-100\\200", "0020|0013": "999"}
    return _write_dicom_slice(ct_like((1, 32, 32))[0], folder / "scout.dcm", (1.0, 1.0),
                              (30.0, -100.0, 200.0), tags)


def dicom_folder(name: str, **series) -> MakeInput:
    def make(tmp: Path, example_ct: Path) -> Path:
        write_dicom_series(tmp / name, "1.2.826.0.1.3680043.8.498.101", **series)
        return tmp / name
    return make


def mixed_series(tmp: Path, example_ct: Path) -> Path:
    folder = tmp / "mixed-series"
    write_dicom_series(folder, "1.2.826.0.1.3680043.8.498.201")
    write_dicom_series(folder, "1.2.826.0.1.3680043.8.498.202", ct_like((3, 32, 32)))
    return folder


def ct_and_larger_mr(tmp: Path, example_ct: Path) -> Path:
    folder = tmp / "ct-and-mr"
    write_dicom_series(folder, "1.2.826.0.1.3680043.8.498.301")
    write_dicom_series(folder, "1.2.826.0.1.3680043.8.498.302",
                       (ct_like((14, 32, 32)) + 1000).astype(np.int16), modality="MR")
    return folder


def localizer_in_series(tmp: Path, example_ct: Path) -> Path:
    folder = tmp / "with-scout"
    write_dicom_series(folder, "1.2.826.0.1.3680043.8.498.401")
    add_localizer(folder, "1.2.826.0.1.3680043.8.498.401")
    return folder


def localizer_only(tmp: Path, example_ct: Path) -> Path:
    (tmp / "scout-only").mkdir()
    add_localizer(tmp / "scout-only", "1.2.826.0.1.3680043.8.498.501")
    return tmp / "scout-only"


def missing_slice(tmp: Path, example_ct: Path) -> Path:
    folder = tmp / "missing-slice"
    write_dicom_series(folder, "1.2.826.0.1.3680043.8.498.601")
    sorted(folder.iterdir())[5].unlink()
    return folder


def corrupt_slice(tmp: Path, example_ct: Path) -> Path:
    folder = tmp / "corrupt-slice"
    victim = write_dicom_series(folder, "1.2.826.0.1.3680043.8.498.701")[4]
    victim.write_bytes(victim.read_bytes()[:900])
    return folder


def multiframe(tmp: Path, example_ct: Path) -> Path:
    """One enhanced-style file holding every slice as a frame (GDCM writes a 3-D image so)."""
    (tmp / "multiframe").mkdir()
    image = sitk.GetImageFromArray(ct_like().astype(np.int16))
    image.SetSpacing((2.0, 2.0, 4.0))
    image.SetMetaData("0008|0060", "CT")
    sitk.WriteImage(image, str(tmp / "multiframe" / "frames.dcm"))
    return tmp / "multiframe"


def text_file(path: Path, text: str = "not an image\n") -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def truncated_copy(source: Path, path: Path, keep: float = 0.5) -> Path:
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def truncated_raw_nifti(tmp: Path, example_ct: Path) -> Path:
    full = write_volume(ct_like().astype(np.int16), tmp / "full.nii")
    return truncated_copy(full, tmp / "cut-raw.nii", keep=0.6)


def folder_with(path: Path, *files: str) -> Path:
    path.mkdir()
    for name in files:
        (path / name).write_text("x", encoding="utf-8")
    return path


def symlink_loop(tmp: Path, example_ct: Path) -> Path:
    os.symlink(tmp / "loop-b.nii.gz", tmp / "loop-a.nii.gz")
    os.symlink(tmp / "loop-a.nii.gz", tmp / "loop-b.nii.gz")
    return tmp / "loop-a.nii.gz"


def broken_symlink(tmp: Path, example_ct: Path) -> Path:
    os.symlink(tmp / "gone.nii.gz", tmp / "dangling.nii.gz")
    return tmp / "dangling.nii.gz"


def fifo(tmp: Path, example_ct: Path) -> Path:
    os.mkfifo(tmp / "pipe.nii")
    return tmp / "pipe.nii"


def unreadable(tmp: Path, example_ct: Path) -> Path:
    path = write_volume(ct_like(), tmp / "locked.nrrd")
    path.chmod(0)
    return path


def unreadable_folder(tmp: Path, example_ct: Path) -> Path:
    folder = tmp / "locked-series"
    write_dicom_series(folder, "1.2.826.0.1.3680043.8.498.801")
    folder.chmod(0)
    return folder


def mhd_with_data_file(data_bytes: int | None, name: str) -> MakeInput:
    """A detached MetaImage header for 32x32x10 int16 voxels; its .raw file holds
    ``data_bytes`` bytes (``None``: the data file is missing)."""
    def make(tmp: Path, example_ct: Path) -> Path:
        path = tmp / name
        path.write_text("ObjectType = Image\nNDims = 3\nBinaryData = True\n"
                        "DimSize = 32 32 10\nElementType = MET_SHORT\nElementSpacing = 2 2 4\n"
                        f"ElementDataFile = {path.stem}.raw\n", encoding="utf-8")
        if data_bytes is not None:
            (tmp / f"{path.stem}.raw").write_bytes(bytes(data_bytes))
        return path
    return make


def nrrd(tmp: Path, name: str, directions: str, sizes="4 4 4", data: bytes | None = None) -> Path:
    header = (f"NRRD0004\ntype: short\ndimension: 3\nsizes: {sizes}\n"
              f"space: left-posterior-superior\nspace directions: {directions}\n"
              "encoding: raw\nendian: little\n\n")
    path = tmp / name
    path.write_bytes(header.encode() + (np.arange(64, dtype="<i2").tobytes() if data is None
                                        else data))
    return path


def metaimage(tmp: Path, name: str, fields: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(b"ObjectType = Image\nNDims = 3\nBinaryData = True\n" + fields.encode()
                     + b"ElementDataFile = LOCAL\n" + data)
    return path


HUGE = "DimSize = 4000 4000 4000\nElementType = MET_SHORT\nElementSpacing = 1 1 1\n"


def huge_raw_mha(tmp: Path, example_ct: Path) -> Path:
    return metaimage(tmp, "huge-raw.mha", HUGE, bytes(1000))


def huge_compressed_mha(tmp: Path, example_ct: Path) -> Path:
    data = gzip.compress(bytes(1000))
    return metaimage(tmp, "huge-zip.mha", HUGE + f"CompressedData = True\nCompressedDataSize = "
                     f"{len(data)}\n", data)


def huge_nifti_gz(tmp: Path, example_ct: Path) -> Path:
    """A valid NIfTI-1 header declaring 4000^3 int16 voxels, followed by 1 kB of zeros."""
    header = bytearray(348)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 3, 4000, 4000, 4000, 1, 1, 1, 1)
    struct.pack_into("<hh", header, 70, 4, 16)  # datatype int16, bitpix
    struct.pack_into("<8f", header, 76, 1, 1, 1, 1, 1, 1, 1, 1)
    struct.pack_into("<f", header, 108, 352.0)  # vox_offset
    struct.pack_into("<f", header, 112, 1.0)  # scl_slope
    header[344:348] = b"n+1\0"
    path = tmp / "huge.nii.gz"
    path.write_bytes(gzip.compress(bytes(header) + bytes(4) + bytes(1000)))
    return path


def nifti_with_pixdim_y(value: float, name: str) -> MakeInput:
    def make(tmp: Path, example_ct: Path) -> Path:
        path = write_volume(ct_like().astype(np.int16), tmp / name)
        data = bytearray(path.read_bytes())
        data[84:88] = struct.pack("<f", value)  # pixdim[2]: the y voxel size
        path.write_bytes(bytes(data))
        return path
    return make


def metaimage_with_ndims(value: str) -> MakeInput:
    """A valid MetaImage whose NDims line says ``value`` (ITK crashed the process on -5)."""
    def make(tmp: Path, example_ct: Path) -> Path:
        path = write_volume(ct_like().astype(np.int16), tmp / "ndims.mha")
        path.write_bytes(path.read_bytes().replace(b"NDims = 3", f"NDims = {value}".encode(), 1))
        return path
    return make


def nifti_with_infinite_sform(tmp: Path, example_ct: Path) -> Path:
    """A valid NIfTI whose sform rows hold -inf and 1e16: ITK reads it with a meaningless
    geometry, and fuzzing found such values that made its reader hang."""
    path = write_volume(ct_like().astype(np.int16), tmp / "inf-sform.nii")
    data = bytearray(path.read_bytes())
    data[254:256] = struct.pack("<h", 1)  # sform_code: scanner coordinates, so srow is used
    data[280:328] = struct.pack("<12f", -np.inf, 1e16, 0, 0, 0, 1e16, 0, 0, 0, 0, 1, 0)
    path.write_bytes(bytes(data))
    return path


def with_value(value: float) -> np.ndarray:
    volume = ct_like()
    volume[4, 10, 10] = value
    return volume


def complex_image(tmp: Path, example_ct: Path) -> Path:
    volume = ct_like()
    return write_volume((volume + 1j * volume).astype(np.complex64), tmp / "complex.mha")


def mr_like(tmp: Path, example_ct: Path) -> Path:
    """A T1-like scan: intensities 0..~1000 with dark background at 0, no air at -1000."""
    volume = ct_like(seed=3)
    volume = np.where(volume < -500, 0.0, np.abs(volume) * 8.0).astype(np.float32)
    return write_volume(volume, tmp / "mr-like.nrrd")


def no_pancreas(tmp: Path, example_ct: Path) -> Path:
    """The head-most 30 mm of the real CT: lung bases and liver dome, well above the pancreas."""
    image = sitk.ReadImage(str(example_ct))
    path = tmp / "no-pancreas.nii.gz"
    sitk.WriteImage(image[:, :, -10:], str(path))
    return path


def small_fov(tmp: Path, example_ct: Path) -> Path:
    image = sitk.ReadImage(str(example_ct))
    path = tmp / "small-fov.nii.gz"
    sitk.WriteImage(image[50:58, 40:48, 50:58], str(path))
    return path


def nifti_named_nrrd(tmp: Path, example_ct: Path) -> Path:
    """A NIfTI file with the wrong extension: read by content, a valid CT."""
    path = write_volume(ct_like(), tmp / "renamed.nii")
    return path.rename(tmp / "renamed.nrrd")


INPUTS: dict[str, tuple[str, MakeInput]] = {
    # file level
    "missing_file": ("file", lambda tmp, ct: tmp / "nope.nii.gz"),
    "empty_file": ("file", lambda tmp, ct: text_file(tmp / "empty.nii.gz", "")),
    "text_named_nii_gz": ("file", lambda tmp, ct: text_file(tmp / "notes.nii.gz")),
    "truncated_gzip": ("file", lambda tmp, ct: truncated_copy(ct, tmp / "cut.nii.gz")),
    "truncated_raw_nifti": ("file", truncated_raw_nifti),
    "unsupported_extension": ("file", lambda tmp, ct: text_file(tmp / "scan.png")),
    "nifti_with_nrrd_extension": ("file", nifti_named_nrrd),
    "directory_named_like_file": ("file", lambda tmp, ct: folder_with(tmp / "folder.nii.gz")),
    "folder_without_dicom": ("file", lambda tmp, ct: folder_with(tmp / "misc", "readme.txt")),
    "unreadable_permissions": ("file", unreadable),
    "symlink_loop": ("file", symlink_loop),
    "broken_symlink": ("file", broken_symlink),
    "fifo": ("file", fifo),
    "unreadable_folder": ("file", unreadable_folder),
    "mhd_data_file_missing": ("file", mhd_with_data_file(None, "no-data.mhd")),
    "mhd_data_file_short": ("file", mhd_with_data_file(5000, "short-data.mhd")),
    # header level
    "zero_spacing_nifti": ("header", nifti_with_pixdim_y(0.0, "zero-pixdim.nii")),
    "zero_spacing_nrrd": ("header", lambda tmp, ct: nrrd(tmp, "zero.nrrd",
                                                         "(1,0,0) (0,0,0) (0,0,1)")),
    "negative_spacing_nifti": ("header", nifti_with_pixdim_y(-2.0, "negative-pixdim.nii")),
    "non_orthogonal_direction": ("header", lambda tmp, ct: nrrd(tmp, "sheared.nrrd",
                                                                "(1,0,0) (1,1,0) (0,0,1)")),
    "huge_size_raw_data": ("header", huge_raw_mha),
    "huge_size_compressed": ("header", huge_compressed_mha),
    "huge_size_nifti_gz": ("header", huge_nifti_gz),
    "image_2d": ("header", lambda tmp, ct: write_volume(ct_like()[0], tmp / "flat.nrrd")),
    "single_slice_3d": ("header", lambda tmp, ct: write_volume(ct_like((1, 32, 32)),
                                                               tmp / "one-slice.nrrd")),
    "image_4d": ("header", lambda tmp, ct: write_volume(
        np.stack([ct_like(), ct_like()]), tmp / "time.nii.gz", spacing=(2.0, 2.0, 4.0, 1.0))),
    "rgb": ("header", lambda tmp, ct: write_volume(np.zeros((10, 32, 32, 3), np.uint8),
                                                   tmp / "rgb.nrrd", vector=True)),
    "complex": ("header", complex_image),
    "metaimage_negative_ndims": ("header", metaimage_with_ndims("-5")),
    "nifti_infinite_sform": ("header", nifti_with_infinite_sform),
    # DICOM level
    "dicom_mixed_series": ("dicom", mixed_series),
    "dicom_ct_and_larger_mr": ("dicom", ct_and_larger_mr),
    "dicom_missing_slice": ("dicom", missing_slice),
    "dicom_inconsistent_spacing": ("dicom", dicom_folder(
        "uneven-gaps", gaps_mm=[4.0, 4.0, 4.0, 6.0, 4.0, 4.0, 2.0, 4.0, 4.0])),
    "dicom_duplicate_position": ("dicom", dicom_folder(
        "duplicate-slice", gaps_mm=[4.0, 4.0, 4.0, 0.0, 4.0, 4.0, 4.0, 4.0, 4.0])),
    "dicom_localizer_in_series": ("dicom", localizer_in_series),
    "dicom_localizer_only": ("dicom", localizer_only),
    "dicom_gantry_tilt": ("dicom", dicom_folder("tilted", shift_y_mm_per_slice=1.07)),
    "dicom_corrupt_slice": ("dicom", corrupt_slice),
    "dicom_multiframe": ("dicom", multiframe),
    # content level
    "constant_volume": ("content", lambda tmp, ct: write_volume(np.full((10, 32, 32), 40,
                                                                        np.int16), tmp / "c.mha")),
    "nan_voxel": ("content", lambda tmp, ct: write_volume(with_value(np.nan), tmp / "n.nrrd")),
    "inf_voxel": ("content", lambda tmp, ct: write_volume(with_value(np.inf), tmp / "i.nrrd")),
    "mr_like_intensities": ("content", mr_like),
    "ct_without_pancreas": ("content", no_pancreas),
    "very_small_fov": ("content", small_fov),
}
