"""Pictures of a result: a slice view rendered by Slicer's own slice logic (CT, segment outlines,
uncertainty overlay) and a 3-D view of the segment surfaces (VTK off-screen through EGL).

Here the content comes from the fake engine (the example CT's reference pancreas with an
uncertainty band along its outline, colours from the shipped bundle), so the test checks the
rendering, not a model; the pictures
in Resources/Screenshots/ are real model output made by Testing/render_screenshots.py.
Set PANCREAS_SSL_SCREENSHOTS=<folder> to keep the two PNGs this test renders.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from PIL import Image  # noqa: E402

from slicer_harness import (MODULE_DIR, SlicerTestScene, fake_engine_logic,  # noqa: E402
                            install_module_stubs, render_segments_3d_png, render_slice_png)

install_module_stubs()
import slicer  # noqa: E402

METADATA = json.loads((MODULE_DIR.parent / "Resources" / "Models" / "pancreas-demo"
                       / "metadata.json").read_text(encoding="utf-8"))
PANCREAS_RGB = next(label["color"] for label in METADATA["labels"] if label["value"] == 1)
REVIEW_RGB = METADATA["uncertain_region"]["color"]


def pixels_near(image: np.ndarray, rgb, tolerance=40) -> int:
    return int((np.abs(image[..., :3].astype(int) - np.array(rgb)).max(axis=-1) < tolerance).sum())


@pytest.fixture
def result(monkeypatch, example_ct, shared_data):
    scene = SlicerTestScene()
    volume = scene.load_volume(example_ct, "example_ct")
    logic = fake_engine_logic(
        monkeypatch, "reference",
        FAKE_ENGINE_REFERENCE=str(shared_data / "ct-abdomen-3mm"
                                  / "example_seg_fast_force_split.nii.gz"),
        FAKE_ENGINE_REFERENCE_VALUE="7")
    outcome = logic.process(volume)
    assert outcome.status == "ok" and outcome.report["regions"]
    return scene, volume, outcome


def test_slice_view_shows_ct_segments_and_uncertainty(result, tmp_path):
    scene, volume, outcome = result
    labelmap = scene.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    node = outcome.segmentationNode
    visible = [node.GetSegmentation().GetNthSegmentID(i) for i in range(2)]  # not the review band
    ids = __import__("vtk").vtkStringArray()
    for segment_id in visible:
        ids.InsertNextValue(segment_id)
    assert scene.segmentations.ExportSegmentsToLabelmapNode(node, ids, labelmap, volume)
    pancreas = slicer.util.arrayFromSegmentBinaryLabelmap(node, visible[0], volume)
    k = int(np.argmax(pancreas.sum(axis=(1, 2))))  # the slice with the most pancreas
    offset = float(volume.GetOrigin()[2] + k * volume.GetSpacing()[2])  # axis-aligned volume
    path = render_slice_png(scene, volume, labelmap, outcome.uncertaintyNode,
                            tmp_path / "slice_view.png", offset, opacity=0.6)
    image = np.asarray(Image.open(path).convert("RGB"))
    assert image.shape == (512, 512, 3)
    assert pixels_near(image, PANCREAS_RGB) > 200             # pancreas, from the bundle colour
    without = np.asarray(Image.open(render_slice_png(
        scene, volume, labelmap, None, tmp_path / "no_overlay.png", offset)).convert("RGB"))
    warmer = (image[..., 0].astype(int) - image[..., 2]
              - (without[..., 0].astype(int) - without[..., 2]))
    assert (warmer > 40).sum() > 50  # the uncertainty overlay, in heat colours
    keep(path)


def test_3d_view_shows_the_segment_surfaces(result, tmp_path):
    _, _, outcome = result
    node = outcome.segmentationNode
    uncertain = node.GetSegmentation().GetNthSegmentID(2)
    opacity = node.GetDisplayNode().GetSegmentOpacity3D(uncertain)  # as the module set it
    path = render_segments_3d_png(node, tmp_path / "3d_view.png", see_through={uncertain: opacity})
    image = np.asarray(Image.open(path).convert("RGB"))
    assert pixels_near(image, PANCREAS_RGB, tolerance=90) > 2000
    assert pixels_near(image, REVIEW_RGB, tolerance=90) > 200
    keep(path)


def keep(path: Path) -> None:
    folder = os.environ.get("PANCREAS_SSL_SCREENSHOTS")
    if folder:
        shutil.copy(path, Path(folder) / path.name)
