"""Check the engine's Python packages in Slicer's Python; install them only after the user agrees.

The list is the engine's ``pancreas_ssl_seg/requirements.txt``, the same file ``pyproject.toml``
reads for the distribution's dependencies (one list: a package the engine imports cannot be
missing here). torch goes through the PyTorch Utils extension when it is installed, because it
picks the build that matches the machine's CUDA driver; everything else (and torch without
PyTorch Utils) through pip. Nothing is ever installed without ``confirm`` returning True.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

REQUIREMENTS_FILE = Path(__file__).resolve().parents[1] / "pancreas_ssl_seg" / "requirements.txt"
# Distributions whose import name is not their own name (the others import as they are named).
IMPORT_NAMES = {"pyyaml": "yaml", "scikit-image": "skimage", "pillow": "PIL"}
_REQUIREMENT = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._\-]*)\s*(?:>=\s*([0-9][0-9.]*))?\s*$")


def read_requirements(path: Path = REQUIREMENTS_FILE) -> dict[str, str]:
    """``{distribution name: requirement}`` from a requirements file of ``name`` or
    ``name>=version`` lines (``#`` comments allowed)."""
    requirements = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if _REQUIREMENT.match(line) is None:
            raise ValueError(f"{path}:{number}: {line!r}; expected 'name' or 'name>=version'")
        requirements[_REQUIREMENT.match(line).group(1)] = line.replace(" ", "")
    return requirements


# distribution name → pip requirement (the engine's run-time needs)
REQUIREMENTS = read_requirements()


def import_name(distribution: str) -> str:
    return IMPORT_NAMES.get(distribution.lower(), distribution)


def minimum_version(requirement: str) -> tuple[int, ...] | None:
    match = _REQUIREMENT.match(requirement)
    return _numbers(match.group(2)) if match and match.group(2) else None


def _numbers(version: str) -> tuple[int, ...]:
    """Leading numeric release parts: "2.13.0+cpu" → (2, 13, 0), "1.26.4rc1" → (1, 26, 4)."""
    parts = []
    for part in version.split("+", 1)[0].split("."):
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        parts.append(int(digits.group()))
        if digits.group() != part:
            break
    return tuple(parts)


def installed_version(distribution: str) -> str | None:
    """The installed distribution's version, ``None`` when it has no metadata (Slicer builds
    some packages, e.g. SimpleITK, without pip: importable is then enough)."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def missing_packages(find_spec: Callable = importlib.util.find_spec,
                     version_of: Callable[[str], str | None] = installed_version) -> list[str]:
    """Distribution names of the required packages that cannot be imported here, or whose
    installed version is below the requirement's minimum."""
    missing = []
    for distribution, requirement in REQUIREMENTS.items():
        if find_spec(import_name(distribution)) is None:
            missing.append(distribution)
            continue
        version, minimum = version_of(distribution), minimum_version(requirement)
        if version is not None and minimum is not None and _numbers(version) < minimum:
            missing.append(distribution)
    return missing


def pytorch_utils_logic():
    """PyTorch Utils' logic when that extension is installed, else None."""
    try:
        module = importlib.import_module("PyTorchUtils")
    except ImportError:
        return None
    return module.PyTorchUtilsLogic()


def pip_install(requirements: Sequence[str]) -> None:
    """Slicer's own pip wrapper when present (it shows progress); else pip in this Python."""
    try:
        import slicer
    except ImportError:  # a plain Python (the engine's own environment, tests)
        slicer = None
    installer = getattr(getattr(slicer, "util", None), "pip_install", None)
    if installer is not None and getattr(slicer, "app", None) is not None:
        installer(list(requirements))
        return
    subprocess.run([sys.executable, "-m", "pip", "install", *requirements], check=True)


def ensure_installed(confirm: Callable[[str], bool], install: Callable = pip_install,
                     find_spec: Callable = importlib.util.find_spec,
                     version_of: Callable[[str], str | None] = installed_version) -> bool:
    """True when every package is importable (asking, then installing, if some were missing)."""
    missing = missing_packages(find_spec, version_of)
    if not missing:
        return True
    question = ("Pancreas SSL Seg needs these Python packages, which Slicer does not have yet "
                f"(or has in an older version): {', '.join(missing)}. Download and install them "
                "now (several GB for torch)?")
    if not confirm(question):
        return False
    torch_logic = pytorch_utils_logic() if "torch" in missing else None
    if torch_logic is not None:
        torch_logic.installTorch(askConfirmation=False,
                                 torchVersionRequirement=REQUIREMENTS["torch"][len("torch"):])
        missing.remove("torch")
    if missing:
        install([REQUIREMENTS[name] for name in missing])
    importlib.invalidate_caches()
    return not missing_packages(find_spec, version_of)
