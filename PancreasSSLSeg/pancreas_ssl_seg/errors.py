"""The engine's exception types: one per kind of user mistake.

The CLI maps ``InputError`` and ``BundleError`` to exit code 2 with one line; the Slicer module
shows the message in a message box. Every message names the file and what was expected.
"""


class PancreasSSLSegError(Exception):
    """Base class of every error the engine raises on purpose."""


class InputError(PancreasSSLSegError):
    """The input image is missing, unreadable, or not a 3-D scalar CT the engine can use."""


class BundleError(PancreasSSLSegError):
    """A model bundle is missing, malformed, tampered with, or unsafe."""


class DeviceError(PancreasSSLSegError):
    """The requested compute device does not exist here (e.g. ``cuda`` without a GPU)."""


class ResourceError(PancreasSSLSegError):
    """The run would need more memory than this machine has available."""


class CancelledError(PancreasSSLSegError):
    """The caller's progress callback asked the run to stop."""
