"""Console output shared by the engine's and the training package's command lines."""

from __future__ import annotations

import sys


def use_utf8_output() -> None:
    """Print UTF-8 whatever the locale. Messages name files and use symbols such as "×"; under a
    plain C/ASCII locale printing them would fail, and the Slicer module reads them as UTF-8."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(encoding="utf-8", errors="backslashreplace")
