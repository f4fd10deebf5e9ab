"""What a case is called: the name its output files (``<case>_labels.nii.gz``, ...) and its
corrections folder (``<root>/<case>/``) are made from. Torch-free; the engine, the Slicer module
and training all name cases here.

Two sources, one rule each:

- an input path (file or DICOM folder): :func:`case_name` keeps the file name without its image
  suffix, unchanged otherwise. It came from a file name, so it is one again; keeping it verbatim
  lets a user find the outputs of ``scan 1.nii.gz`` as ``scan 1_labels.nii.gz``, and lets the
  module predict the names the engine writes;
- free text (a Slicer node name, an argument): :func:`safe_case_name` turns it into a name
  :func:`check_case_name` accepts (letters, digits, ``_``, ``-``, ``.``, no leading dot: no
  separators, and not hidden from readers that skip dot-folders). The corrections writer refuses
  any other name rather than changing it silently.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import InputError

# The image files the engine reads. Longest suffix first, so "x.nii.gz" loses ".nii.gz" and not
# only ".gz".
IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
_SAFE_CHARACTER = r"A-Za-z0-9_.\-"
_SAFE_CASE = re.compile(rf"[A-Za-z0-9_\-][{_SAFE_CHARACTER}]*")


def case_name(path: str | Path) -> str:
    """Case identifier for output names: file name without its image suffix; folder → its name."""
    path = Path(path)
    lower = path.name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix) and len(lower) > len(suffix):
            return path.name[: -len(suffix)]
    return path.name


def safe_case_name(name: str) -> str:
    """Free text as a case name: every other character becomes '_', leading dots go; "case" when
    nothing is left."""
    return re.sub(rf"[^{_SAFE_CHARACTER}]", "_", name).lstrip(".") or "case"


def check_case_name(case: str) -> str:
    """``case`` if it is a safe folder name (see the module docstring), else ``InputError``."""
    if not isinstance(case, str) or not _SAFE_CASE.fullmatch(case):
        raise InputError(f"correction case name {case!r}: expected letters, digits, '_', '-', "
                         "'.' and no leading '.' (it becomes a folder name)")
    return case
