"""Run the Slicer module's Logic under pytest with slicer-core (no Slicer application).

- ``install_module_stubs()``: the pure-Python pieces the application normally provides
  (``slicer.ScriptedLoadableModule``, ``slicer.i18n``) and ``qt``/``ctk`` placeholders that fail
  loudly if the Logic touches them; puts the module folder on ``sys.path``.
- ``SlicerTestScene``: a real MRML scene wired with the colour, volumes and segmentations logics,
  as the application does (see ../shared/SLICER_CORE.md), plus three slice views.
- ``render_slice_png``: a slice view rendered by Slicer's own ``vtkMRMLSliceLogic``.
- Run as a script (``python slicer_harness.py segment INPUT -o OUT ...``) it is a fake engine:
  the real CLI (``pancreas_ssl_seg.cli``) with the pipeline and the network loading replaced, so
  the arguments, progress lines, exit codes, the six files (``outputs.write_case_outputs``) and
  the report (``report.build_report``, regions by ``uncertainty.rank_uncertain_regions``) are the
  engine's own; only the arrays are made up (``fake_arrays``). ``FAKE_ENGINE_MODE`` = ok | slow
  (a worker child, then sleeps) | crash | reference (``FAKE_ENGINE_REFERENCE``/``_VALUE``: a label
  map shown as the result, for pictures) picks its behaviour; ``FAKE_ENGINE_QUALITY`` (JSON: one
  verdict, ``{case: verdict}``, or ``null`` for none) the report's ``quality``; a bundle the
  catalogue cannot read (``--model``) fails as the real engine does.
"""

from __future__ import annotations

import sys
import types
import unittest
from pathlib import Path

import pytest

MODULE_DIR = Path(__file__).resolve().parents[1] / "PancreasSSLSeg"
HARNESS_PATH = Path(__file__).resolve()
# Every scene made in this process, kept alive to the end: a scene whose logics were garbage
# collected while nodes (held elsewhere, e.g. by a module logic) still use them crashes.
_LIVE_SCENES: list = []


class _QtPlaceholder(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise RuntimeError(f"{self.__name__}.{name} used outside the Widget: Qt is not available "
                           "under pytest and the Logic must not need it")


def install_module_stubs() -> None:
    """Make ``import PancreasSSLSeg`` work as in Slicer (idempotent)."""
    import slicer

    if "slicer.ScriptedLoadableModule" not in sys.modules:
        slm = types.ModuleType("slicer.ScriptedLoadableModule")

        class ScriptedLoadableModule:
            def __init__(self, parent):
                self.parent = parent

        class ScriptedLoadableModuleWidget:
            def __init__(self, parent=None):
                self.parent = parent

        class ScriptedLoadableModuleLogic:
            def __init__(self, parent=None):
                self.parent = parent

        class ScriptedLoadableModuleTest(unittest.TestCase):
            def delayDisplay(self, message, msec=None):
                print(message)

        for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget,
                    ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest):
            setattr(slm, cls.__name__, cls)
        slm.__all__ = [cls.__name__ for cls in (
            ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic,
            ScriptedLoadableModuleTest)]
        sys.modules[slm.__name__] = slm
        slicer.ScriptedLoadableModule = slm
    if "slicer.i18n" not in sys.modules:
        i18n = types.ModuleType("slicer.i18n")
        i18n.tr = lambda text: text
        i18n.translate = lambda context, text: text
        sys.modules[i18n.__name__] = i18n
        slicer.i18n = i18n
    for name in ("qt", "ctk"):
        sys.modules.setdefault(name, _QtPlaceholder(name))
    if str(MODULE_DIR) not in sys.path:
        sys.path.insert(0, str(MODULE_DIR))


class SlicerTestScene:
    """A scene wired like the application's. Keep this object alive as long as the scene is used:
    logics that are garbage collected make the next volume load crash (SLICER_CORE.md)."""

    def __init__(self):
        import slicer

        self.scene = slicer.vtkMRMLScene()
        self.app_logic = slicer.vtkSlicerApplicationLogic()
        self.app_logic.SetMRMLScene(self.scene)
        self.colors = slicer.vtkSlicerColorLogic()
        self.volumes = slicer.vtkSlicerVolumesLogic()
        self.segmentations = slicer.vtkSlicerSegmentationsModuleLogic()
        for name, logic in (("Colors", self.colors), ("Volumes", self.volumes),
                            ("Segmentations", self.segmentations)):
            logic.SetMRMLApplicationLogic(self.app_logic)
            logic.SetMRMLScene(self.scene)
            self.app_logic.SetModuleLogic(name, logic)
        self.app_logic.SetColorLogic(self.colors)
        self.slice_logics = []
        for view in ("Red", "Yellow", "Green"):
            logic = slicer.vtkMRMLSliceLogic()
            logic.SetMRMLApplicationLogic(self.app_logic)
            logic.SetMRMLScene(self.scene)
            logic.AddSliceNode(view)
            self.slice_logics.append(logic)
        _LIVE_SCENES.append(self)
        slicer.mrmlScene = self.scene
        slicer.modules = types.SimpleNamespace(
            volumes=types.SimpleNamespace(logic=lambda: self.volumes),
            segmentations=types.SimpleNamespace(logic=lambda: self.segmentations),
            colors=types.SimpleNamespace(logic=lambda: self.colors))

    def load_volume(self, path: Path, name: str = "CT"):
        node = self.volumes.AddArchetypeVolume(str(path), name, 0)
        if node is None:
            raise RuntimeError(f"could not load {path}")
        return node

    def node_ids(self) -> list[str]:
        return [self.scene.GetNthNode(i).GetID() for i in range(self.scene.GetNumberOfNodes())]

    def close(self) -> None:
        """Empty the scene and detach every logic from it, views first, as the application does
        on exit; left to interpreter shutdown, VTK frees them in any order and may crash."""
        for logic in self.slice_logics:
            logic.SetMRMLScene(None)
        self.scene.Clear(True)
        for logic in (self.segmentations, self.volumes, self.colors):
            logic.SetMRMLScene(None)
        self.app_logic.SetMRMLScene(None)


# Fixtures "scene" and "ct": import ``scene_fixture``/``ct_fixture`` into a test module to use them
# (the functions' own names differ, so a test's parameter does not shadow the import).
@pytest.fixture(name="scene")
def scene_fixture() -> SlicerTestScene:
    """A fresh application-like scene."""
    return SlicerTestScene()


@pytest.fixture(name="ct")
def ct_fixture(scene, example_ct):
    """The example CT loaded into ``scene`` as a volume node."""
    return scene.load_volume(example_ct)


def close_all_scenes() -> None:
    """Close every scene made in this process (call once, when no test uses them any more)."""
    while _LIVE_SCENES:
        _LIVE_SCENES.pop().close()


def fake_engine_logic(monkeypatch, mode: str = "ok", **environment: str):
    """The module's Logic running this file as its engine, in ``mode``."""
    import json

    import PancreasSSLSeg
    from pancreas_ssl_seg.labels import LABELS, UNCERTAIN_REGION

    monkeypatch.setenv("FAKE_ENGINE_MODE", mode)
    monkeypatch.setenv("FAKE_ENGINE_LABELS", json.dumps({"labels": LABELS,
                                                         "uncertain_region": UNCERTAIN_REGION}))
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    logic = PancreasSSLSeg.PancreasSSLSegLogic()
    logic.engineCommand = [sys.executable, str(HARNESS_PATH)]
    return logic


def render_slice_png(test_scene: SlicerTestScene, background, labelmap, foreground, path: Path,
                     offset_mm: float, opacity: float = 0.4, size=(512, 512)) -> Path:
    """An axial slice rendered by Slicer's slice logic (background CT, labels, overlay), the CT in
    an abdominal soft-tissue window (W 400, L 40 HU)."""
    import vtk

    background.GetDisplayNode().AutoWindowLevelOff()
    background.GetDisplayNode().SetWindowLevel(400, 40)

    logic = test_scene.slice_logics[0]
    slice_node = logic.GetSliceNode()
    slice_node.SetOrientationToAxial()
    slice_node.SetDimensions(size[0], size[1], 1)
    composite = logic.GetSliceCompositeNode()
    composite.SetBackgroundVolumeID(background.GetID())
    composite.SetLabelVolumeID(labelmap.GetID() if labelmap else None)
    composite.SetLabelOpacity(0.8)
    composite.SetForegroundVolumeID(foreground.GetID() if foreground else None)
    composite.SetForegroundOpacity(opacity)
    logic.FitSliceToBackground()
    slice_node.SetSliceOffset(offset_mm)
    logic.UpdatePipeline()
    writer = vtk.vtkPNGWriter()
    writer.SetInputConnection(logic.GetImageDataConnection())
    writer.SetFileName(str(path))
    writer.Write()
    return path


def render_segments_3d_png(segmentation_node, path: Path, size=(600, 500),
                           see_through: dict[str, float] | None = None) -> Path:
    """The segments' closed surfaces rendered off-screen by plain VTK (EGL where there is no
    display: set VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow before the first render)."""
    import vtk

    renderer = vtk.vtkRenderer()
    renderer.SetBackground(0.1, 0.12, 0.16)
    segmentation = segmentation_node.GetSegmentation()
    segmentation_node.CreateClosedSurfaceRepresentation()
    for index in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(index)
        surface = vtk.vtkPolyData()
        segmentation_node.GetClosedSurfaceRepresentation(segment_id, surface)
        if surface.GetNumberOfPoints() == 0:
            continue
        mapper = vtk.vtkPolyDataMapper()
        mapper.SetInputData(surface)
        actor = vtk.vtkActor()
        actor.SetMapper(mapper)
        actor.GetProperty().SetColor(segmentation.GetSegment(segment_id).GetColor())
        actor.GetProperty().SetOpacity((see_through or {}).get(segment_id, 1.0))
        renderer.AddActor(actor)
    camera = renderer.GetActiveCamera()
    camera.SetPosition(0, 1, 0)    # from anterior (+A in RAS), superior up, as Slicer opens
    camera.SetViewUp(0, 0, 1)
    renderer.ResetCamera()
    camera.Zoom(1.3)
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetMultiSamples(0)      # else see-through surfaces vanish (SLICER_CORE.md)
    window.AddRenderer(renderer)
    window.SetSize(*size)
    window.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    writer = vtk.vtkPNGWriter()
    writer.SetInputConnection(grab.GetOutputPort())
    writer.SetFileName(str(path))
    writer.Write()
    return path


# ---------------------------------------------------------------------------------------------
# Fake engine: the real CLI (arguments, case handling, progress lines, exit codes, batch summary)
# and the real report builder, region ranking and output writer, around made-up arrays instead of
# the networks (no torch: each run starts in well under a second).

# The fake's verdict when the test gives none (FAKE_ENGINE_QUALITY): the format of quality.verdict.
DEFAULT_VERDICT = {"score": 0.9, "status": "ok", "reasons": [], "signals": {}}


SLOW_WORKER_MESSAGE = "worker {} of engine {}"  # the slow fake engine's progress message


def slow_engine_pids(record) -> tuple[int, int] | None:
    """(worker, engine) process ids from the slow fake engine's progress ``record``."""
    import re

    found = re.fullmatch(SLOW_WORKER_MESSAGE.replace("{}", r"(\d+)"), record.message)
    return (int(found.group(1)), int(found.group(2))) if found else None


class FakeResult:
    """What ``write_case_outputs`` reads of the pipeline's ``SegmentationResult`` (which imports
    torch): the three arrays, the report and the input image."""

    def __init__(self, labels, uncertainty, regions, report, image):
        self.labels, self.uncertainty, self.regions = labels, uncertainty, regions
        self.report, self.image = report, image

    def to_sitk(self, array):
        import SimpleITK as sitk

        out = sitk.GetImageFromArray(array)
        out.CopyInformation(self.image)
        return out


def _reference_outputs(image, reference_path: str, value: int):
    """Illustration for screenshots: pancreas = a reference label map's ``value`` (no model),
    uncertainty = a band along its outline."""
    import numpy as np
    import SimpleITK as sitk
    from scipy import ndimage

    pancreas = sitk.GetArrayFromImage(sitk.ReadImage(reference_path)) == value
    # voxels from the outline: inside, to the nearest outside voxel; outside, to the pancreas
    outline_distance = np.where(pancreas, ndimage.distance_transform_edt(pancreas),
                                ndimage.distance_transform_edt(~pancreas))
    uncertainty = (0.9 * np.exp(-0.5 * (outline_distance / 2.0) ** 2)).astype(np.float32)
    uncertainty[outline_distance > 4] = 0.0
    return pancreas.astype(np.uint8), uncertainty


def fake_arrays(image):
    """Pancreas = a box, lesion = a box inside it; uncertainty 0.8 in two boxes (one across the
    pancreas edge, one in the background), 0.1 elsewhere in the pancreas. (k, j, i) arrays."""
    import numpy as np

    shape = image.GetSize()[::-1]
    labels = np.zeros(shape, np.uint8)
    k, j, i = (s // 2 for s in shape)
    labels[k - 4:k + 4, j - 6:j + 6, i - 10:i + 10] = 1
    labels[k - 2:k + 2, j - 2:j + 2, i - 2:i + 2] = 2
    uncertainty = np.where(labels > 0, 0.1, 0.0).astype(np.float32)
    uncertainty[k - 4:k + 4, j + 4:j + 9, i - 3:i + 3] = 0.8    # across the pancreas edge
    uncertainty[k + 8:k + 11, j - 2:j + 2, i + 14:i + 17] = 0.8  # outside
    return labels, uncertainty


def _fake_segment(path, *, model, device, uncertainty, progress, fast, uncertainty_threshold):
    """``pipeline.segment``'s signature and progress stages, made-up arrays (FAKE_ENGINE_MODE)."""
    import json
    import os
    import subprocess
    import time

    import numpy as np

    from pancreas_ssl_seg import __version__, progress as stages
    from pancreas_ssl_seg.case_names import case_name
    from pancreas_ssl_seg.geometry import voxel_volume_ml
    from pancreas_ssl_seg.image_io import as_image
    from pancreas_ssl_seg.report import build_report
    from pancreas_ssl_seg.uncertainty import REGIONS_SCORE, rank_uncertain_regions

    mode = os.environ.get("FAKE_ENGINE_MODE", "ok")
    progress(stages.READING, 0.0, "reading the input")
    if mode == "crash":
        raise RuntimeError("simulated engine crash")
    image = as_image(path)
    progress(stages.COARSE, 0.05, "coarse stage: locating the pancreas")
    if mode == "slow":  # a child process too, to check that cancel kills the whole tree
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        progress(stages.FINE, 0.35, SLOW_WORKER_MESSAGE.format(child.pid, os.getpid()))
        time.sleep(600)
    if mode == "reference":
        labels, uncertainty_map = _reference_outputs(
            image, os.environ["FAKE_ENGINE_REFERENCE"],
            int(os.environ["FAKE_ENGINE_REFERENCE_VALUE"]))
    else:
        labels, uncertainty_map = fake_arrays(image)
    for stage, fraction in ((stages.FINE, 0.35), (stages.POSTPROCESS, 0.75),
                            (stages.MAPPING, 0.85)):
        progress(stage, fraction, stage)
    inference = model["inference"]
    threshold = float(inference["uncertainty_threshold"] if uncertainty_threshold is None
                      else uncertainty_threshold)
    regions_map, regions = (rank_uncertain_regions(
        uncertainty_map, labels, threshold, voxel_volume_ml(image),
        float(inference.get("region_min_volume_ml", 0.0))) if uncertainty
        else (np.zeros(labels.shape, np.int32), []))
    quality = json.loads(os.environ.get("FAKE_ENGINE_QUALITY") or json.dumps(DEFAULT_VERDICT))
    if quality is not None and "status" not in quality:  # {case: verdict}
        quality = quality[case_name(path)]
    progress(stages.REPORT, 0.95, "writing the report")
    report = build_report(image=image, labels=labels,
                          uncertainty=uncertainty_map if uncertainty else None, regions=regions,
                          metadata=model, engine_version=__version__, device="cpu",
                          mode="fast" if fast else "accurate", threshold=threshold,
                          uncertainty_definition=f"made up by the fake engine ({mode})",
                          regions_score=REGIONS_SCORE, quality=quality, warnings=[],
                          timings_s={}, peak_memory_mb=0.0)
    progress(stages.CASE_DONE, 1.0, "finished")
    return FakeResult(labels, uncertainty_map if uncertainty else np.zeros_like(uncertainty_map),
                      regions_map, report, image)


def _fake_load_model(model):
    """The bundle's metadata (the catalogue's torch-free reader), in place of loading networks;
    a bundle the catalogue cannot read is the real CLI's ``BundleError`` (exit 2)."""
    import json

    from pancreas_ssl_seg.catalogue import list_models, read_entry, resolve_model
    from pancreas_ssl_seg.errors import BundleError

    folder = resolve_model(model) or next(e.path for e in list_models() if e.source == "shipped")
    entry = read_entry(Path(folder), "given")
    if entry.problem is not None:
        raise BundleError(entry.problem)
    return json.loads((Path(folder) / "metadata.json").read_text(encoding="utf-8"))


def fake_engine_main(argv: list[str]) -> int:
    """The real CLI with the pipeline and the network loading replaced (see above)."""
    from pancreas_ssl_seg import cli, cli_segment

    for name in ("_segment", "load_model"):  # the seams this fake replaces must exist
        assert hasattr(cli_segment, name), f"cli_segment.{name} is gone: update the fake engine"
    cli_segment._segment = _fake_segment
    cli_segment.load_model = _fake_load_model
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(fake_engine_main(sys.argv[1:]))
