"""The one NIfTI header parser of the byte-level guards: a file ITK wrote, and a big-endian
NIfTI-2 header packed here field by field from the standard's offsets."""

from __future__ import annotations

import struct

import numpy as np
import SimpleITK as sitk

from pancreas_ssl_seg.nifti_header import parse_nifti_header, read_nifti_header


def test_header_of_a_file_itk_wrote(tmp_path):
    image = sitk.GetImageFromArray(np.zeros((4, 5, 6), np.float32))
    image.SetSpacing((0.7, 0.8, 2.5))
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(image, str(path))
    header = read_nifti_header(path)
    assert (header.order, header.size, header.ndim, header.dims[:3]) == ("<", 348, 3, (6, 5, 4))
    assert (header.datatype, header.bitpix, header.voxel_count) == (16, 32, 120)
    assert np.allclose(header.pixdim, (0.7, 0.8, 2.5))
    assert header.vox_offset == 352  # 348 bytes + the 4-byte extension flag
    assert any(header.orientation_codes)  # ITK records the orientation


def test_big_endian_nifti2_fields_at_their_offsets():
    raw = bytearray(540)
    struct.pack_into(">i", raw, 0, 540)
    struct.pack_into(">hh", raw, 12, 64, 64)                  # datatype float64, bitpix
    struct.pack_into(">8q", raw, 16, 3, 7, 8, 9, 1, 1, 1, 1)  # dim[0..7]
    struct.pack_into(">8d", raw, 104, 1, 0.5, 0.6, 3.0, 0, 0, 0, 0)
    struct.pack_into(">q", raw, 168, 544)
    struct.pack_into(">2i", raw, 344, 0, 0)
    struct.pack_into(">18d", raw, 352, *range(18))
    header = parse_nifti_header(bytes(raw))
    assert (header.order, header.size, header.ndim, header.voxel_count) == (">", 540, 3, 504)
    assert (header.datatype, header.bitpix, header.vox_offset) == (64, 64, 544)
    assert header.pixdim == (0.5, 0.6, 3.0) and header.orientation_codes == (0, 0)
    assert header.geometry == tuple(float(v) for v in range(18))


def test_not_a_header():
    assert parse_nifti_header(b"\0" * 347) is None
    assert parse_nifti_header(struct.pack("<i", 540) + b"\0" * 400) is None  # too short for v2
    assert parse_nifti_header(struct.pack("<i", 123) + b"\0" * 600) is None
