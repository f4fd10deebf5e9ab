"""The run settings: the engine CLI's options they stand for, the bundle's defaults, and their
round trip through the module's parameter node (a real ``vtkMRMLScriptedModuleNode``)."""

from __future__ import annotations

import json

import pytest

from slicer_harness import MODULE_DIR, install_module_stubs

install_module_stubs()
import slicer  # noqa: E402

from pancreas_ssl_seg.catalogue import list_models  # noqa: E402
from PancreasSSLSegLib.parameters import DEVICE_LABELS, Parameters  # noqa: E402


def test_defaults_leave_model_and_threshold_to_the_engine():
    assert Parameters().to_argv() == ["--device", "auto"]


def test_every_setting_becomes_its_cli_option():
    argv = Parameters(model="/a b/bundle", device="cpu", fast=True, uncertainty=False,
                      uncertainty_threshold=0.25).to_argv()
    assert argv == ["--device", "cpu", "--model", "/a b/bundle", "--fast", "--no-uncertainty",
                    "--uncertainty-threshold", "0.25"]


def test_for_model_takes_the_bundles_own_threshold():
    entry = next(entry for entry in list_models() if entry.source == "shipped")
    metadata = json.loads((entry.path / "metadata.json").read_text(encoding="utf-8"))
    parameters = Parameters.for_model(entry, fast=True)
    assert parameters.uncertainty_threshold == metadata["inference"]["uncertainty_threshold"]
    assert parameters.model == str(MODULE_DIR.parent / "Resources" / "Models" / entry.path.name)
    assert parameters.fast and parameters.device == "auto"


def test_the_panels_device_list_is_what_the_cli_accepts():
    from pancreas_ssl_seg.cli_parser import build_parser

    segment = build_parser()._subparsers._group_actions[0].choices["segment"]
    device = next(action for action in segment._actions if "--device" in action.option_strings)
    assert list(DEVICE_LABELS) == list(device.choices) == ["auto", "cpu", "cuda"]
    assert DEVICE_LABELS["cuda"] == "GPU"


@pytest.mark.parametrize("parameters", [
    Parameters(),
    Parameters(model="/models/x", device="cuda", fast=True, uncertainty=False,
               uncertainty_threshold=0.125)])
def test_parameters_survive_the_parameter_node(parameters):
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
    assert Parameters.load(node) is None  # a new scene: the panel keeps the bundle's defaults
    parameters.save(node)
    assert Parameters.load(node) == parameters
    copy = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode")
    copy.Copy(node)  # what a saved and reloaded scene holds: the strings only
    assert Parameters.load(copy) == parameters
