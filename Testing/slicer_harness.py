"""Run the Slicer module's Logic under pytest with slicer-core (no Slicer application).

- ``install_module_stubs()``: the pure-Python pieces the application normally provides
  (``slicer.ScriptedLoadableModule``, ``slicer.i18n``) and ``qt``/``ctk`` placeholders that fail
  loudly if the Logic touches them; puts the module folder on ``sys.path``.
- ``SlicerTestScene``: a real MRML scene wired with the colour, volumes and segmentations logics,
  as the application does (see ../shared/SLICER_CORE.md), plus three slice views.
- ``render_slice_png``: a slice view rendered by Slicer's own ``vtkMRMLSliceLogic``.
- Run as a script (``python slicer_harness.py segment INPUT -o OUT ...``) it is a fake engine CLI
  with the real one's outputs and progress lines; ``FAKE_ENGINE_MODE`` = ok | slow | crash |
  bad_bundle | reference (``FAKE_ENGINE_REFERENCE``/``_VALUE``: a label map shown as the result,
  for pictures) picks its behaviour, ``FAKE_ENGINE_LABELS`` (JSON ``{labels, uncertain_region}``)
  gives the label table, ``FAKE_ENGINE_QUALITY`` (JSON: one verdict or ``{case: verdict}``) the
  report's ``quality`` (none when unset),
  ``FAKE_ENGINE_RANKS=reverse`` ranks the regions last id first.
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
        slm.__all__ = [cls.__name__ for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget,
                                                ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest)]
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


@pytest.fixture
def scene() -> SlicerTestScene:
    """A fresh application-like scene (import this fixture into a test module to use it)."""
    return SlicerTestScene()


@pytest.fixture
def ct(scene, example_ct):
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
    from PancreasSSLSegLib.labels import LABELS, UNCERTAIN_REGION

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
# Fake engine CLI: the real CLI's arguments, outputs and progress protocol, with made-up content.

def _reference_outputs(image, reference_path: str, value: int):
    """Illustration for screenshots: pancreas = a reference label map's ``value`` (no model),
    uncertainty = a band along its outline, regions = the band's connected components."""
    import numpy as np
    import SimpleITK as sitk
    from scipy import ndimage

    pancreas = sitk.GetArrayFromImage(sitk.ReadImage(reference_path)) == value
    # voxels from the outline: inside, to the nearest outside voxel; outside, to the pancreas
    outline_distance = np.where(pancreas, ndimage.distance_transform_edt(pancreas),
                                ndimage.distance_transform_edt(~pancreas))
    uncertainty = (0.9 * np.exp(-0.5 * (outline_distance / 2.0) ** 2)).astype(np.float32)
    uncertainty[outline_distance > 4] = 0.0
    regions, _ = ndimage.label(uncertainty > 0.55)
    return pancreas.astype(np.uint8), uncertainty, regions.astype(np.int32)


def _fake_outputs(image):
    """Pancreas = a box, lesion = a box inside it, two uncertain regions (one on the pancreas edge,
    one in background), uncertainty high inside the regions."""
    import numpy as np

    shape = image.GetSize()[::-1]
    labels = np.zeros(shape, np.uint8)
    k, j, i = (s // 2 for s in shape)
    labels[k - 4:k + 4, j - 6:j + 6, i - 10:i + 10] = 1
    labels[k - 2:k + 2, j - 2:j + 2, i - 2:i + 2] = 2
    regions = np.zeros(shape, np.int32)
    regions[k - 4:k + 4, j + 4:j + 9, i - 3:i + 3] = 1    # overlaps the pancreas edge
    regions[k + 8:k + 11, j - 2:j + 2, i + 14:i + 17] = 2  # outside
    uncertainty = np.where(regions > 0, 0.8, 0.0).astype(np.float32)
    uncertainty[labels > 0] = np.maximum(uncertainty[labels > 0], 0.1)
    return labels, uncertainty, regions


def fake_engine_main(argv: list[str]) -> int:
    import argparse
    import json
    import os
    import subprocess
    import time

    import numpy as np
    import SimpleITK as sitk

    parser = argparse.ArgumentParser(prog="fake-engine")
    parser.add_argument("command", choices=["segment"])
    parser.add_argument("inputs", nargs="+")
    parser.add_argument("-o", "--output", required=True)
    parser.add_argument("--model")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--fast", action="store_true")
    parser.add_argument("--no-uncertainty", action="store_true")
    parser.add_argument("--uncertainty-threshold", type=float)
    parser.add_argument("--progress")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    mode = os.environ.get("FAKE_ENGINE_MODE", "ok")
    # The label table comes from the test (bundle_metadata), passed in to keep torch out of here.
    table = json.loads(os.environ["FAKE_ENGINE_LABELS"])

    def emit(**record):
        print(json.dumps(record), flush=True)

    emit(stage="load", fraction=0.0, message="Loading model")
    if mode == "bad_bundle":
        print(f"error: {args.model}: not a model bundle", file=sys.stderr, flush=True)
        emit(stage="done", fraction=1.0, status="error",
             message=f"{args.model}: expected metadata.json in the bundle folder")
        return 2
    if mode == "crash":
        raise RuntimeError("simulated engine crash")
    if mode == "slow":  # a child process too, to check that cancel kills the whole tree
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        emit(stage="coarse", fraction=0.1, message=f"worker {child.pid}", worker_pid=child.pid,
             engine_pid=os.getpid())
        time.sleep(600)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    reports = []
    for number, path in enumerate(args.inputs):
        case = Path(path).name.split(".")[0]
        image = sitk.ReadImage(path)
        if mode == "reference":
            labels, uncertainty, regions = _reference_outputs(
                image, os.environ["FAKE_ENGINE_REFERENCE"], int(os.environ["FAKE_ENGINE_REFERENCE_VALUE"]))
        else:
            labels, uncertainty, regions = _fake_outputs(image)
        for array, suffix in ((labels, "_labels.nii.gz"), (uncertainty, "_uncertainty.nii.gz"),
                              (regions, "_regions.nii.gz"), (labels, ".seg.nrrd")):
            result = sitk.GetImageFromArray(array)
            result.CopyInformation(image)
            sitk.WriteImage(result, str(out / f"{case}{suffix}"))
        (out / f"{case}_preview.png").write_bytes(b"")  # the real engine's six outputs
        voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
        rows = []
        for region_id in range(1, int(regions.max()) + 1):
            kji = np.argwhere(regions == region_id).mean(axis=0)
            lps = image.TransformContinuousIndexToPhysicalPoint(kji[::-1].tolist())
            rank = (int(regions.max()) + 1 - region_id
                    if os.environ.get("FAKE_ENGINE_RANKS") == "reverse" else region_id)
            rows.append({"id": region_id, "rank": rank,
                         "volume_ml": float((regions == region_id).sum()) * voxel_ml,
                         "mean_uncertainty": 0.8, "max_uncertainty": 0.8, "score": 1.0 / region_id,
                         "centroid_ras_mm": [-lps[0], -lps[1], lps[2]],
                         "dominant_label": int(np.bincount(labels[regions == region_id]).argmax())})
        report = {"case": case, "model": {"name": f"fake-engine-{mode}", "version": "0"},
                  "segments": table["labels"],
                  "uncertain_region": table["uncertain_region"],
                  "pancreas": {"found": True, "volume_ml": float((labels == 1).sum()) * voxel_ml},
                  "lesions": {"count": 1, "total_volume_ml": float((labels == 2).sum()) * voxel_ml,
                              "largest_diameter_mm": 0.0},
                  "regions": rows, "warnings": [], "timings_s": {"total": 0.0},
                  "options": {"fast": args.fast, "device": args.device, "model": args.model}}
        if os.environ.get("FAKE_ENGINE_QUALITY"):  # one verdict, or {case: verdict}
            quality = json.loads(os.environ["FAKE_ENGINE_QUALITY"])
            report["quality"] = quality if "status" in quality else quality[case]
        (out / f"{case}_report.json").write_text(json.dumps(report), encoding="utf-8")
        emit(stage="case", fraction=(number + 1) / len(args.inputs), message=f"{case} done")
    emit(stage="done", fraction=1.0, status="ok", message="finished")
    return 0


if __name__ == "__main__":
    sys.exit(fake_engine_main(sys.argv[1:]))
