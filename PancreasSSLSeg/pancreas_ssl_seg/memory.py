"""Memory a segmentation run needs, estimated from the input's header and the bundle, before any
voxel is read; :class:`GridGuard` refuses a run that would not fit (``ResourceError``), and
:func:`check_read_memory` refuses, with or without a bundle, a file whose voxels alone would not.

A file small on disk can declare a grid that resamples to enormous volumes (a 100^3 file with
100 mm voxels is a 10 m cube: 5·10^9 voxels at a 3 mm coarse spacing). The estimate sums every
grid the pipeline allocates (``pipeline._run_cascade`` and ``inference.predict_stage``):

- input grid: the float32 input, its canonical copy, labels, uncertainty and regions and their
  copies while the outputs are written (:data:`BYTES_PER_INPUT_VOXEL`), plus torch and the
  networks (:data:`FIXED_OVERHEAD_BYTES`);
- each stage's grid (``V`` voxels at the stage's spacing, ``C`` classes, ``T`` test-time passes
  held at once: flips x rescaled copies, whose resampled probabilities are summed):
  the resampled image and its normalised copies (4 + 4·T bytes a voxel), the logits, softmax,
  un-flipped and stacked probabilities that exist at once at the peak (4·T·C float32), and the
  activations of one network call (:data:`ACTIVATION_BYTES_PER_PIXEL_CHANNEL` per pixel and
  first-level channel; measured 500-580 B/pixel for the shipped 16-channel 2-D network on
  1024^2 and 2048^2 slices);
- the coarse stage covers the whole scan; the fine stage a box around the pancreas that is known
  only after the coarse stage: from the header it is estimated as the scan's extent capped to
  :data:`FINE_BOX_MM` (+ the stage's margin on each side), and :func:`check_fine_box` checks the
  real box before it is resampled.

Peak RSS measured with the shipped bundle (accurate mode, CPU) stays below the estimate: see
``Testing/engine/test_memory.py``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import psutil

from .errors import ResourceError

# Input grid: input + canonical copy (float32), labels (uint8), uncertainty (float32), regions
# (int32) and slack for temporaries; plus torch and the networks.
BYTES_PER_INPUT_VOXEL = 24
FIXED_OVERHEAD_BYTES = 600 << 20
# Stage grids: float32 copies of the image per voxel (resampled, array, normalised, clip
# temporary) and of the class probabilities per flip at the peak of predict_stage.
IMAGE_COPIES = 4
PROBABILITY_COPIES = 4
ACTIVATION_BYTES_PER_PIXEL_CHANNEL = 40
# A pancreas with its lesions fits in 200 mm along every axis (it is 120-250 mm long, lying
# mostly left-right and oblique, 30-80 mm thick): the fine box assumed before the coarse stage.
FINE_BOX_MM = 200.0
GIB = float(1 << 30)

# ``check_grid(size_xyz, spacing_mm, name)``: called by ``image_io.as_image`` with a file's declared
# 3-D size and spacing (x, y, z) before its voxels are read; :class:`GridGuard` is the one in use.
GridCheck = Callable[[tuple[int, int, int], tuple[float, float, float], str], None]


def available_memory_bytes() -> int:
    return int(psutil.virtual_memory().available)


def check_read_memory(name: str, size: Sequence[int], data_bytes: int) -> None:
    """Refuse a declared volume whose voxels (``data_bytes`` as stored), plus their float32 copy,
    exceed the memory available now."""
    needed = data_bytes + math.prod(int(s) for s in size) * 4
    available = available_memory_bytes()
    if needed > available:
        raise ResourceError(f"{name}: declares {list(size)} voxels, which need about "
                            f"{needed / GIB:.1f} GiB to read but only "
                            f"{available / GIB:.1f} GiB of memory is available")


def stage_grid_size(extent_mm: Sequence[float], spacing_mm: Sequence[float]) -> list[int]:
    """Voxels (x, y, z) of a grid covering ``extent_mm`` at ``spacing_mm`` (as
    ``preprocessing.resample_to_spacing`` rounds them)."""
    return [max(1, int(round(e / s))) for e, s in zip(extent_mm, spacing_mm)]


def stage_bytes(grid_xyz: Sequence[int], stage, flips: int) -> int:
    """Peak bytes of one stage on a grid of ``grid_xyz`` voxels (``stage``: a bundle ``Stage``)."""
    from .inference import PIXELS_PER_CALL  # torch is imported by then (pipeline)

    voxels = int(np.prod(grid_xyz, dtype=np.float64))
    classes = int(stage.network["out_channels"])
    per_voxel = 4 * (IMAGE_COPIES + flips) + 4 * PROBABILITY_COPIES * flips * classes
    if stage.spatial_dims == 2:
        pixels_per_call = max(PIXELS_PER_CALL, int(grid_xyz[0]) * int(grid_xyz[1]))
    else:
        pixels_per_call = int(np.prod(stage.patch_size))
    activations = pixels_per_call * int(stage.network["channels"][0]) * (
        ACTIVATION_BYTES_PER_PIXEL_CHANNEL)
    return voxels * per_voxel + activations


def tta_copies(inference: dict) -> int:
    """``T`` of :func:`stage_bytes` for Accurate mode: test-time flips x rescaled copies."""
    return len(inference["tta_flips"]) * len(inference.get("tta_scales", [1.0]))


@dataclass
class RunEstimate:
    """Bytes a run needs, by part, and the grids (x, y, z voxels) they were computed for."""

    input_bytes: int
    coarse_bytes: int
    fine_bytes: int
    coarse_grid: list[int]
    fine_grid: list[int]

    @property
    def total_bytes(self) -> int:
        return self.input_bytes + self.coarse_bytes + self.fine_bytes


def estimate_run(size_xyz: Sequence[int], spacing_mm: Sequence[float], bundle,
                 fast: bool = False) -> RunEstimate:
    """Memory of a whole run on an input of ``size_xyz`` voxels of ``spacing_mm`` (x, y, z)."""
    extent_mm = np.asarray(size_xyz, float) * np.asarray(spacing_mm, float)
    coarse, fine = bundle.stage("coarse"), bundle.stage("fine")
    flips = 1 if fast else tta_copies(bundle.inference)
    coarse_grid = stage_grid_size(extent_mm, coarse.spacing_mm)
    box_mm = np.minimum(extent_mm, FINE_BOX_MM + 2 * float(fine.margin_mm or 0.0))
    fine_grid = stage_grid_size(box_mm, fine.spacing_mm)
    input_bytes = int(np.prod(size_xyz, dtype=np.float64)) * BYTES_PER_INPUT_VOXEL + (
        FIXED_OVERHEAD_BYTES)
    return RunEstimate(input_bytes, stage_bytes(coarse_grid, coarse, 1),
                       stage_bytes(fine_grid, fine, flips), coarse_grid, fine_grid)


class GridGuard:
    """A :data:`GridCheck` for ``image_io.as_image``: refuses, from the header, an input whose run
    would not fit in the memory available now. The bundle is resolved on the first call only
    (``resolve()``), so an input refused earlier never needs one."""

    def __init__(self, resolve: Callable[[], object], fast: bool = False):
        self._resolve, self._bundle, self.fast = resolve, None, fast

    def bundle(self):
        if self._bundle is None:
            self._bundle = self._resolve()
        return self._bundle

    def __call__(self, size_xyz, spacing_mm, name: str) -> None:
        estimate = estimate_run(size_xyz, spacing_mm, self.bundle(), self.fast)
        available = available_memory_bytes()
        if estimate.total_bytes > available:
            raise ResourceError(
                f"{name}: segmenting {list(size_xyz)} voxels of "
                f"{[round(float(s), 4) for s in spacing_mm]} mm needs about "
                f"{estimate.total_bytes / GIB:.1f} GiB (coarse grid {estimate.coarse_grid}, fine "
                f"grid up to {estimate.fine_grid} voxels at the model's spacing) but only "
                f"{available / GIB:.1f} GiB of memory is available; close other programs or "
                "crop the scan")


def check_fine_box(box_size_xyz: Sequence[int], box_spacing_mm: Sequence[float], bundle,
                   flips: int) -> None:
    """Refuse, before resampling it, a fine box (``box_size_xyz`` voxels of the canonical input)
    whose fine-stage grid would not fit in the memory available now."""
    fine = bundle.stage("fine")
    extent_mm = np.asarray(box_size_xyz, float) * np.asarray(box_spacing_mm, float)
    grid = stage_grid_size(extent_mm, fine.spacing_mm)
    needed, available = stage_bytes(grid, fine, flips), available_memory_bytes()
    if needed > available:
        raise ResourceError(
            f"the region the coarse stage found ({' x '.join(f'{e:.0f}' for e in extent_mm)} mm) "
            f"needs about {needed / GIB:.1f} GiB at the fine stage's grid {grid} but only "
            f"{available / GIB:.1f} GiB of memory is available; close other programs or crop "
            "the scan around the pancreas")
