"""3D Slicer module: pancreas and pancreatic lesion segmentation in CT, with uncertainty review.

The module class, a thin Widget and the self-test. The engine (``pancreas_ssl_seg``) runs as a
background process; the module's own code lives in ``PancreasSSLSegLib``, one job per file:
``logic`` (``PancreasSSLSegLogic``, the console API), ``widget`` (the panel), ``parameters`` (the
run settings), ``engine_process``, ``scene_results``, ``review``, ``batch``,
``corrections_export``, ``verdict_banner``, ``volume_io``, ``dependencies``.
"""

from pathlib import Path

import vtk, qt, ctk, slicer  # noqa: E401,F401 (the standard Slicer module imports)
from slicer.ScriptedLoadableModule import *  # noqa: F401,F403
from slicer.i18n import tr as _

from PancreasSSLSegLib.engine_process import RunStatus
from PancreasSSLSegLib.logic import PancreasSSLSegLogic
from PancreasSSLSegLib.parameters import Parameters
from PancreasSSLSegLib.widget import PancreasSSLSegPanel

MODULE_DIR = Path(__file__).resolve().parent


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
            "Coarse-to-fine 2-D/3-D U-Nets (MONAI) trained with semi-supervised learning: "
            "dual-task signed-distance-map regression, random-convolution views, "
            "structure-guided contrastive learning, uncertain-band restoration and PolyCL "
            "pre-training, on NIH Pancreas-CT (Roth et al. 2016, TCIA, CC BY 3.0) with "
            "synthetic lesions. Example CT: TotalSegmentator test data (Apache-2.0). "
            "Not a medical device.")


class PancreasSSLSegWidget(ScriptedLoadableModuleWidget):  # noqa: F405
    """Loads the .ui and hands it to the panel (``PancreasSSLSegLib.widget``)."""

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)  # noqa: F405
        ui_widget = slicer.util.loadUI(self.resourcePath("UI/PancreasSSLSeg.ui"))
        self.layout.addWidget(ui_widget)
        self.logic = PancreasSSLSegLogic()
        self.panel = PancreasSSLSegPanel(ui_widget, self.logic)

    def cleanup(self):
        self.panel.cleanup()


class PancreasSSLSegTest(ScriptedLoadableModuleTest):  # noqa: F405
    """Self-test in a real Slicer: the shipped example CT through the logic."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_segment_example_ct()

    def test_segment_example_ct(self):
        # checkout / additional module path, or the installed extension (see CMakeLists.txt)
        example = next(p for p in (
            MODULE_DIR.parent / "Resources" / "Examples" / "example_ct.nii.gz",
            MODULE_DIR / "Resources" / "Examples" / "example_ct.nii.gz") if p.is_file())
        self.delayDisplay(f"Loading {example}")
        volume = slicer.util.loadVolume(str(example))
        outcome = PancreasSSLSegLogic().process(volume, parameters=Parameters(fast=True))
        self.assertEqual(outcome.status, RunStatus.OK)
        segmentation = outcome.segmentationNode.GetSegmentation()
        names = [segmentation.GetNthSegment(i).GetName()
                 for i in range(segmentation.GetNumberOfSegments())]
        self.assertIn("Pancreas", names)
        self.assertIn("Pancreatic lesion", names)
        self.assertIsNotNone(outcome.uncertaintyNode)
        self.assertEqual(outcome.uncertaintyNode.GetImageData().GetDimensions(),
                         volume.GetImageData().GetDimensions())
        self.delayDisplay("Test passed")
