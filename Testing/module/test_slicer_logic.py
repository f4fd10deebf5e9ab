"""The module's Logic on a real MRML scene (slicer-core) with the real CT, driven by the fake
engine (``slicer_harness.py``: the real CLI, report builder and output writer around made-up
arrays). Expectations are read from the engine's own files, kept with ``outputDir``."""

from __future__ import annotations

import json
import re
import time

import numpy as np
import psutil
import pytest
import SimpleITK as sitk
import slicerio

from slicer_harness import ct_fixture, scene_fixture  # noqa: F401 (fixtures "ct", "scene")
from slicer_harness import (MODULE_DIR, fake_engine_logic, install_module_stubs,
                            slow_engine_pids)

install_module_stubs()
import slicer  # noqa: E402

from pancreas_ssl_seg import progress as protocol  # noqa: E402
from PancreasSSLSegLib import scene_results  # noqa: E402
from PancreasSSLSegLib.engine_process import EngineFailed, RunStatus  # noqa: E402
from PancreasSSLSegLib.parameters import Parameters  # noqa: E402
from PancreasSSLSegLib.review import ReviewAction  # noqa: E402

# The bundle the fake engine runs when no model is given: the shipped one.
SHIPPED_METADATA = json.loads((MODULE_DIR.parent / "Resources" / "Models" / "pancreas-demo"
                               / "metadata.json").read_text(encoding="utf-8"))


@pytest.fixture
def logic(monkeypatch):
    return fake_engine_logic(monkeypatch)


def engine_arrays(out_dir, case="CT"):
    """The engine's label, uncertainty and region maps of ``case`` as (k, j, i) arrays."""
    return [sitk.GetArrayFromImage(sitk.ReadImage(str(out_dir / f"{case}_{name}.nii.gz")))
            for name in ("labels", "uncertainty", "regions")]


def segment_arrays(segmentation_node, volume):
    segmentation = segmentation_node.GetSegmentation()
    return {segmentation.GetNthSegmentID(i): slicer.util.arrayFromSegmentBinaryLabelmap(
        segmentation_node, segmentation.GetNthSegmentID(i), volume).astype(bool)
        for i in range(segmentation.GetNumberOfSegments())}


def test_process_loads_the_engines_segments_on_the_input_grid(scene, ct, logic, tmp_path):
    seen = []
    outcome = logic.process(ct, onProgress=seen.append, outputDir=tmp_path)
    assert outcome.status is RunStatus.OK and outcome.status == "ok"
    stages = [record.stage for record in seen]
    assert stages[0] == "reading" and stages[-2:] == ["case_done", "done"]
    assert set(stages) <= {*protocol.CASE_STAGES, protocol.RUN_DONE}
    labels, uncertainty, regions = engine_arrays(tmp_path)

    node = outcome.segmentationNode
    segmentation = node.GetSegmentation()
    specs = [spec for spec in SHIPPED_METADATA["labels"] if spec["value"] > 0]
    specs.append(SHIPPED_METADATA["uncertain_region"])
    assert segmentation.GetNumberOfSegments() == 3
    for index, spec in enumerate(specs):
        segment = segmentation.GetNthSegment(index)
        assert segment.GetName() == spec["name"]
        assert np.allclose(segment.GetColor(), np.array(spec["color"]) / 255.0, atol=1e-5)
        for field in ("category", "type"):
            code = spec["terminology"][field]
            assert f"{code['scheme']}^{code['code']}^{code['meaning']}" in segment.GetTerminology()
    # the segments are the engine's .seg.nrrd as slicerio (another reader) reads it
    written = slicerio.read_segmentation(str(tmp_path / "CT.seg.nrrd"))
    assert [s["id"] for s in written["segments"]] == [
        segmentation.GetNthSegmentID(i) for i in range(3)]

    arrays = list(segment_arrays(node, ct).values())
    assert np.array_equal(arrays[0], labels == 1)
    assert np.array_equal(arrays[1], labels == 2)
    assert np.array_equal(arrays[2], regions > 0)  # overlaps the pancreas: both kept
    assert arrays[2].any() and (arrays[0] & arrays[2]).any()
    assert segmentation.ContainsRepresentation("Closed surface")
    review_id = segmentation.GetNthSegmentID(2)
    assert node.GetDisplayNode().GetSegmentOpacity3D(review_id) < 1.0

    volume = outcome.uncertaintyNode
    assert volume.GetImageData().GetDimensions() == ct.GetImageData().GetDimensions()
    assert np.allclose(volume.GetSpacing(), ct.GetSpacing())
    assert np.allclose(volume.GetOrigin(), ct.GetOrigin())
    assert np.array_equal(slicer.util.arrayFromVolume(volume), uncertainty)
    assert volume.GetDisplayNode().GetColorNodeID() == scene_results.UNCERTAINTY_COLOR_NODE_ID
    assert scene.colors.GetColorLegendDisplayNode(volume) is not None  # the colour bar
    composite = scene.scene.GetFirstNodeByClass("vtkMRMLSliceCompositeNode")
    assert composite.GetForegroundVolumeID() == volume.GetID()
    assert composite.GetBackgroundVolumeID() == ct.GetID()
    assert logic.lastResult.report == json.loads((tmp_path / "CT_report.json").read_text())


def test_without_uncertainty_there_is_no_review(scene, ct, logic):
    outcome = logic.process(ct, parameters=Parameters(uncertainty=False))
    segmentation = outcome.segmentationNode.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName() for i in range(2)] == [
        "Pancreas", "Pancreatic lesion"]
    assert segmentation.GetNumberOfSegments() == 2
    assert outcome.uncertaintyNode is None and logic.review is None


def test_review_changes_exactly_the_region_voxels_and_undo_restores(ct, logic, tmp_path):
    outcome = logic.process(ct, outputDir=tmp_path)
    regions = engine_arrays(tmp_path)[2]
    node = outcome.segmentationNode
    ids = [node.GetSegmentation().GetNthSegmentID(i) for i in range(3)]
    before = segment_arrays(node, ct)
    region = regions == 1
    # each action, then undone: the segment that keeps the region (index), the others lose it
    for action, keeps_as in ((ReviewAction.ACCEPT_AS_PANCREAS, 0),
                             (ReviewAction.MARK_AS_LESION, 1), (ReviewAction.DISCARD, None)):
        logic.review.apply(1, action)
        after = segment_arrays(node, ct)
        for index, segment_id in enumerate(ids):
            assert np.array_equal(after[segment_id][~region], before[segment_id][~region])
            assert after[segment_id][region].all() == (index == keeps_as)
            assert not after[segment_id][region].any() or index == keeps_as
        assert logic.review.reviewed == {1: action}
        assert logic.review.next_region()["id"] == 2

        logic.review.undo()
        restored = segment_arrays(node, ct)
        assert all(np.array_equal(restored[i], before[i]) for i in ids)
        assert logic.review.reviewed == {}
    with pytest.raises(ValueError, match="ReviewAction"):
        logic.review.apply(1, "maybe")


def test_summary_is_the_report_and_follows_the_edits(ct, logic, tmp_path):
    outcome = logic.process(ct, outputDir=tmp_path)
    labels, _, regions = engine_arrays(tmp_path)
    voxel_ml = float(np.prod(ct.GetSpacing())) / 1000.0
    summary = logic.reviewSummary()
    report = outcome.report
    assert summary["pancreas_volume_ml"] == pytest.approx(report["pancreas"]["volume_ml"])
    assert summary["pancreas_volume_ml"] == pytest.approx((labels >= 1).sum() * voxel_ml)
    assert summary["lesion_count"] == report["lesions"]["count"] == 1
    # the 4×4×4-voxel lesion at 3 mm: longest centre-to-centre distance is the cube diagonal
    assert summary["largest_lesion_diameter_mm"] == pytest.approx(np.sqrt(3) * 3 * 3.0)
    assert summary["largest_lesion_diameter_mm"] == pytest.approx(
        report["lesions"]["largest_diameter_mm"])
    logic.review.apply(2, ReviewAction.MARK_AS_LESION)  # the region outside the pancreas
    summary = logic.reviewSummary()
    assert summary["lesion_count"] == 2
    assert summary["lesion_volume_ml"] == pytest.approx(
        ((labels == 2) | (regions == 2)).sum() * voxel_ml)
    assert summary["regions_left"] == 1


def test_centre_views_on_a_region(scene, ct, logic):
    outcome = logic.process(ct)
    row = outcome.report["regions"][0]
    logic.review.centre_views_on(row["id"])
    red = scene.scene.GetFirstNodeByClass("vtkMRMLSliceNode")
    assert red.GetSliceOffset() == pytest.approx(row["centroid_ras_mm"][2], abs=1e-3)


def test_cancel_kills_the_process_tree_and_leaves_the_scene_unchanged(scene, ct, logic,
                                                                      monkeypatch):
    monkeypatch.setenv("FAKE_ENGINE_MODE", "slow")
    nodes_before = scene.node_ids()
    workers = []

    def on_progress(record):
        if slow_engine_pids(record):
            workers.append(slow_engine_pids(record)[0])
            logic.cancel()

    outcome = logic.process(ct, onProgress=on_progress)
    assert outcome.status is RunStatus.CANCELLED
    assert workers and not psutil.pid_exists(workers[0]) or \
        psutil.Process(workers[0]).status() == psutil.STATUS_ZOMBIE
    assert scene.node_ids() == nodes_before
    assert not logic.isRunning()


@pytest.mark.parametrize("mode, model, exit_code, words", [
    ("ok", "/no/such/bundle", 2, "/no/such/bundle/metadata.json"),
    ("crash", None, 1, "unexpected RuntimeError: simulated engine crash")])
def test_engine_failure_is_reported_and_leaves_the_scene_unchanged(scene, ct, logic, monkeypatch,
                                                                  mode, model, exit_code, words):
    monkeypatch.setenv("FAKE_ENGINE_MODE", mode)
    nodes_before = scene.node_ids()
    logs = []
    logic.logCallback = logs.append
    with pytest.raises(EngineFailed, match=re.escape(words)) as failure:
        logic.process(ct, parameters=Parameters(model=model))
    assert failure.value.exit_code == exit_code
    assert scene.node_ids() == nodes_before
    assert any(words in line for line in logs)


def test_background_run_is_polled_until_done(ct, logic):
    assert logic.process(ct, wait=False) is None
    assert logic.isRunning()
    with pytest.raises(RuntimeError, match="already running"):
        logic.process(ct, wait=False)
    while (outcome := logic.poll()) is None:
        time.sleep(0.05)  # what the Widget's timer does
    assert outcome.status is RunStatus.OK and outcome.segmentationNode is not None


def test_rerun_never_overwrites_edits_unless_told(ct, logic):
    first = logic.process(ct).segmentationNode
    again = logic.process(ct, outputSegmentation=first).segmentationNode
    assert again is first  # unedited: reused
    logic.review.apply(1, ReviewAction.DISCARD)
    edited = segment_arrays(first, ct)
    fresh = logic.process(ct, outputSegmentation=first).segmentationNode
    assert fresh is not first
    assert all(np.array_equal(a, b)
               for a, b in zip(segment_arrays(first, ct).values(), edited.values()))
    replaced = logic.process(ct, outputSegmentation=first, replace=True).segmentationNode
    assert replaced is first


def test_engine_arguments_are_a_list_with_the_parameters(logic, tmp_path):
    parameters = Parameters(model="/m; rm -rf /", device="cuda", fast=True, uncertainty=False,
                            uncertainty_threshold=0.3)
    arguments = logic.engineArguments(["a b.nii.gz"], tmp_path, parameters)
    assert arguments[len(logic.engineCommand):] == [
        "segment", "a b.nii.gz", "-o", str(tmp_path), "--progress", "json", "--device", "cuda",
        "--model", "/m; rm -rf /", "--fast", "--no-uncertainty", "--uncertainty-threshold", "0.3"]


def test_segment_files_writes_one_report_per_case(scene, logic, example_ct, tmp_path):
    second = tmp_path / "second_case.nrrd"
    sitk.WriteImage(sitk.ReadImage(str(example_ct)), str(second))
    nodes_before = scene.node_ids()
    reports = logic.segmentFiles([example_ct, second], tmp_path / "out")
    assert sorted(reports) == ["example_ct", "second_case"]
    assert all(report["pancreas"]["found"] for report in reports.values())
    assert sorted(p.name for p in (tmp_path / "out").glob("*_report.json")) == [
        "example_ct_report.json", "second_case_report.json"]
    assert scene.node_ids() == nodes_before


def test_segment_files_runs_with_its_parameters(logic, example_ct, tmp_path):
    reports = logic.segmentFiles([example_ct], tmp_path / "out",
                                 Parameters(fast=True, uncertainty_threshold=0.35))
    report = reports["example_ct"]
    assert report["uncertainty"]["threshold"] == 0.35 and report["mode"] == "fast"
