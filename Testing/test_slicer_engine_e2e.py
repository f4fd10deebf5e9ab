"""End to end: the module's Logic runs the real engine CLI (``pancreas-ssl-seg``) in a background
process on the real example CT with the tiny random-weight bundle, on a real MRML scene."""

from __future__ import annotations

import pytest

from slicer_harness import SlicerTestScene, install_module_stubs

install_module_stubs()
import PancreasSSLSeg as module  # noqa: E402
from PancreasSSLSegModuleLib.engine_process import EngineFailed  # noqa: E402


def test_bad_bundle_is_reported_and_the_scene_is_unchanged(example_ct, tmp_path):
    scene = SlicerTestScene()
    volume = scene.load_volume(example_ct, "example_ct")
    logic = module.PancreasSSLSegLogic()
    (tmp_path / "metadata.json").write_text("{}")
    nodes = scene.node_ids()
    with pytest.raises(EngineFailed) as failure:
        logic.process(volume, model=tmp_path, device="cpu", fast=True)
    assert failure.value.exit_code == 2
    assert str(tmp_path) in str(failure.value)  # the engine's own message, naming the bundle
    assert "model.safetensors" in str(failure.value)
    assert scene.node_ids() == nodes
