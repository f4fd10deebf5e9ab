"""The uncertainty volume's own gzip step (issue 16): ITK writes the NIfTI uncompressed and
``outputs._gzip_nifti`` compresses it, storing deflate blocks when the data barely compresses.
The file must hold the very NIfTI stream ITK's own ``.nii.gz`` holds, read back identically by
ITK, stay small when the data compresses, and leave no uncompressed temporary behind."""

import gzip
import os

import numpy as np
import SimpleITK as sitk

from pancreas_ssl_seg.outputs import _gzip_nifti, _remove_stale_temporaries
from pancreas_ssl_seg.temporaries import TEMPORARY_PREFIX


def _image(array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.8, 0.7, 1.5))
    image.SetOrigin((10.0, -20.0, 30.0))
    image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    return image


def _check_same_as_itk(tmp_path, array: np.ndarray) -> int:
    image = _image(array)
    ours, itk = tmp_path / "ours.nii.gz", tmp_path / "itk.nii.gz"
    _gzip_nifti(image, ours)
    sitk.WriteImage(image, str(itk), useCompression=True)
    assert gzip.decompress(ours.read_bytes()) == gzip.decompress(itk.read_bytes())
    back, reference = sitk.ReadImage(str(ours)), sitk.ReadImage(str(itk))
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(back), array)
    # NIfTI keeps float32 geometry: as ITK's own file reads back, and close to what was written
    assert back.GetSpacing() == reference.GetSpacing() and back.GetOrigin() == reference.GetOrigin()
    assert back.GetDirection() == reference.GetDirection()
    np.testing.assert_allclose(back.GetSpacing(), image.GetSpacing(), rtol=1e-6)
    np.testing.assert_allclose(back.GetDirection(), image.GetDirection())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["itk.nii.gz", "ours.nii.gz"]
    return ours.stat().st_size


def test_incompressible_values_are_stored_and_read_back_identically(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.random((40, 64, 80), dtype=np.float32)
    size = _check_same_as_itk(tmp_path, array)
    assert size >= array.nbytes  # stored blocks: the bytes as they are, plus framing


def test_compressible_values_stay_small(tmp_path):
    array = np.zeros((40, 64, 80), np.float32)
    array[10:20, 20:30, 30:40] = 0.25
    size = _check_same_as_itk(tmp_path, array)
    assert size < array.nbytes / 50


def test_an_uncompressed_temporary_of_a_killed_writer_is_removed(tmp_path):
    final = tmp_path / "case_uncertainty.nii.gz"
    dead = 2**22 + 12345  # above Linux's default pid_max: no such process
    stale = tmp_path / f"{TEMPORARY_PREFIX}{dead}-abcd1234-case_uncertainty.nii"
    running = tmp_path / f"{TEMPORARY_PREFIX}{os.getpid()}-abcd1234-case_uncertainty.nii"
    stale.write_bytes(b"x")
    running.write_bytes(b"x")
    _remove_stale_temporaries({"uncertainty": final})
    assert not stale.exists() and running.exists()
