"""Move volumes between MRML nodes and SimpleITK images, keeping the exact voxel grid.

MRML stores geometry in RAS, SimpleITK (and the engine's files) in LPS: the two differ by a sign
flip of the first two axes. Voxel arrays are (k, j, i) on both sides, so no array is reordered.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import vtk

import slicer
from pancreas_ssl_seg.errors import InputError

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def ijk_to_ras(volume_node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def sitk_from_array(array: np.ndarray, volume_node) -> sitk.Image:
    """``array`` ((k, j, i), as ``arrayFromVolume`` gives) on ``volume_node``'s grid."""
    image = sitk.GetImageFromArray(array)
    spacing = np.array(volume_node.GetSpacing(), dtype=float)
    directions_lps = RAS_TO_LPS @ ijk_to_ras(volume_node)[:3, :3] / spacing
    image.SetSpacing(spacing.tolist())
    image.SetOrigin((RAS_TO_LPS @ np.array(volume_node.GetOrigin(), dtype=float)).tolist())
    image.SetDirection(directions_lps.flatten().tolist())
    return image


def volume_to_sitk(volume_node) -> sitk.Image:
    return sitk_from_array(slicer.util.arrayFromVolume(volume_node), volume_node)


def read_array_on_grid(path, volume_node, tolerance_mm: float = 1e-3) -> np.ndarray:
    """The (k, j, i) voxels of the image file ``path``, checked to lie on ``volume_node``'s grid."""
    image = sitk.ReadImage(str(path))
    expected = sitk_from_array(np.zeros((1, 1, 1), np.uint8), volume_node)
    dims = volume_node.GetImageData().GetDimensions()
    same = (tuple(image.GetSize()) == tuple(dims)
            and np.allclose(image.GetSpacing(), expected.GetSpacing(), atol=tolerance_mm)
            and np.allclose(image.GetOrigin(), expected.GetOrigin(), atol=tolerance_mm)
            and np.allclose(image.GetDirection(), expected.GetDirection(), atol=1e-4))
    if not same:
        raise InputError(f"{path}: expected an image on the input volume's grid (size {dims}, "
                         f"spacing {expected.GetSpacing()}), got size {image.GetSize()}, "
                         f"spacing {image.GetSpacing()}, origin {image.GetOrigin()}")
    return sitk.GetArrayFromImage(image)


def write_volume(volume_node, path) -> None:
    """Write the volume for the engine (NRRD keeps the geometry exactly; no compression: speed)."""
    sitk.WriteImage(volume_to_sitk(volume_node), str(path), useCompression=False)
