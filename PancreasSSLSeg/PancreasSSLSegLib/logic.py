"""``PancreasSSLSegLogic``: every decision of the module, no Qt. Runs the engine on a volume in a
background process, loads its files into the scene, holds the review, exports corrections.

Console example (the Logic is also ``PancreasSSLSeg.PancreasSSLSegLogic``)::

    from PancreasSSLSegLib.parameters import Parameters
    logic = slicer.util.getModuleLogic("PancreasSSLSeg")
    outcome = logic.process(slicer.util.getNode("CT"))     # blocks; wait=False: poll()
    outcome = logic.process(volume, parameters=Parameters(device="cpu", fast=True))
    reports = logic.segmentFiles(["/data/a.nii.gz"], "/data/out")  # batch, no scene changes
    logic.lastResult.report                                 # the last result's engine report
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from . import batch, engine_process, review, scene_results, volume_io
from .engine_process import EngineFailed, EngineProcess, RunStatus
from .parameters import Parameters
from .results import ActiveRun, LoadedResult, SegmentationOutcome
from .verdict_banner import verdict_banner

MODULE_DIR = Path(__file__).resolve().parents[1]
# The engine process: ``PythonSlicer -m pancreas_ssl_seg ARGS`` (the CLI users run), with
# the module's folder on PYTHONPATH (engine_process.engine_environment).
ENGINE_ARGS = ["-m", "pancreas_ssl_seg"]


class PancreasSSLSegLogic(ScriptedLoadableModuleLogic):
    """The module's logic; see the module docstring for the console API."""

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        python = shutil.which("PythonSlicer") or sys.executable
        self.engineCommand = [python, *ENGINE_ARGS]  # tests point this at a fake engine
        self.logCallback = None
        self.review: review.RegionReview | None = None
        self.lastResult: LoadedResult | None = None
        self.lastExitCode: int | None = None
        self._run: ActiveRun | None = None

    # ---- running the engine -------------------------------------------------------------------
    def log(self, text):
        logging.info(text)
        if self.logCallback:
            self.logCallback(text)

    def isRunning(self):
        return self._run is not None

    @staticmethod
    def availableModels():
        """Installed model bundles (``pancreas_ssl_seg.catalogue`` entries: ``label``, ``path``,
        ``source``, ...), the list the CLI's ``models`` command prints; metadata only, no torch."""
        from pancreas_ssl_seg.catalogue import list_models

        return [entry for entry in list_models() if entry.problem is None]

    def engineArguments(self, inputs, outputDir, parameters: Parameters):
        """The CLI argument list (never a shell string)."""
        return [*self.engineCommand, "segment", *map(str, inputs), "-o", str(outputDir),
                "--progress", "json", *parameters.to_argv()]

    def startEngine(self, arguments, onProgress=None) -> EngineProcess:
        return EngineProcess(arguments, env=engine_process.engine_environment(str(MODULE_DIR)),
                             on_progress=onProgress, on_log=self.log)

    def targetSegmentation(self, outputSegmentation, replace=False):
        """The node to write into, or None for a new one: never overwrite edits unless told to."""
        if outputSegmentation is None:
            return None
        if scene_results.was_edited(outputSegmentation) and not replace:
            self.log(f"'{outputSegmentation.GetName()}' has edits: writing to a new segmentation.")
            return None
        return outputSegmentation

    def process(self, inputVolume, outputSegmentation=None, parameters: Parameters | None = None,
                wait=True, onProgress=None, replace=False, outputDir=None):
        """Segment ``inputVolume`` in a background engine process with ``parameters`` (None: the
        engine's defaults, i.e. the shipped bundle's).

        The engine's files go to a temporary folder, or to ``outputDir`` (kept) when given.
        ``wait=True`` blocks and returns a ``SegmentationOutcome`` (raises ``EngineFailed`` when the
        engine fails); ``wait=False`` returns at once: call ``poll()`` until it returns the outcome.
        The scene is changed only when the run succeeded.
        """
        if inputVolume is None:
            raise ValueError("process: an input volume is required")
        if self.isRunning():
            raise RuntimeError("process: a segmentation is already running; cancel it first")
        from pancreas_ssl_seg.case_names import safe_case_name
        parameters = parameters or Parameters()
        case = safe_case_name(inputVolume.GetName())
        workDir, inputPath = self._writeEngineInput(inputVolume, case)
        outDir = Path(outputDir) if outputDir else workDir / "out"
        arguments = self.engineArguments([inputPath], outDir, parameters) + ["--overwrite"]
        self.log(f"Starting the engine on '{inputVolume.GetName()}' ({parameters.device}, "
                 f"{'fast' if parameters.fast else 'accurate'})")
        target = self.targetSegmentation(outputSegmentation, replace)
        self._run = ActiveRun(self.startEngine(arguments, onProgress), workDir, outDir, case,
                              inputVolume, parameters, time.time(), target)
        if not wait:
            return None
        self._run.process.wait()
        outcome = self.poll()
        if outcome.status is RunStatus.ERROR:
            raise EngineFailed(outcome.message, self.lastExitCode)
        return outcome

    def _writeEngineInput(self, inputVolume, case):
        """A new temporary folder holding the input volume for the engine; a full or unwritable
        temporary folder raises ``EngineFailed`` saying which folder, with nothing left behind."""
        workDir = None
        try:
            workDir = Path(tempfile.mkdtemp(prefix="PancreasSSLSeg-"))
            inputPath = workDir / f"{case}.nrrd"
            volume_io.write_volume(inputVolume, inputPath)
        except (OSError, RuntimeError) as error:  # SimpleITK's writer raises RuntimeError
            if workDir is not None:
                shutil.rmtree(workDir, ignore_errors=True)
            raise EngineFailed(
                f"Could not write '{inputVolume.GetName()}' for the engine into the temporary "
                f"folder {tempfile.gettempdir()}: {getattr(error, 'strerror', None) or error}. "
                "Free disk space there (or set TMPDIR to a folder with space) and try again.") \
                from error
        return workDir, inputPath

    def poll(self):
        """None while running; the ``SegmentationOutcome`` once finished (results loaded).

        An input volume removed from the scene during the run stops the engine: nothing is
        loaded and the outcome says why."""
        if self._run is None:
            return None
        run = self._run
        inputRemoved = run.input_volume.GetScene() is None
        if inputRemoved:
            run.process.cancel()
        status = run.process.poll()
        if status is RunStatus.RUNNING:
            return None
        self._run = None
        self.lastExitCode = run.process.exit_code
        try:
            if inputRemoved:
                outcome = SegmentationOutcome(RunStatus.ERROR, (
                    f"The input volume '{run.input_volume.GetName()}' was removed from the scene "
                    "while it was being segmented: the engine was stopped and nothing was loaded."))
            elif status is RunStatus.OK:
                outcome = self._loadResults(run)
            else:
                outcome = SegmentationOutcome(status, run.process.error_message())
        except Exception as error:  # noqa: BLE001 (any failure to load leaves the scene as it was)
            outcome = SegmentationOutcome(RunStatus.ERROR,
                                          f"Could not load the engine's results: {error}")
        finally:
            shutil.rmtree(run.work_dir, ignore_errors=True)
        self.log(f"{outcome.status.value}: {outcome.message} "
                 f"({time.time() - run.started:.1f} s)")
        return outcome

    def cancel(self):
        """Stop a running segmentation; the scene is left unchanged."""
        if self._run is not None:
            self._run.process.cancel()

    def _loadResults(self, run: ActiveRun) -> SegmentationOutcome:
        from pancreas_ssl_seg.case_files import output_paths
        files = output_paths(run.out_dir, run.case)
        inputVolume = run.input_volume
        report = json.loads(files["report"].read_text(encoding="utf-8"))
        uncertainty = regions = None
        if run.parameters.uncertainty:
            uncertainty = volume_io.read_array_on_grid(files["uncertainty"], inputVolume)
            regions = volume_io.read_array_on_grid(files["regions"], inputVolume)
        scene = slicer.mrmlScene
        created = []
        backup = None
        segmentation = run.target
        if segmentation is not None and segmentation.GetScene() is None:
            self.log(f"'{segmentation.GetName()}' was removed during the run: writing to a new "
                     "segmentation.")
            segmentation = None
        try:
            if segmentation is not None:  # the user's node: put back as it was if loading fails
                backup = slicer.vtkSegmentation()
                backup.DeepCopy(segmentation.GetSegmentation())
            else:
                segmentation = scene.AddNewNodeByClass(
                    "vtkMRMLSegmentationNode",
                    scene.GenerateUniqueName(f"{inputVolume.GetName()} pancreas"))
                created.append(segmentation)
            segmentIds = scene_results.load_segmentation(
                segmentation, files["segmentation"], inputVolume, report, regions is not None)
            uncertaintyNode = None
            if uncertainty is not None:
                uncertaintyNode = scene_results.add_uncertainty_volume(
                    scene, inputVolume, uncertainty,
                    scene.GenerateUniqueName(f"{inputVolume.GetName()} uncertainty"))
                created.append(uncertaintyNode)
            scene_results.show_overlay(scene, inputVolume, uncertaintyNode)
        except Exception:
            for node in created:
                scene.RemoveNode(node)
            if backup is not None:
                segmentation.GetSegmentation().DeepCopy(backup)
            raise
        self.review = None
        if regions is not None:
            self.review = review.RegionReview(scene, segmentation, inputVolume, segmentIds,
                                              regions, report.get("regions", []))
            self.review.start()  # rank 1 selected, the views centred on it
        self.lastResult = LoadedResult(segmentation, uncertaintyNode, inputVolume, report,
                                       segmentIds)
        pancreas = report.get("pancreas", {})
        message = (f"Pancreas {pancreas.get('volume_ml', 0):.1f} mL, "
                   f"{report.get('lesions', {}).get('count', 0)} lesion(s), "
                   f"{len(report.get('regions', []))} uncertain region(s)")
        banner = verdict_banner(report)
        if banner.status is not None:
            message += f"; quality {banner.status} (score {banner.score:.2f})"
        return SegmentationOutcome(RunStatus.OK, message, segmentation, uncertaintyNode, report)

    # ---- batch --------------------------------------------------------------------------------
    def segmentFiles(self, paths, outputDir, parameters: Parameters | None = None,
                     overwrite=False, onProgress=None):
        """Segment image files (or DICOM folders, or folders of them) into ``outputDir`` with
        ``parameters`` (None: the engine's defaults); the scene is not touched. Returns
        ``{case: report}``; see ``batch.collect``."""
        arguments = self.engineArguments(paths, outputDir, parameters or Parameters())
        process = self.startEngine(arguments + (["--overwrite"] if overwrite else []),
                                   onProgress)
        return batch.collect(process, paths, outputDir, self.log)

    # ---- review and export --------------------------------------------------------------------
    def reviewSummary(self):
        """The panel's summary of the result as edited now (``RegionReview.summary``)."""
        return self.review.summary() if self.review else None

    def qualityBanner(self):
        """The verdict banner (``verdict_banner.Banner``: status, score, reasons, colours, text)
        of the last result's report; None before a result."""
        return verdict_banner(self.lastResult.report) if self.lastResult else None

    def setOverlayOpacity(self, opacity):
        scene = slicer.mrmlScene
        for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
            scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode").SetForegroundOpacity(
                opacity)

    def exportCorrectedCase(self, correctionsRoot, caseName=None):
        """Write the CT, the corrected labels and a record to ``<root>/<case>/`` for training."""
        from . import corrections_export
        if self.lastResult is None:
            raise RuntimeError("exportCorrectedCase: segment a volume first")
        result = self.lastResult
        edited = sorted(self.review.edited_segments) if self.review else []
        model = result.report.get("model", {})
        return corrections_export.export_case(
            correctionsRoot, caseName or result.input_volume.GetName(), result.input_volume,
            result.segmentation, result.segment_ids, model.get("name", "unknown"),
            model.get("version", "unknown"), edited)
