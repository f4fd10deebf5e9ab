"""Dependency check: nothing is installed without consent; torch via PyTorch Utils when present."""

from __future__ import annotations

import sys
import types

from slicer_harness import install_module_stubs

install_module_stubs()
from PancreasSSLSegModuleLib import dependencies  # noqa: E402


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
