"""Voxel geometry of SimpleITK images: voxel volume, index → physical (LPS) and RAS points, boxes
around masks and their extent on another grid, and the largest distance across a set of points.

Arrays are numpy (z, y, x), SimpleITK indices (x, y, z); SimpleITK's physical space is LPS mm.
RAS is LPS with x and y negated.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import pdist


def voxel_volume_ml(image: sitk.Image) -> float:
    return float(np.prod(image.GetSpacing())) / 1000.0


def index_to_lps_mm(image: sitk.Image, index_zyx) -> list[float]:
    """Continuous array index (z, y, x) of ``image`` → physical LPS point in mm."""
    return list(image.TransformContinuousIndexToPhysicalPoint([float(i) for i in index_zyx[::-1]]))


def index_to_ras_mm(image: sitk.Image, index_zyx) -> list[float]:
    """Continuous array index (z, y, x) of ``image`` → physical RAS point in mm."""
    x, y, z = index_to_lps_mm(image, index_zyx)
    return [-x, -y, z]


def max_feret_diameter_mm(points_mm: np.ndarray) -> float:
    """Largest pairwise distance of ``(N, 3)`` points; the convex hull keeps it cheap.

    Flat sets (a lesion on one slice) have no 3-D hull: their hull is taken in the plane or
    line they span, so a large flat set never falls back to all N^2/2 pairs (150 000 voxels of
    one slice would need 90 GB).
    """
    if len(points_mm) < 2:
        return 0.0
    centred = points_mm - points_mm.mean(axis=0)
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    rank = int(np.sum(singular > 1e-6 * max(1.0, singular[0])))
    if rank == 0:
        return 0.0
    spanned = centred @ axes[:rank].T  # the same distances, in the dimensions the set spans
    if rank == 1:
        return float(np.ptp(spanned[:, 0]))
    try:
        spanned = spanned[ConvexHull(spanned).vertices]
    except (QhullError, ValueError):
        pass  # tiny or degenerate sets: every point is a candidate
    return float(pdist(spanned).max())


def physical_points_mm(image: sitk.Image, mask: np.ndarray, offset_zyx=(0, 0, 0)) -> np.ndarray:
    """Physical (LPS) centres of the voxels of ``mask`` (array index + ``offset_zyx``)."""
    index_xyz = (np.argwhere(mask) + np.asarray(offset_zyx))[:, ::-1].astype(float)
    affine = ijk_to_lps(image)
    return index_xyz @ affine[:3, :3].T + affine[:3, 3]


def bounding_box(*masks: np.ndarray) -> tuple[slice, ...] | None:
    """(z, y, x) slices of the box around the True voxels of ``masks`` (their union); ``None``
    when every mask is empty."""
    # From each mask's voxel indices: a full-size union and find_objects over it took 0.3 s of
    # the 512x512x224 CT's seg.nrrd (benchmarks/NOTES.md).
    index = [np.unravel_index(np.flatnonzero(mask), mask.shape) for mask in masks]
    if not any(axes[0].size for axes in index):
        return None
    return tuple(slice(min(int(axes[a].min()) for axes in index if axes[a].size),
                       max(int(axes[a].max()) for axes in index if axes[a].size) + 1)
                 for a in range(masks[0].ndim))


def index_range_on(source: sitk.Image, box_zyx: tuple[slice, ...],
                   target: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest continuous (x, y, z) index of ``target`` reached by the physical extent
    of the voxels ``box_zyx`` of ``source`` (their outer faces: the box's eight corners)."""
    faces_zyx = [(part.start - 0.5, part.stop - 0.5) for part in box_zyx]
    corners = [source.TransformContinuousIndexToPhysicalPoint((x, y, z))
               for z in faces_zyx[0] for y in faces_zyx[1] for x in faces_zyx[2]]
    index = np.array([target.TransformPhysicalPointToContinuousIndex(p) for p in corners])
    return index.min(axis=0), index.max(axis=0)


def ijk_to_lps(image: sitk.Image) -> np.ndarray:
    """4×4 voxel-index → LPS millimetre matrix of a SimpleITK image (its native space is LPS)."""
    matrix = np.eye(4)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    matrix[:3, :3] = direction @ np.diag(image.GetSpacing())
    matrix[:3, 3] = image.GetOrigin()
    return matrix
