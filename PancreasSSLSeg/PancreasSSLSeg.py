"""3D Slicer module: pancreas and pancreatic lesion segmentation in CT, with uncertainty review.

Slicer-facing glue only. The engine (``PancreasSSLSegLib``) runs as a background process; the
pieces of this module's logic live in ``PancreasSSLSegModuleLib`` (one job per file).
"""

import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import vtk, qt, ctk, slicer  # noqa: E401,F401 (the standard Slicer module imports)
from slicer.ScriptedLoadableModule import *  # noqa: F401,F403
from slicer.i18n import tr as _

from PancreasSSLSegModuleLib import engine_process, review, scene_results, volume_io
from PancreasSSLSegModuleLib.verdict_banner import verdict_banner
from PancreasSSLSegModuleLib.engine_process import ERROR, OK, EngineFailed, EngineProcess

MODULE_DIR = Path(__file__).resolve().parent
# The engine process: ``PythonSlicer -m PancreasSSLSegLib.cli ARGS`` (the CLI users run), with
# this module's folder on PYTHONPATH (engine_process.engine_environment).
ENGINE_ARGS = ["-m", "PancreasSSLSegLib.cli"]


class PancreasSSLSeg(ScriptedLoadableModule):  # noqa: F405
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)  # noqa: F405
        parent.title = _("Pancreas SSL Seg")
        parent.categories = [_("Segmentation")]
        parent.dependencies = []
        parent.contributors = ["PancreasSSLSeg contributors"]
        parent.helpText = _(
            "Segments the pancreas and pancreatic lesions in CT and shows where the model is "
            "unsure: a voxel uncertainty overlay (test-time augmentation / MC dropout predictive "
            "entropy) and a ranked list of uncertain regions to accept, mark as lesion or discard. "
            "Inference runs in a background process (Cancel stops it). Corrected cases can be "
            "exported for fine-tuning. See the project README for the model card and limits.")
        parent.acknowledgementText = _(
            "Coarse-to-fine 2-D/3-D U-Nets (MONAI) trained with semi-supervised learning "
            "(mean teacher, uncertainty-guided consistency, contrastive and restoration pretext "
            "tasks) on NIH Pancreas-CT (Roth et al. 2016, TCIA, CC BY 3.0) with synthetic lesions. "
            "Example CT: TotalSegmentator test data (Apache-2.0). Not a medical device.")


class PancreasSSLSegWidget(ScriptedLoadableModuleWidget):  # noqa: F405
    """Connects the panel to the Logic; every decision is made in the Logic."""

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)  # noqa: F405
        ui_widget = slicer.util.loadUI(self.resourcePath("UI/PancreasSSLSeg.ui"))
        self.layout.addWidget(ui_widget)
        self.ui = slicer.util.childWidgetVariables(ui_widget)
        ui_widget.setMRMLScene(slicer.mrmlScene)
        self.logic = PancreasSSLSegLogic()
        self.logic.logCallback = self.appendLog
        self.timer = qt.QTimer()
        self.timer.setInterval(200)
        self.timer.timeout.connect(self.onTimer)
        self.ui.deviceComboBox.addItems([_("Auto"), _("GPU"), _("CPU")])
        self.populateModels()  # also sets the threshold slider to the chosen bundle's
        self.ui.applyButton.clicked.connect(self.onApplyOrCancel)
        self.ui.uncertaintyCheckBox.toggled.connect(self.ui.uncertaintyThresholdSlider.setEnabled)
        self.ui.regionsTable.itemSelectionChanged.connect(self.onRegionSelected)
        self.ui.acceptButton.clicked.connect(lambda: self.onReview(review.ACCEPT_AS_PANCREAS))
        self.ui.lesionButton.clicked.connect(lambda: self.onReview(review.MARK_AS_LESION))
        self.ui.discardButton.clicked.connect(lambda: self.onReview(review.DISCARD))
        self.ui.undoButton.clicked.connect(self.onUndo)
        self.ui.nextButton.clicked.connect(self.onNextRegion)
        self.ui.editButton.clicked.connect(self.onEdit)
        self.ui.opacitySlider.valueChanged.connect(self.logic.setOverlayOpacity)
        self.ui.exportButton.clicked.connect(self.onExport)
        self.nextShortcut = qt.QShortcut(qt.QKeySequence("N"), slicer.util.mainWindow())
        self.nextShortcut.activated.connect(self.onNextRegion)
        self.updateReviewPanel()

    def populateModels(self):
        """The model list: installed bundles (as `pancreas-ssl-seg models` lists them), then
        "Bundle folder..." for the path field; the first shipped model selected."""
        self.modelEntries = self.logic.availableModels()
        combo = self.ui.modelComboBox
        combo.clear()
        for entry in self.modelEntries:
            combo.addItem(f"{entry.label} ({entry.source})")
        combo.addItem(_("Bundle folder..."))
        shipped = [i for i, e in enumerate(self.modelEntries) if e.source == "shipped"]
        combo.currentIndex = shipped[0] if shipped else 0
        combo.currentIndexChanged.connect(self.onModelChoice)
        self.onModelChoice(combo.currentIndex)

    def onModelChoice(self, index):
        """The path field serves "Bundle folder..." only; the uncertainty slider starts at the
        chosen bundle's own threshold (chosen with its model card's measurements)."""
        self.ui.modelPathLineEdit.setEnabled(index >= len(self.modelEntries))
        if 0 <= index < len(self.modelEntries):
            threshold = self.modelEntries[index].uncertainty_threshold
            if threshold is not None:
                self.ui.uncertaintyThresholdSlider.value = threshold

    def selectedModel(self):
        index = self.ui.modelComboBox.currentIndex
        if 0 <= index < len(self.modelEntries):
            return str(self.modelEntries[index].path)
        return self.ui.modelPathLineEdit.currentPath or None

    def cleanup(self):
        self.logic.cancel()
        self.timer.stop()
        self.nextShortcut.setParent(None)

    def appendLog(self, text):
        self.ui.logTextEdit.appendPlainText(text)

    def onProgress(self, progress):
        self.ui.progressBar.value = int(100 * progress.fraction)
        if progress.message:
            self.ui.statusLabel.text = progress.message

    def onApplyOrCancel(self):
        if self.logic.isRunning():
            self.logic.cancel()
            return
        from PancreasSSLSegModuleLib import dependencies
        if not dependencies.ensure_installed(slicer.util.confirmOkCancelDisplay):
            return
        inputVolume = self.ui.inputVolumeSelector.currentNode()
        output = self.ui.outputSegmentationSelector.currentNode()
        if inputVolume is None:
            slicer.util.errorDisplay(_("Choose an input CT volume."))
            return
        replace = False
        if output is not None and scene_results.was_edited(output):
            replace = slicer.util.confirmYesNoDisplay(
                _("'{name}' has edits. Replace its segments? (No writes to a new segmentation.)")
                .format(name=output.GetName()))
        device = {0: "auto", 1: "cuda", 2: "cpu"}[self.ui.deviceComboBox.currentIndex]
        with slicer.util.tryWithErrorDisplay(_("Could not start the segmentation."), waitCursor=True):
            self.logic.process(
                inputVolume, output, model=self.selectedModel(),
                device=device, fast=self.ui.fastCheckBox.checked,
                uncertainty=self.ui.uncertaintyCheckBox.checked,
                uncertaintyThreshold=self.ui.uncertaintyThresholdSlider.value,
                wait=False, onProgress=self.onProgress, replace=replace)
            self.ui.applyButton.text = _("Cancel")
            self.timer.start()

    def onTimer(self):
        outcome = self.logic.poll()
        if outcome is None:
            return
        self.timer.stop()
        self.ui.applyButton.text = _("Apply")
        self.ui.progressBar.value = 100 if outcome.status == OK else 0
        self.ui.statusLabel.text = outcome.message
        if outcome.status == ERROR:
            slicer.util.errorDisplay(outcome.message)
        if outcome.status == OK:
            self.ui.outputSegmentationSelector.setCurrentNode(outcome.segmentationNode)
        self.updateReviewPanel()
        self.selectCurrentRegionRow()  # the Logic started the review at the rank-1 region

    def updateVerdictBanner(self):
        banner = self.logic.qualityBanner()
        label = self.ui.qualityBannerLabel
        label.setVisible(banner is not None)
        if banner is not None:
            label.text = banner.text
            label.styleSheet = banner.style_sheet

    def updateReviewPanel(self):
        self.updateVerdictBanner()
        table = self.ui.regionsTable
        table.clearContents()
        rows = self.logic.review.region_table if self.logic.review else []
        table.setRowCount(len(rows))
        for row, region in enumerate(rows):
            done = self.logic.review.reviewed.get(region["id"], "")
            values = [str(region["rank"]), f"{region['volume_ml']:.2f}",
                      f"{region['mean_uncertainty']:.2f}",
                      ", ".join(f"{c:.0f}" for c in region.get("centroid_ras_mm", [])), done]
            for column, value in enumerate(values):
                item = qt.QTableWidgetItem(value)
                item.setData(qt.Qt.UserRole, region["id"])
                table.setItem(row, column, item)
        summary = self.logic.reviewSummary()
        self.ui.summaryLabel.text = "" if summary is None else _(
            "Pancreas {p:.1f} mL · lesions {n} ({l:.2f} mL, largest {d:.1f} mm) · "
            "{r} regions to review").format(p=summary["pancreas_volume_ml"], n=summary["lesion_count"],
                                            l=summary["lesion_volume_ml"],
                                            d=summary["largest_lesion_diameter_mm"],
                                            r=summary["regions_left"])

    def selectCurrentRegionRow(self):
        review_ = self.logic.review
        if review_ is None or review_.current_region_id is None:
            return
        ids = [r["id"] for r in review_.region_table]
        if review_.current_region_id in ids:
            self.ui.regionsTable.selectRow(ids.index(review_.current_region_id))

    def onRegionSelected(self):
        items = self.ui.regionsTable.selectedItems()
        if items and self.logic.review is not None:
            self.logic.review.select(int(items[0].data(qt.Qt.UserRole)))

    def onReview(self, action):
        if self.logic.review is None or self.logic.review.current_region_id is None:
            return
        with slicer.util.tryWithErrorDisplay(_("Could not change the region."), waitCursor=True):
            self.logic.review.apply(self.logic.review.current_region_id, action)
        self.updateReviewPanel()
        self.onNextRegion()

    def onUndo(self):
        if self.logic.review and self.logic.review.can_undo():
            self.logic.review.undo()
            self.updateReviewPanel()

    def onNextRegion(self):
        if self.logic.review is None:
            return
        region = self.logic.review.next_region(self.logic.review.current_region_id)
        if region is not None:
            self.logic.review.select(region["id"])
            self.selectCurrentRegionRow()

    def onEdit(self):
        if self.logic.review is None:
            return
        segmentation = self.logic.review.segmentation_node
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(segmentation)
        editor.setSourceVolumeNode(self.ui.inputVolumeSelector.currentNode())
        uncertain = self.logic.review.segment_ids.get(scene_results.UNCERTAIN_SEGMENT_VALUE)
        if uncertain:
            editor.setCurrentSegmentID(uncertain)

    def onExport(self):
        folder = self.ui.correctionsPathLineEdit.currentPath
        if not folder or self.logic.review is None:
            slicer.util.errorDisplay(_("Choose a corrections folder and segment a case first."))
            return
        with slicer.util.tryWithErrorDisplay(_("Export failed."), waitCursor=True):
            path = self.logic.exportCorrectedCase(folder)
            self.appendLog(f"Exported corrected case to {path}")


class SegmentationOutcome:
    """What one run produced: ``status`` (ok/error/cancelled), ``message``, the nodes, the report."""

    def __init__(self, status, message, segmentationNode=None, uncertaintyNode=None, report=None):
        self.status = status
        self.message = message
        self.segmentationNode = segmentationNode
        self.uncertaintyNode = uncertaintyNode
        self.report = report or {}


class PancreasSSLSegLogic(ScriptedLoadableModuleLogic):  # noqa: F405
    """All decisions, no Qt: run the engine in the background, load its results, review, export.

    Console example::

        logic = slicer.util.getModuleLogic("PancreasSSLSeg")
        outcome = logic.process(slicer.util.getNode("CT"))          # blocks; wait=False polls
        reports = logic.segmentFiles(["/data/a.nii.gz"], "/data/out")  # batch, no scene changes
    """

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)  # noqa: F405
        python = shutil.which("PythonSlicer") or sys.executable
        self.engineCommand = [python, *ENGINE_ARGS]  # tests point this at a fake engine
        self.logCallback = None
        self.review = None
        self.lastResult = None
        self.lastExitCode = None
        self._run = None

    # ---- running the engine -------------------------------------------------------------------
    def log(self, text):
        logging.info(text)
        if self.logCallback:
            self.logCallback(text)

    def isRunning(self):
        return self._run is not None

    @staticmethod
    def availableModels():
        """Installed model bundles (``PancreasSSLSegLib.catalogue`` entries: ``label``, ``path``,
        ``source``, ...), the list the CLI's ``models`` command prints; metadata only, no torch."""
        from PancreasSSLSegLib.catalogue import list_models

        return [entry for entry in list_models() if entry.problem is None]

    def engineArguments(self, inputs, outputDir, model=None, device="auto", fast=False,
                        uncertainty=True, uncertaintyThreshold=None):
        """The CLI argument list (never a shell string)."""
        arguments = [*self.engineCommand, "segment", *map(str, inputs), "-o", str(outputDir),
                     "--device", device, "--progress", "json"]
        if model:
            arguments += ["--model", str(model)]
        if fast:
            arguments.append("--fast")
        if not uncertainty:
            arguments.append("--no-uncertainty")
        if uncertaintyThreshold is not None:
            arguments += ["--uncertainty-threshold", str(float(uncertaintyThreshold))]
        return arguments

    def _start(self, arguments, onProgress):
        return EngineProcess(arguments, env=engine_process.engine_environment(str(MODULE_DIR)),
                             on_progress=onProgress, on_log=self.log)

    def targetSegmentation(self, inputVolume, outputSegmentation, replace=False):
        """The node to write into, or None for a new one: never overwrite edits unless told to."""
        if outputSegmentation is None:
            return None
        if scene_results.was_edited(outputSegmentation) and not replace:
            self.log(f"'{outputSegmentation.GetName()}' has edits: writing to a new segmentation.")
            return None
        return outputSegmentation

    def process(self, inputVolume, outputSegmentation=None, model=None, device="auto", fast=False,
                uncertainty=True, wait=True, onProgress=None, uncertaintyThreshold=None,
                replace=False, outputDir=None):
        """Segment ``inputVolume`` in a background engine process.

        The engine's files go to a temporary folder, or to ``outputDir`` (kept) when given.

        ``wait=True`` blocks and returns a ``SegmentationOutcome`` (raises ``EngineFailed`` when the
        engine fails); ``wait=False`` returns at once: call ``poll()`` until it returns the outcome.
        The scene is changed only when the run succeeded.
        """
        if inputVolume is None:
            raise ValueError("process: an input volume is required")
        if self.isRunning():
            raise RuntimeError("process: a segmentation is already running; cancel it first")
        from PancreasSSLSegLib.case_names import safe_case_name
        case = safe_case_name(inputVolume.GetName())
        workDir, inputPath = self._writeEngineInput(inputVolume, case)
        outDir = Path(outputDir) if outputDir else workDir / "out"
        arguments = self.engineArguments([inputPath], outDir, model, device, fast,
                                         uncertainty, uncertaintyThreshold) + ["--overwrite"]
        self.log(f"Starting the engine on '{inputVolume.GetName()}' ({device}, "
                 f"{'fast' if fast else 'accurate'})")
        target = self.targetSegmentation(inputVolume, outputSegmentation, replace)
        self._run = {"process": self._start(arguments, onProgress), "workDir": workDir,
                     "outDir": outDir, "case": case, "input": inputVolume, "uncertainty": uncertainty, "started": time.time(),
                     "target": target}
        if not wait:
            return None
        self._run["process"].wait()
        outcome = self.poll()
        if outcome.status == ERROR:
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
        inputRemoved = run["input"].GetScene() is None
        if inputRemoved:
            run["process"].cancel()
        status = run["process"].poll()
        if status == engine_process.RUNNING:
            return None
        self._run = None
        self.lastExitCode = run["process"].exit_code
        try:
            if inputRemoved:
                outcome = SegmentationOutcome(ERROR, (
                    f"The input volume '{run['input'].GetName()}' was removed from the scene while "
                    "it was being segmented: the engine was stopped and nothing was loaded."))
            elif status == OK:
                outcome = self._loadResults(run)
            else:
                outcome = SegmentationOutcome(status, run["process"].error_message())
        except Exception as error:  # noqa: BLE001 (any failure to load must leave the scene as it was)
            outcome = SegmentationOutcome(ERROR, f"Could not load the engine's results: {error}")
        finally:
            shutil.rmtree(run["workDir"], ignore_errors=True)
        self.log(f"{outcome.status}: {outcome.message} ({time.time() - run['started']:.1f} s)")
        return outcome

    def cancel(self):
        """Stop a running segmentation; the scene is left unchanged."""
        if self._run is not None:
            self._run["process"].cancel()

    def _loadResults(self, run):
        from PancreasSSLSegLib.outputs import output_paths
        files = output_paths(run["outDir"], run["case"])
        inputVolume = run["input"]
        report = json.loads(files["report"].read_text(encoding="utf-8"))
        labels = volume_io.read_array_on_grid(files["labels"], inputVolume)
        uncertainty = regions = None
        if run["uncertainty"]:
            uncertainty = volume_io.read_array_on_grid(files["uncertainty"], inputVolume)
            regions = volume_io.read_array_on_grid(files["regions"], inputVolume)
        scene = slicer.mrmlScene
        created = []
        backup = None
        try:
            segmentation = run["target"]
            if segmentation is not None and segmentation.GetScene() is None:
                self.log(f"'{segmentation.GetName()}' was removed during the run: writing to a new "
                         "segmentation.")
                segmentation = None
            if segmentation is not None:  # the user's node: put back as it was if loading fails
                backup = slicer.vtkSegmentation()
                backup.DeepCopy(segmentation.GetSegmentation())
            else:
                segmentation = scene.AddNewNodeByClass(
                    "vtkMRMLSegmentationNode", scene.GenerateUniqueName(f"{inputVolume.GetName()} pancreas"))
                created.append(segmentation)
                segmentation.CreateDefaultDisplayNodes()
            segmentIds = scene_results.fill_segmentation(segmentation, inputVolume, labels, regions, report)
            uncertaintyNode = None
            if uncertainty is not None:
                uncertaintyNode = scene_results.add_uncertainty_volume(
                    scene, inputVolume, uncertainty, scene.GenerateUniqueName(f"{inputVolume.GetName()} uncertainty"))
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
            self.review = review.RegionReview(scene, segmentation, inputVolume, segmentIds, regions,
                                              report.get("regions", []))
            self.review.start()  # rank 1 selected, the views centred on it
        self.lastResult = {"segmentation": segmentation, "uncertainty": uncertaintyNode,
                           "input": inputVolume, "report": report, "segmentIds": segmentIds}
        pancreas = report.get("pancreas", {})
        message = (f"Pancreas {pancreas.get('volume_ml', 0):.1f} mL, "
                   f"{report.get('lesions', {}).get('count', 0)} lesion(s), "
                   f"{len(report.get('regions', []))} uncertain region(s)")
        banner = verdict_banner(report)
        if banner.status is not None:
            message += f"; quality {banner.status} (score {banner.score:.2f})"
        return SegmentationOutcome(OK, message, segmentation, uncertaintyNode, report)

    # ---- batch --------------------------------------------------------------------------------
    def segmentFiles(self, paths, outputDir, model=None, device="auto", fast=False, uncertainty=True,
                     overwrite=False, onProgress=None, uncertaintyThreshold=None):
        """Segment image files (or DICOM folders, or folders of them) into ``outputDir``; the scene
        is not touched. ``uncertaintyThreshold`` None: the bundle's own.

        Cases whose outputs already exist are skipped by the engine unless ``overwrite`` (a batch
        resumes). ``outputDir`` gets ``summary.csv``/``summary.json`` (one row per case, the cases
        to check first; ``PancreasSSLSegLib.batch_summary``): the engine writes them for a batch,
        this method when the engine did not (a single case). Returns ``{case: report}`` for every
        case with complete outputs; raises ``EngineFailed`` when there is none (e.g. a bad bundle).
        """
        from PancreasSSLSegLib.case_names import case_name
        from PancreasSSLSegLib.outputs import case_is_complete, output_paths
        arguments = self.engineArguments(paths, outputDir, model, device, fast, uncertainty,
                                         uncertaintyThreshold)
        process = self._start(arguments + (["--overwrite"] if overwrite else []), onProgress)
        status = process.wait()
        final = process.final or {}
        # The engine's own list of cases (folders expanded); else one case per path given.
        listed = [entry for entry in final.get("cases", []) if isinstance(entry, dict)]
        cases = ([entry["case"] for entry in listed] if listed
                 else [case_name(path) for path in paths])
        reports = {case: json.loads(output_paths(outputDir, case)["report"].read_text(encoding="utf-8"))
                   for case in cases if case_is_complete(outputDir, case)}
        if status != OK:
            if not reports:
                raise EngineFailed(process.error_message(), process.exit_code)
            self.log(f"Some cases failed: {process.error_message()}")
        if final.get("summary"):
            self.log(f"Batch summary: {final['summary']}")
        else:
            self._writeSummary(outputDir, cases, listed, reports, process.error_message())
        return reports

    def _writeSummary(self, outputDir, cases, listed, reports, errorMessage):
        """summary.csv/json of ``cases`` (the engine's ``listed`` statuses when it gave them); a
        folder that cannot take them is logged, the cases' outputs stand."""
        from PancreasSSLSegLib import batch_summary
        statuses = {entry["case"]: entry for entry in listed}
        rows = []
        for case in cases:
            entry = statuses.get(case, {})
            if case in reports and entry.get("status") != "error":
                rows.append(batch_summary.report_row(reports[case], case,
                                                     entry.get("status", "ok")))
            else:
                rows.append(batch_summary.error_row(case, entry.get("message") or errorMessage))
        try:
            path = batch_summary.write_summary(outputDir, rows)["csv"]
        except OSError as error:
            self.log(f"Could not write the batch summary in {outputDir}: {error}")
            return
        self.log(f"Batch summary: {path}")

    # ---- review and export --------------------------------------------------------------------
    def reviewSummary(self):
        return self.review.summary() if self.review else None

    def qualityBanner(self):
        """The verdict banner (``verdict_banner.Banner``: status, score, reasons, colours, text)
        of the last result's report; None before a result."""
        return verdict_banner(self.lastResult["report"]) if self.lastResult else None

    def setOverlayOpacity(self, opacity):
        scene = slicer.mrmlScene
        for index in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
            scene.GetNthNodeByClass(index, "vtkMRMLSliceCompositeNode").SetForegroundOpacity(opacity)

    def exportCorrectedCase(self, correctionsRoot, caseName=None):
        """Write the CT, the corrected labels and a record to ``<root>/<case>/`` for training."""
        from PancreasSSLSegModuleLib import corrections_export
        if self.lastResult is None:
            raise RuntimeError("exportCorrectedCase: segment a volume first")
        result = self.lastResult
        edited = sorted(self.review.edited_segments) if self.review else []
        model = result["report"].get("model", {})
        return corrections_export.export_case(
            correctionsRoot, caseName or result["input"].GetName(), result["input"],
            result["segmentation"], result["segmentIds"], model.get("name", "unknown"), model.get("version", "unknown"), edited)


class PancreasSSLSegTest(ScriptedLoadableModuleTest):  # noqa: F405
    """Self-test in a real Slicer: the shipped example CT through the logic."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_segment_example_ct()

    def test_segment_example_ct(self):
        # checkout / additional module path, or the installed extension (see CMakeLists.txt)
        example = next(p for p in (MODULE_DIR.parent / "Resources" / "Examples" / "example_ct.nii.gz",
                                   MODULE_DIR / "Resources" / "Examples" / "example_ct.nii.gz")
                       if p.is_file())
        self.delayDisplay(f"Loading {example}")
        volume = slicer.util.loadVolume(str(example))
        outcome = PancreasSSLSegLogic().process(volume, device="auto", fast=True)
        self.assertEqual(outcome.status, OK)
        segmentation = outcome.segmentationNode.GetSegmentation()
        names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
        self.assertIn("Pancreas", names)
        self.assertIn("Pancreatic lesion", names)
        self.assertIsNotNone(outcome.uncertaintyNode)
        self.assertEqual(outcome.uncertaintyNode.GetImageData().GetDimensions(),
                         volume.GetImageData().GetDimensions())
        self.delayDisplay("Test passed")
