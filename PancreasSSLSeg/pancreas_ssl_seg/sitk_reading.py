"""SimpleITK's readers as the input checks use them: silenced (ITK prints warnings straight to
stderr; the checks turn real problems into errors), with the one informative line of an ITK
exception for messages, and the bytes a voxel of a pixel type takes."""

from __future__ import annotations

from contextlib import contextmanager

import SimpleITK as sitk


@contextmanager
def itk_warnings_off():
    """ITK prints warnings straight to stderr; the checks here turn real problems into errors."""
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def itk_reason(error: RuntimeError) -> str:
    """The informative line of an ITK exception (they span several lines with source paths)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for marker in ("ITK ERROR:", "Description:", "sitk::ERROR:"):
        for line in lines:
            if marker in line:
                reason = line.split(marker, 1)[1].strip()
                # "ITK ERROR: Image(0x...): text" → "text"
                return reason.split("): ", 1)[-1]
    return lines[-1] if lines else "unknown reason"


def bytes_per_voxel(pixel_id: int, components: int) -> int:
    """Bytes one voxel of SimpleITK pixel type ``pixel_id`` with ``components`` takes."""
    try:
        component_bytes = sitk.Image([1, 1], pixel_id).GetSizeOfPixelComponent()
    except RuntimeError:  # a pixel type SimpleITK cannot hold: reading will say so
        component_bytes = 1
    return component_bytes * max(1, components)
