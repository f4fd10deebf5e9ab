"""SHA-256 of a file, read in blocks. Its own module, free of torch: the outputs writer (which the
Slicer module imports) and the bundle loader both use it."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
