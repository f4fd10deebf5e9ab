"""PancreasSSLSeg engine: CT in; pancreas and lesion labels, uncertainty and a report out.

Importable without 3D Slicer. Entry point: :func:`segment`.
"""

__version__ = "0.1.0"

from .errors import (BundleError, CancelledError, DeviceError, InputError,  # noqa: E402
                     PancreasSSLSegError, ResourceError)

__all__ = ["segment", "SegmentationResult", "PancreasSSLSegError", "InputError", "BundleError",
           "DeviceError", "ResourceError", "CancelledError", "__version__"]


def __getattr__(name: str):
    # segment() needs torch (seconds to import); load it on first use so `--help` stays instant.
    if name in ("segment", "SegmentationResult"):
        from . import pipeline
        return getattr(pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
