"""Check the engine's Python packages in Slicer's Python; install them only after the user agrees.

torch goes through the PyTorch Utils extension when it is installed, because it picks the build
that matches the machine's CUDA driver; everything else (and torch without PyTorch Utils) through
pip. Nothing is ever installed without ``confirm`` returning True.
"""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
from collections.abc import Callable, Sequence

# import name → pip requirement (the engine's runtime needs; see pyproject.toml)
REQUIREMENTS = {
    "torch": "torch>=2.2",
    "monai": "monai>=1.3",
    "SimpleITK": "SimpleITK>=2.3",
    "scipy": "scipy>=1.10",
    "safetensors": "safetensors>=0.4",
    "slicerio": "slicerio>=1.0",
    "psutil": "psutil>=5.9",
}


def missing_packages(find_spec: Callable = importlib.util.find_spec) -> list[str]:
    """Import names of the required packages that cannot be imported here."""
    return [name for name in REQUIREMENTS if find_spec(name) is None]


def pytorch_utils_logic():
    """PyTorch Utils' logic when that extension is installed, else None."""
    try:
        module = importlib.import_module("PyTorchUtils")
    except ImportError:
        return None
    return module.PyTorchUtilsLogic()


def pip_install(requirements: Sequence[str]) -> None:
    """Slicer's own pip wrapper when present (it shows progress); else pip in this Python."""
    import slicer

    installer = getattr(slicer.util, "pip_install", None)
    if installer is not None and getattr(slicer, "app", None) is not None:
        installer(list(requirements))
        return
    subprocess.run([sys.executable, "-m", "pip", "install", *requirements], check=True)


def ensure_installed(confirm: Callable[[str], bool], install: Callable = pip_install,
                     find_spec: Callable = importlib.util.find_spec) -> bool:
    """True when every package is importable (asking, then installing, if some were missing)."""
    missing = missing_packages(find_spec)
    if not missing:
        return True
    question = ("Pancreas SSL Seg needs these Python packages, which Slicer does not have yet: "
                f"{', '.join(missing)}. Download and install them now (several GB for torch)?")
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
    return not missing_packages(find_spec)
