"""Dependency check: nothing is installed without consent; torch via PyTorch Utils when present."""

from __future__ import annotations

import sys
import types

import pytest

from slicer_harness import install_module_stubs

install_module_stubs()
from PancreasSSLSegLib import dependencies  # noqa: E402


def only_missing(*names):
    real = __import__("importlib.util").util.find_spec
    return lambda name: None if name in names else real(name)


def test_nothing_to_do_when_all_present():
    asked = []
    assert dependencies.ensure_installed(asked.append, install=lambda r: 1 / 0)
    assert asked == []


def test_declined_installs_nothing():
    installed = []
    ok = dependencies.ensure_installed(lambda question: False, install=installed.append,
                                       find_spec=only_missing("monai"))
    assert not ok and installed == []


def test_torch_through_pytorch_utils_rest_through_pip(monkeypatch):
    torch_calls, installed, questions = [], [], []
    fake = types.ModuleType("PyTorchUtils")
    fake.PyTorchUtilsLogic = lambda: types.SimpleNamespace(
        installTorch=lambda **kwargs: torch_calls.append(kwargs))
    monkeypatch.setitem(sys.modules, "PyTorchUtils", fake)
    missing = {"torch", "monai"}
    ok = dependencies.ensure_installed(
        lambda q: questions.append(q) or True,
        install=lambda reqs: (installed.extend(reqs), missing.clear()),
        find_spec=lambda name: None if name in missing else object())
    assert ok
    assert "torch" in questions[0] and "monai" in questions[0]
    assert torch_calls == [{"askConfirmation": False, "torchVersionRequirement": ">=2.2"}]
    assert installed == ["monai>=1.3"]


def test_without_pytorch_utils_torch_goes_through_pip(monkeypatch):
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)  # import fails
    installed = []
    ok = dependencies.ensure_installed(lambda q: True, install=installed.extend,
                                       find_spec=only_missing("torch"))
    assert installed == ["torch>=2.2"]
    assert not ok  # the fake install did not really install: reported, not assumed


# ---- one list of requirements (issue 12, item 4) ----------------------------------------------

def engine_imports() -> set[str]:
    """Top-level names of every third-party module the engine's files import (read from the
    source, not from the list under test)."""
    import ast

    names = set()
    for path in (dependencies.REQUIREMENTS_FILE.parent).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "pancreas_ssl_seg"}


def test_requirements_cover_every_package_the_engine_imports():
    imported = engine_imports()
    assert {"torch", "monai", "tqdm", "matplotlib", "slicerio", "psutil"} <= imported
    offered = {dependencies.import_name(name) for name in dependencies.REQUIREMENTS}
    assert imported <= offered, f"the module would not install {sorted(imported - offered)}"
    assert "yaml" not in imported and "pyyaml" not in dependencies.REQUIREMENTS


def test_pyproject_reads_the_same_file():
    from conftest import REPO_ROOT
    from setuptools.config.pyprojecttoml import read_configuration

    config = read_configuration(REPO_ROOT / "pyproject.toml", expand=True)
    declared = config["tool"]["setuptools"]["dynamic"]["dependencies"]["file"]
    assert [REPO_ROOT / f for f in declared] == [dependencies.REQUIREMENTS_FILE]
    assert config["project"]["dependencies"] == list(dependencies.REQUIREMENTS.values())
    assert any(r.startswith("pyyaml") for r in config["project"]["optional-dependencies"]["train"])


def test_the_extension_ships_the_requirements_file():
    from slicer_harness import MODULE_DIR

    cmake = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    relative = dependencies.REQUIREMENTS_FILE.relative_to(MODULE_DIR).as_posix()
    assert relative in cmake.split("MODULE_PYTHON_RESOURCES", 1)[1].split(")", 1)[0]


def test_an_outdated_package_counts_as_missing():
    versions = {"numpy": "1.23.5", "scipy": "1.10.0", "torch": "2.13.0+cpu"}
    missing = dependencies.missing_packages(find_spec=lambda name: object(),
                                            version_of=lambda name: versions.get(name))
    assert missing == ["numpy"]  # 1.23.5 < 1.24; no metadata (None) counts as present


def test_requirement_lines_are_checked(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text("# engine\ntorch>=2.2\nnumpy  # any\n", encoding="utf-8")
    assert dependencies.read_requirements(path) == {"torch": "torch>=2.2", "numpy": "numpy"}
    path.write_text("torch @ https://example.org/torch.whl\n", encoding="utf-8")
    with pytest.raises(ValueError, match="requirements.txt:1"):
        dependencies.read_requirements(path)
