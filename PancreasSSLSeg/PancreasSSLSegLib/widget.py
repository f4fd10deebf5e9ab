"""The panel: connects the widgets of ``Resources/UI/PancreasSSLSeg.ui`` to the Logic. Every
decision is made in the Logic; this file only reads and shows (Qt, runs in Slicer only).

Widgets are always reached as ``self.ui.<name>.<member>`` (no local aliases): that is how
test_slicer_module_files.py checks each name against the .ui and each member against the
widget's class."""

from __future__ import annotations

import qt

import slicer
from slicer.i18n import tr as _

from . import dependencies, scene_results
from .engine_process import RunStatus
from .parameters import DEVICE_LABELS, Parameters
from .review import ReviewAction

TIMER_INTERVAL_MS = 200


class PancreasSSLSegPanel:
    """The widgets of the loaded ``.ui`` (``ui_widget``) wired to ``logic``; the settings kept
    in the module's parameter node."""

    def __init__(self, ui_widget, logic):
        self.ui = slicer.util.childWidgetVariables(ui_widget)
        ui_widget.setMRMLScene(slicer.mrmlScene)
        self.logic = logic
        self.logic.logCallback = self.appendLog
        self.timer = qt.QTimer()
        self.timer.setInterval(TIMER_INTERVAL_MS)
        self.timer.timeout.connect(self.onTimer)
        self.ui.deviceComboBox.addItems([_(label) for label in DEVICE_LABELS.values()])
        self.populateModels()  # also sets the threshold slider to the chosen bundle's
        self.showParameters(Parameters.load(self.logic.getParameterNode()))
        self.ui.applyButton.clicked.connect(self.onApplyOrCancel)
        self.ui.uncertaintyCheckBox.toggled.connect(self.ui.uncertaintyThresholdSlider.setEnabled)
        self.ui.regionsTable.itemSelectionChanged.connect(self.onRegionSelected)
        self.ui.acceptButton.clicked.connect(
            lambda: self.onReview(ReviewAction.ACCEPT_AS_PANCREAS))
        self.ui.lesionButton.clicked.connect(lambda: self.onReview(ReviewAction.MARK_AS_LESION))
        self.ui.discardButton.clicked.connect(lambda: self.onReview(ReviewAction.DISCARD))
        self.ui.undoButton.clicked.connect(self.onUndo)
        self.ui.nextButton.clicked.connect(self.onNextRegion)
        self.ui.editButton.clicked.connect(self.onEdit)
        self.ui.opacitySlider.valueChanged.connect(self.logic.setOverlayOpacity)
        self.ui.exportButton.clicked.connect(self.onExport)
        self.nextShortcut = qt.QShortcut(qt.QKeySequence("N"), slicer.util.mainWindow())
        self.nextShortcut.activated.connect(self.onNextRegion)
        self.updateReviewPanel()

    def cleanup(self):
        self.logic.cancel()
        self.timer.stop()
        self.nextShortcut.setParent(None)

    # ---- settings -----------------------------------------------------------------------------
    def populateModels(self):
        """The model list: installed bundles (as `pancreas-ssl-seg models` lists them), then
        "Bundle folder..." for the path field; the first shipped model selected."""
        self.modelEntries = self.logic.availableModels()
        self.ui.modelComboBox.clear()
        for entry in self.modelEntries:
            self.ui.modelComboBox.addItem(f"{entry.label} ({entry.source})")
        self.ui.modelComboBox.addItem(_("Bundle folder..."))
        shipped = [i for i, e in enumerate(self.modelEntries) if e.source == "shipped"]
        self.ui.modelComboBox.currentIndex = shipped[0] if shipped else 0
        self.ui.modelComboBox.currentIndexChanged.connect(self.onModelChoice)
        self.onModelChoice(self.ui.modelComboBox.currentIndex)

    def onModelChoice(self, index):
        """The path field serves "Bundle folder..." only; the uncertainty slider starts at the
        chosen bundle's own threshold (chosen with its model card's measurements)."""
        self.ui.modelPathLineEdit.setEnabled(index >= len(self.modelEntries))
        if 0 <= index < len(self.modelEntries):
            threshold = Parameters.for_model(self.modelEntries[index]).uncertainty_threshold
            if threshold is not None:
                self.ui.uncertaintyThresholdSlider.value = threshold

    def showParameters(self, parameters):
        """Put stored settings on the panel (None: keep the bundle's defaults)."""
        if parameters is None:
            return
        paths = [str(entry.path) for entry in self.modelEntries]
        if parameters.model in paths:
            self.ui.modelComboBox.currentIndex = paths.index(parameters.model)
        elif parameters.model:
            self.ui.modelComboBox.currentIndex = len(paths)
            self.ui.modelPathLineEdit.currentPath = parameters.model
        self.ui.deviceComboBox.currentIndex = list(DEVICE_LABELS).index(parameters.device)
        self.ui.fastCheckBox.checked = parameters.fast
        self.ui.uncertaintyCheckBox.checked = parameters.uncertainty
        if parameters.uncertainty_threshold is not None:
            self.ui.uncertaintyThresholdSlider.value = parameters.uncertainty_threshold

    def readParameters(self):
        index = self.ui.modelComboBox.currentIndex
        if 0 <= index < len(self.modelEntries):
            model = str(self.modelEntries[index].path)
        else:
            model = self.ui.modelPathLineEdit.currentPath or None
        return Parameters(model=model,
                          device=list(DEVICE_LABELS)[self.ui.deviceComboBox.currentIndex],
                          fast=self.ui.fastCheckBox.checked,
                          uncertainty=self.ui.uncertaintyCheckBox.checked,
                          uncertainty_threshold=self.ui.uncertaintyThresholdSlider.value)

    # ---- running ------------------------------------------------------------------------------
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
        parameters = self.readParameters()
        parameters.save(self.logic.getParameterNode())
        with slicer.util.tryWithErrorDisplay(_("Could not start the segmentation."),
                                             waitCursor=True):
            self.logic.process(inputVolume, output, parameters, wait=False,
                               onProgress=self.onProgress, replace=replace)
            self.ui.applyButton.text = _("Cancel")
            self.timer.start()

    def onTimer(self):
        outcome = self.logic.poll()
        if outcome is None:
            return
        self.timer.stop()
        self.ui.applyButton.text = _("Apply")
        self.ui.progressBar.value = 100 if outcome.status is RunStatus.OK else 0
        self.ui.statusLabel.text = outcome.message
        if outcome.status is RunStatus.ERROR:
            slicer.util.errorDisplay(outcome.message)
        if outcome.status is RunStatus.OK:
            self.ui.outputSegmentationSelector.setCurrentNode(outcome.segmentationNode)
        self.updateReviewPanel()
        self.selectCurrentRegionRow()  # the Logic started the review at the rank-1 region

    # ---- review -------------------------------------------------------------------------------
    def updateVerdictBanner(self):
        banner = self.logic.qualityBanner()
        self.ui.qualityBannerLabel.setVisible(banner is not None)
        if banner is not None:
            self.ui.qualityBannerLabel.text = banner.text
            self.ui.qualityBannerLabel.styleSheet = banner.style_sheet

    def updateReviewPanel(self):
        self.updateVerdictBanner()
        self.ui.regionsTable.clearContents()
        review = self.logic.review
        rows = review.region_table if review else []
        self.ui.regionsTable.setRowCount(len(rows))
        for row, region in enumerate(rows):
            done = review.reviewed.get(region["id"])
            values = [str(region["rank"]), f"{region['volume_ml']:.2f}",
                      f"{region['mean_uncertainty']:.2f}",
                      ", ".join(f"{c:.0f}" for c in region.get("centroid_ras_mm", [])),
                      done.value if done else ""]
            for column, value in enumerate(values):
                item = qt.QTableWidgetItem(value)
                item.setData(qt.Qt.UserRole, region["id"])
                self.ui.regionsTable.setItem(row, column, item)
        summary = self.logic.reviewSummary()
        self.ui.summaryLabel.text = "" if summary is None else _(
            "Pancreas {p:.1f} mL · lesions {n} ({l:.2f} mL, largest {d:.1f} mm) · "
            "{r} regions to review").format(
                p=summary["pancreas_volume_ml"], n=summary["lesion_count"],
                l=summary["lesion_volume_ml"], d=summary["largest_lesion_diameter_mm"],
                r=summary["regions_left"])

    def selectCurrentRegionRow(self):
        review = self.logic.review
        if review is None or review.current_region_id is None:
            return
        ids = [r["id"] for r in review.region_table]
        if review.current_region_id in ids:
            self.ui.regionsTable.selectRow(ids.index(review.current_region_id))

    def onRegionSelected(self):
        items = self.ui.regionsTable.selectedItems()
        if items and self.logic.review is not None:
            self.logic.review.select(int(items[0].data(qt.Qt.UserRole)))

    def onReview(self, action):
        review = self.logic.review
        if review is None or review.current_region_id is None:
            return
        with slicer.util.tryWithErrorDisplay(_("Could not change the region."), waitCursor=True):
            review.apply(review.current_region_id, action)
        self.updateReviewPanel()
        self.onNextRegion()

    def onUndo(self):
        if self.logic.review and self.logic.review.can_undo():
            self.logic.review.undo()
            self.updateReviewPanel()

    def onNextRegion(self):
        review = self.logic.review
        if review is None:
            return
        region = review.next_region(review.current_region_id)
        if region is not None:
            review.select(region["id"])
            self.selectCurrentRegionRow()

    def onEdit(self):
        review = self.logic.review
        if review is None:
            return
        slicer.util.selectModule("SegmentEditor")
        editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        editor.setSegmentationNode(review.segmentation_node)
        editor.setSourceVolumeNode(self.ui.inputVolumeSelector.currentNode())
        uncertain = review.segment_ids.get(scene_results.UNCERTAIN_SEGMENT_VALUE)
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
