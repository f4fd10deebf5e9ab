"""The module's Logic on a real MRML scene (slicer-core) with the real CT, driven by a fake engine
CLI (``slicer_harness.py``) that prints the real protocol's progress lines and writes its outputs."""

from __future__ import annotations

import time

import numpy as np
import psutil
import pytest
import SimpleITK as sitk

from slicer_harness import (_fake_outputs, ct, fake_engine_logic,  # noqa: F401 (fixtures)
                            install_module_stubs, scene)

install_module_stubs()
import slicer  # noqa: E402

import PancreasSSLSeg as module  # noqa: E402
from PancreasSSLSegModuleLib import review, scene_results  # noqa: E402
from PancreasSSLSegModuleLib.engine_process import EngineFailed, parse_progress_line  # noqa: E402

from pancreas_ssl_training.bundle_metadata import LABELS, UNCERTAIN_REGION  # noqa: E402


@pytest.fixture
def logic(monkeypatch):
    return fake_engine_logic(monkeypatch)


@pytest.fixture
def expected(example_ct):
    """What the fake engine writes for the example CT, as (k, j, i) arrays."""
    return _fake_outputs(sitk.ReadImage(str(example_ct)))


def segment_arrays(segmentation_node, volume):
    segmentation = segmentation_node.GetSegmentation()
    return {segmentation.GetNthSegmentID(i): slicer.util.arrayFromSegmentBinaryLabelmap(
        segmentation_node, segmentation.GetNthSegmentID(i), volume).astype(bool)
        for i in range(segmentation.GetNumberOfSegments())}


def test_progress_lines_are_parsed_and_plain_text_is_not():
    progress = parse_progress_line('{"stage": "fine", "fraction": 0.5, "message": "fine pass"}')
    assert (progress.stage, progress.fraction, progress.message) == ("fine", 0.5, "fine pass")
    assert parse_progress_line("Loading model...") is None
    assert parse_progress_line("{not json") is None


def test_process_loads_named_coloured_segments_on_the_input_grid(scene, ct, logic, expected):
    labels, uncertainty, regions = expected
    seen = []
    outcome = logic.process(ct, device="cpu", fast=True, onProgress=seen.append)
    assert outcome.status == "ok"
    assert [p.stage for p in seen][0] == "load" and seen[-1].stage == "done"

    segmentation = outcome.segmentationNode.GetSegmentation()
    specs = [spec for spec in LABELS if spec["value"] > 0] + [UNCERTAIN_REGION]
    assert segmentation.GetNumberOfSegments() == 3
    for index, spec in enumerate(specs):
        segment = segmentation.GetNthSegment(index)
        assert segment.GetName() == spec["name"]
        assert np.allclose(segment.GetColor(), np.array(spec["color"]) / 255.0)
        terminology = segment.GetTerminology()
        assert f"{spec['terminology']['type']['scheme']}^{spec['terminology']['type']['code']}^" in terminology
        assert spec["terminology"]["category"]["code"] in terminology
    assert "SCT^15776009^Pancreas" in segmentation.GetNthSegment(0).GetTerminology()

    arrays = segment_arrays(outcome.segmentationNode, ct)
    ids = [segmentation.GetNthSegmentID(i) for i in range(3)]
    assert np.array_equal(arrays[ids[0]], labels == 1)
    assert np.array_equal(arrays[ids[1]], labels == 2)
    assert np.array_equal(arrays[ids[2]], regions > 0)  # overlaps the pancreas: both kept
    assert outcome.segmentationNode.GetSegmentation().ContainsRepresentation("Closed surface")
    assert outcome.segmentationNode.GetDisplayNode().GetSegmentOpacity3D(ids[2]) < 1.0

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


@pytest.mark.parametrize("action, keeps_as", [(review.ACCEPT_AS_PANCREAS, 0),
                                               (review.MARK_AS_LESION, 1),
                                               (review.DISCARD, None)])
def test_review_changes_exactly_the_region_voxels_and_undo_restores(ct, logic, expected, action,
                                                                    keeps_as):
    _, _, regions = expected
    outcome = logic.process(ct)
    node = outcome.segmentationNode
    ids = [node.GetSegmentation().GetNthSegmentID(i) for i in range(3)]
    before = segment_arrays(node, ct)
    region = regions == 1

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


def test_summary_follows_the_edits(ct, logic, expected):
    labels, _, regions = expected
    logic.process(ct)
    voxel_ml = float(np.prod(ct.GetSpacing())) / 1000.0
    summary = logic.reviewSummary()
    assert summary["pancreas_volume_ml"] == pytest.approx((labels >= 1).sum() * voxel_ml)
    assert summary["lesion_count"] == 1
    # the 4×4×4-voxel lesion at 3 mm: longest centre-to-centre distance is the cube diagonal
    assert summary["largest_lesion_diameter_mm"] == pytest.approx(np.sqrt(3) * 3 * 3.0)
    logic.review.apply(2, review.MARK_AS_LESION)  # the region outside the pancreas
    summary = logic.reviewSummary()
    assert summary["lesion_count"] == 2
    assert summary["lesion_volume_ml"] == pytest.approx(((labels == 2) | (regions == 2)).sum() * voxel_ml)
    assert summary["regions_left"] == 1


def test_centre_views_on_a_region(scene, ct, logic):
    outcome = logic.process(ct)
    row = outcome.report["regions"][0]
    logic.review.centre_views_on(row["id"])
    red = scene.scene.GetFirstNodeByClass("vtkMRMLSliceNode")
    assert red.GetSliceOffset() == pytest.approx(row["centroid_ras_mm"][2], abs=1e-3)


def test_cancel_kills_the_process_tree_and_leaves_the_scene_unchanged(scene, ct, logic, monkeypatch):
    monkeypatch.setenv("FAKE_ENGINE_MODE", "slow")
    nodes_before = scene.node_ids()
    workers = []

    def on_progress(progress):
        if "worker_pid" in progress.raw:
            workers.append(progress.raw["worker_pid"])
            logic.cancel()

    outcome = logic.process(ct, onProgress=on_progress)
    assert outcome.status == "cancelled"
    assert workers and not psutil.pid_exists(workers[0]) or \
        psutil.Process(workers[0]).status() == psutil.STATUS_ZOMBIE
    assert scene.node_ids() == nodes_before
    assert not logic.isRunning()


@pytest.mark.parametrize("mode, exit_code, words", [("bad_bundle", 2, "expected metadata.json"),
                                                     ("crash", 1, "simulated engine crash")])
def test_engine_failure_is_reported_and_leaves_the_scene_unchanged(scene, ct, logic, monkeypatch,
                                                                  mode, exit_code, words):
    monkeypatch.setenv("FAKE_ENGINE_MODE", mode)
    nodes_before = scene.node_ids()
    logs = []
    logic.logCallback = logs.append
    with pytest.raises(EngineFailed, match=words) as failure:
        logic.process(ct, model="/no/such/bundle")
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
    assert outcome.status == "ok" and outcome.segmentationNode is not None


def test_rerun_never_overwrites_edits_unless_told(ct, logic):
    first = logic.process(ct).segmentationNode
    again = logic.process(ct, outputSegmentation=first).segmentationNode
    assert again is first  # unedited: reused
    logic.review.apply(1, review.DISCARD)
    edited = segment_arrays(first, ct)
    fresh = logic.process(ct, outputSegmentation=first).segmentationNode
    assert fresh is not first
    assert all(np.array_equal(a, b) for a, b in zip(segment_arrays(first, ct).values(), edited.values()))
    replaced = logic.process(ct, outputSegmentation=first, replace=True).segmentationNode
    assert replaced is first


def test_engine_arguments_are_a_list_with_the_options(logic, tmp_path):
    arguments = logic.engineArguments(["a b.nii.gz"], tmp_path, model="/m; rm -rf /", device="cuda",
                                      fast=True, uncertainty=False, uncertaintyThreshold=0.3)
    assert arguments[-8:] == ["--progress", "json", "--model", "/m; rm -rf /", "--fast",
                              "--no-uncertainty", "--uncertainty-threshold", "0.3"]
    assert "a b.nii.gz" in arguments and arguments[arguments.index("--device") + 1] == "cuda"


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


def test_segment_files_passes_its_threshold_to_the_engine(logic, example_ct, tmp_path,
                                                          monkeypatch):
    given = []
    original = logic.engineArguments

    def spy(*args, **kwargs):
        given.append(original(*args, **kwargs))
        return given[-1]

    monkeypatch.setattr(logic, "engineArguments", spy)
    logic.segmentFiles([example_ct], tmp_path / "out", uncertaintyThreshold=0.35)
    assert given[0][given[0].index("--uncertainty-threshold") + 1] == "0.35"
