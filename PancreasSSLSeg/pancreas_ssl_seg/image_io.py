"""Reading and checking input CT: image files, DICOM series folders, SimpleITK images, arrays.

Everything the engine accepts passes through :func:`as_image`, which returns a float32 3-D scalar
``SimpleITK.Image`` or raises :class:`InputError` naming the file and the problem. Reading uses
SimpleITK (``ImageFileReader``, ``ImageSeriesReader``); this module only adds the checks and
messages. Files are read header first: the declared size is checked against the data the file
holds (``header_guards``), against plausible voxel sizes (``ct_plausibility``) and against the
memory available (``memory``, :class:`ResourceError`) before any voxel is allocated. DICOM
folders: ``dicom_folder``; NaN and infinite voxels: ``non_finite``.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .case_names import IMAGE_SUFFIXES
from .ct_plausibility import check_spacing, field_of_view_notes
from .dicom_folder import read_dicom_folder
from .errors import InputError
from .header_guards import (check_declared_data, check_gzip_complete, check_header_before_itk,
                            nifti_orientation_notes, nifti_stored_bytes)
from .memory import GridCheck, check_read_memory
from .non_finite import nifti_non_finite, replace_non_finite, restore_non_finite
from .sitk_reading import bytes_per_voxel, itk_reason, itk_warnings_off

# Direction cosines written with 6 decimals are orthonormal to about 1e-6; a sheared grid is not.
DIRECTION_TOLERANCE = 1e-3


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES)


def read_image(path: str | Path, notes: list[str] | None = None,
               check_grid: GridCheck | None = None) -> sitk.Image:
    """Read an image file (.nii/.nii.gz/.nrrd/.mha/.mhd) or a DICOM series folder, unchecked.

    ``notes`` (if given) receives remarks a user should see, e.g. which of several series was read.
    ``check_grid`` (if given) may refuse the declared size and spacing before the voxels are
    allocated; an implausible spacing is refused here first. Voxel values are those the file holds
    (NaN included: see ``non_finite.nifti_non_finite``).
    """
    path = Path(path)
    _check_path(path)
    if path.is_dir():
        return read_dicom_folder(path, notes if notes is not None else [], check_grid)
    if not path.name.lower().endswith(IMAGE_SUFFIXES):
        raise InputError(f"{path.name}: unsupported file type; expected one of "
                         f"{', '.join(IMAGE_SUFFIXES)} or a DICOM series folder")
    check_header_before_itk(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        with itk_warnings_off():
            reader.ReadImageInformation()
    except RuntimeError as error:
        raise InputError(f"{path.name}: cannot be read as an image "
                         f"({itk_reason(error)})") from None
    size = tuple(reader.GetSize())
    data_bytes = math.prod(size) * bytes_per_voxel(reader.GetPixelID(),
                                                   reader.GetNumberOfComponents())
    # ITK reports float voxels for NIfTI data it will scale (scl_slope/scl_inter); the file holds
    # the stored type (e.g. int16): compare the data with that.
    stored_bytes = nifti_stored_bytes(path) if path.name.lower().endswith(".nii") else None
    check_declared_data(path, size, data_bytes if stored_bytes is None else stored_bytes)
    _check_header_geometry(path.name, size, tuple(reader.GetSpacing()))
    check_read_memory(path.name, size, data_bytes)
    if check_grid is not None and len(size) >= 3:
        check_grid(size[:3], tuple(reader.GetSpacing())[:3], path.name)
    scan = None
    if path.name.lower().endswith((".nii", ".nii.gz")):
        scan = nifti_non_finite  # also checks a .nii.gz decompresses to its end
    elif path.name.lower().endswith(".gz"):
        scan = check_gzip_complete
    # The byte scan (zlib) and ITK's read both release the GIL, so they overlap on two cores
    # (512x512x224 int16 .nii.gz: 1.27 -> 0.98 s, benchmarks/NOTES.md). The scan's verdict comes
    # first: a truncated or corrupt file is refused with its message whatever ITK made of it.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="scan") as pool:
        scanned = pool.submit(scan, path) if scan is not None else None
        image, itk_error = None, None
        try:
            with itk_warnings_off():
                image = reader.Execute()
        except RuntimeError as error:
            itk_error = error
        non_finite = scanned.result() if scanned is not None else None
    if itk_error is not None:
        raise InputError(f"{path.name}: cannot be read as an image "
                         f"({itk_reason(itk_error)})") from None
    if notes is not None and path.name.lower().endswith((".nii", ".nii.gz")):
        notes += nifti_orientation_notes(path, image)
    return image if non_finite is None else restore_non_finite(image, non_finite)


def _check_header_geometry(name: str, size: tuple[int, ...], spacing: tuple[float, ...]) -> None:
    """The declared voxel size of a 3-D (or 4-D) image, refused when no CT can have it."""
    if len(size) >= 3:
        check_spacing(spacing[:3], name)


def _check_path(path: Path) -> None:
    """Refuse what is not a readable regular file or folder, before any reader touches it (a FIFO
    would block a reader forever)."""
    try:
        path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise InputError(f"{path}: symbolic link leads nowhere (broken link)") from None
        raise InputError(f"{path}: no such file or folder") from None
    except OSError as error:  # ELOOP: a symbolic link loop; EACCES: a folder on the way
        raise InputError(f"{path}: cannot be opened ({error.strerror})") from None
    if not (path.is_file() or path.is_dir()):
        raise InputError(f"{path.name}: is not a regular file or folder (a device, pipe or "
                         "socket); expected an image file or a DICOM series folder")
    if not os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0)):
        raise InputError(f"{path.name}: permission denied; the file or folder is not readable "
                         "by this user")


def as_image(image, spacing_mm=None, origin=None, direction=None,
             notes: list[str] | None = None, single_slice: bool = False,
             check_grid: GridCheck | None = None) -> sitk.Image:
    """Any accepted input → checked float32 3-D scalar ``SimpleITK.Image``.

    ``image``: a path (file or DICOM folder), a ``SimpleITK.Image``, or a numpy array with axes
    ``(z, y, x)``. Geometry arguments (SimpleITK order: ``spacing_mm`` (x, y, z), ``origin`` mm,
    ``direction`` 9 cosines) apply to arrays only; an array without ``spacing_mm`` is refused,
    since a guessed spacing would silently give wrong volumes. ``notes`` receives remarks for the
    user (series chosen, small field of view, non-finite voxels replaced); ``check_grid`` is called
    with the size and spacing before a file's voxels are read (see :func:`read_image`) and with an
    array's or image's.

    ``single_slice`` (for models whose stages are 2-D): one axial slice is accepted too, as a
    2-D image/file, a ``(y, x)`` array with ``spacing_mm`` (x, y), or a volume one slice thick;
    it becomes a 3-D image one slice thick (z spacing 1 mm when it had none).
    """
    grid_checked = False
    if isinstance(image, np.ndarray):
        name = "input array"
        if single_slice and image.ndim == 2:
            image = image[None]
            spacing_mm = None if spacing_mm is None else [*list(spacing_mm)[:2], 1.0]
        image = _array_to_image(image, spacing_mm, origin, direction)
    else:
        if spacing_mm is not None or origin is not None or direction is not None:
            raise ValueError("spacing_mm/origin/direction apply to numpy arrays only")
        if isinstance(image, sitk.Image):
            name = "input image"
        elif isinstance(image, (str, Path)):
            name = Path(image).name
            image = read_image(image, notes, check_grid)
            grid_checked = image.GetDimension() >= 3  # from the header, by read_image
        else:
            raise InputError(f"unsupported input type {type(image).__name__}; expected a path, "
                             "a SimpleITK.Image or a numpy array")
    image = _squeeze_trailing_time(image)
    if single_slice and image.GetDimension() == 2:
        image = sitk.JoinSeries(image)  # (x, y) -> (x, y, 1)
    _check_image(image, name, single_slice)
    if check_grid is not None and not grid_checked:
        check_grid(tuple(image.GetSize()), tuple(image.GetSpacing()), name)
    image, replaced = replace_non_finite(sitk.Cast(image, sitk.sitkFloat32), name)
    _check_not_constant(image, name)
    if notes is not None:
        notes += replaced + field_of_view_notes(image, name)
    return image


def _array_to_image(array: np.ndarray, spacing_mm, origin, direction) -> sitk.Image:
    if array.ndim != 3:
        raise InputError(f"input array has {array.ndim} dimensions {array.shape}; expected a 3-D "
                         "(z, y, x) volume")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise InputError(f"input array has dtype {array.dtype}; expected integer or float values")
    if spacing_mm is None:
        raise InputError("input array: spacing_mm (x, y, z) is required for array input")
    spacing = np.asarray(spacing_mm, dtype=float)
    if spacing.shape != (3,) or not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(f"input array: spacing_mm {list(spacing_mm)} must be 3 positive numbers")
    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    image.SetSpacing([float(s) for s in spacing])
    if origin is not None:
        image.SetOrigin([float(o) for o in origin])
    if direction is not None:
        image.SetDirection([float(d) for d in direction])
    return image


def _is_axial_slice(image: sitk.Image, thin_axes: list[int]) -> bool:
    """One voxel thick along the axis that points (mostly) head to foot, and only that one."""
    if len(thin_axes) != 1:
        return False
    cosines = np.array(image.GetDirection()).reshape(3, 3)
    return int(np.argmax(np.abs(cosines[2]))) == thin_axes[0]  # row 2: S component of each axis


def _squeeze_trailing_time(image: sitk.Image) -> sitk.Image:
    """A 4-D image with a single time point is a 3-D volume (some NIfTI writers add the axis)."""
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        return sitk.Extract(image, [*image.GetSize()[:3], 0], [0, 0, 0, 0])
    return image


def _check_image(image: sitk.Image, name: str, single_slice: bool = False) -> None:
    if image.GetPixelID() in (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64):
        raise InputError(f"{name}: has complex voxel values; expected a real-valued CT volume")
    if image.GetNumberOfComponentsPerPixel() > 1:
        raise InputError(f"{name}: has {image.GetNumberOfComponentsPerPixel()} components per "
                         "voxel (vector/RGB); expected a scalar CT volume")
    if image.GetDimension() != 3:
        raise InputError(f"{name}: is {image.GetDimension()}-D {list(image.GetSize())}; expected a "
                         "3-D CT volume")
    thin_axes = [axis for axis, size in enumerate(image.GetSize()) if size < 2]
    if thin_axes and not (single_slice and _is_axial_slice(image, thin_axes)):
        raise InputError(f"{name}: size {list(image.GetSize())} has a single slice along an axis; "
                         "expected a 3-D CT volume" + (" or one axial slice" if single_slice
                                                       else ""))
    check_spacing(image.GetSpacing(), name)
    cosines = np.array(image.GetDirection()).reshape(3, 3)
    if not np.allclose(cosines.T @ cosines, np.eye(3), atol=DIRECTION_TOLERANCE):
        raise InputError(f"{name}: direction cosines {np.round(cosines, 4).tolist()} are not "
                         "orthonormal (a sheared grid); expected an orthogonal voxel grid")


def _check_not_constant(image: sitk.Image, name: str) -> None:
    values = sitk.GetArrayViewFromImage(image)
    low, high = float(np.min(values)), float(np.max(values))
    if low == high:
        raise InputError(f"{name}: every voxel has the value {low:g}; expected a CT volume")
