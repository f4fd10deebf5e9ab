"""The NIfTI-1/2 header fields the byte-level guards read (:mod:`.header_guards`,
:mod:`.non_finite`), parsed in one place. ITK reads the header too, but does not say what these
guards need (stored type and size, vox_offset, orientation codes) and cannot survive some values.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

NIFTI1_SIZE, NIFTI2_SIZE = 348, 540
# Per version: (integer dims format, float format, offsets of datatype, bitpix, dim[0..7],
# pixdim[0..7], vox_offset, qform_code, sform_code, quatern_b..qoffset_z + srow_x/y/z).
_LAYOUTS = {
    NIFTI1_SIZE: dict(dim="h", real="f", code_int="h", datatype=70, bitpix=72, dim_at=40,
                      pixdim=76, vox_offset=108, vox_offset_kind="f", codes=252, geometry=256),
    NIFTI2_SIZE: dict(dim="q", real="d", code_int="i", datatype=12, bitpix=14, dim_at=16,
                      pixdim=104, vox_offset=168, vox_offset_kind="q", codes=344, geometry=352),
}


@dataclass(frozen=True)
class NiftiHeader:
    """One parsed header: ``order`` is the byte order ("<" or ">"), ``size`` 348 or 540."""

    order: str
    size: int
    raw: bytes

    def _unpack(self, fmt: str, at: int) -> tuple:
        return struct.unpack_from(self.order + fmt, self.raw, at)

    @property
    def _layout(self) -> dict:
        return _LAYOUTS[self.size]

    @property
    def ndim(self) -> int:
        return self._unpack(self._layout["dim"], self._layout["dim_at"])[0]

    @property
    def dims(self) -> tuple[int, ...]:
        """dim[1..7] as stored (only the first ``ndim`` are meaningful)."""
        layout = self._layout
        return self._unpack("7" + layout["dim"], layout["dim_at"] + struct.calcsize(layout["dim"]))

    @property
    def datatype(self) -> int:
        return self._unpack("h", self._layout["datatype"])[0]

    @property
    def bitpix(self) -> int:
        return self._unpack("h", self._layout["bitpix"])[0]

    @property
    def pixdim(self) -> tuple[float, ...]:
        """pixdim[1..3]: the voxel size (mm) as stored."""
        return self._unpack("8" + self._layout["real"], self._layout["pixdim"])[1:4]

    @property
    def vox_offset(self) -> int:
        """Byte offset of the voxel data (NIfTI-1 stores it as a float: truncated)."""
        return int(self._unpack(self._layout["vox_offset_kind"], self._layout["vox_offset"])[0])

    @property
    def orientation_codes(self) -> tuple[int, int]:
        """(qform_code, sform_code)."""
        return self._unpack("2" + self._layout["code_int"], self._layout["codes"])

    @property
    def geometry(self) -> tuple[float, ...]:
        """quatern_b, c, d, qoffset_x, y, z and srow_x, y, z (18 values, contiguous)."""
        return self._unpack("18" + self._layout["real"], self._layout["geometry"])

    @property
    def voxel_count(self) -> int | None:
        """Voxels the header declares; ``None`` when ``ndim``/``dim`` make no sense."""
        ndim, dims = self.ndim, self.dims
        if not 1 <= ndim <= 7 or min(dims[:ndim]) < 1:
            return None
        return math.prod(dims[:ndim])


def parse_nifti_header(header: bytes) -> NiftiHeader | None:
    """The header at the start of ``header`` (either byte order), else ``None``."""
    if len(header) < NIFTI1_SIZE:
        return None
    for order in "<>":
        size = struct.unpack_from(order + "i", header)[0]
        if size in _LAYOUTS and len(header) >= size:
            return NiftiHeader(order, size, bytes(header[:size]))
    return None


def read_nifti_header(path: Path) -> NiftiHeader | None:
    """The header of a ``.nii``/``.nii.gz`` file; ``None`` when unreadable or not NIfTI (the
    gzip check or ITK reports those)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as stream:
            return parse_nifti_header(stream.read(NIFTI2_SIZE))
    except (EOFError, OSError, zlib.error):
        return None
