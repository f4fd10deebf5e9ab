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
    # The function shadows its submodule's name: bind it here, after the import set the module.
    if name in ("segment", "SegmentationResult"):
        import importlib
        module = importlib.import_module(".segment", __name__)
        globals().update(segment=module.segment, SegmentationResult=module.SegmentationResult)
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
