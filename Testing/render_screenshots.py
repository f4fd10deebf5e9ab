"""Render Resources/Screenshots/ from real model output: the module's Logic runs the real engine
(the shipped bundle, Accurate mode) on the example CT in a slicer-core scene, then Slicer's own
slice logic draws the axial view and VTK the 3-D view (see ``slicer_harness``).

Run from the repository root (takes about a minute on a CPU)::

    MPLBACKEND=Agg .venv/bin/python Testing/render_screenshots.py --out Resources/Screenshots
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from slicer_harness import (SlicerTestScene, install_module_stubs,  # noqa: E402
                            render_segments_3d_png, render_slice_png)

install_module_stubs()
import slicer  # noqa: E402
import vtk  # noqa: E402

import PancreasSSLSeg as module  # noqa: E402
from PancreasSSLSegLib.parameters import Parameters  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct", type=Path, default=REPO / "Resources/Examples/example_ct.nii.gz")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    scene = SlicerTestScene()
    volume = scene.load_volume(args.ct, "example_ct")
    outcome = module.PancreasSSLSegLogic().process(volume, parameters=Parameters(device="cpu"))
    if outcome.status != "ok":
        raise SystemExit(f"the engine failed: {outcome}")
    node = outcome.segmentationNode
    labelmap = scene.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "labels")
    ids = vtk.vtkStringArray()
    for index in range(2):  # pancreas and lesion; the review band is the overlay's job
        ids.InsertNextValue(node.GetSegmentation().GetNthSegmentID(index))
    scene.segmentations.ExportSegmentsToLabelmapNode(node, ids, labelmap, volume)
    pancreas = slicer.util.arrayFromSegmentBinaryLabelmap(
        node, node.GetSegmentation().GetNthSegmentID(0), volume)
    k = int(np.argmax(pancreas.sum(axis=(1, 2))))  # the slice with the most pancreas
    offset = float(volume.GetOrigin()[2] + k * volume.GetSpacing()[2])  # axis-aligned CT
    render_slice_png(scene, volume, labelmap, outcome.uncertaintyNode,
                     args.out / "slice_view.png", offset, opacity=0.6)
    review = node.GetSegmentation().GetNthSegmentID(2)
    render_segments_3d_png(node, args.out / "3d_view.png", see_through={
        review: node.GetDisplayNode().GetSegmentOpacity3D(review)})
    print(f"pancreas {outcome.report['pancreas']['volume_ml']:.1f} mL on slice {k}; "
          f"pictures in {args.out}")
    scene.close()  # detach the logics first: left to interpreter exit, VTK may crash (rc 139)
    return 0


if __name__ == "__main__":
    sys.exit(main())
