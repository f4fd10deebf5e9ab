"""End to end: the module's Logic runs the real engine CLI (``pancreas-ssl-seg``) in a background
process on (a block of) the real example CT with the tiny random-weight bundle, on a real MRML
scene; the panel's summary of the unedited result is the engine's report. (Batch, one report per
case, is tested with the fake engine in test_slicer_logic.py; here once more with the real engine
for its batch summary.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from slicer_harness import SlicerTestScene, install_module_stubs

install_module_stubs()
import slicer  # noqa: E402

import PancreasSSLSeg as module  # noqa: E402
from pancreas_ssl_seg import progress as protocol  # noqa: E402
from PancreasSSLSegLib.engine_process import EngineFailed, RunStatus  # noqa: E402
from PancreasSSLSegLib.parameters import Parameters  # noqa: E402
from PancreasSSLSegLib.review import ReviewAction  # noqa: E402

THRESHOLD = 0.3  # low, so that the random model surely yields review regions


@pytest.fixture(scope="module")
def run(example_ct, random_bundle, tmp_path_factory):
    """One real run into the scene, the engine's files kept, the progress stages seen. The input
    is a 40×40×20-voxel block of the real CT around the pancreas: the whole volume takes minutes
    with a random model here."""
    folder = tmp_path_factory.mktemp("e2e")
    block = folder / "ct_block.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(example_ct))[37:77, 25:65, 45:65], str(block))
    scene = SlicerTestScene()
    volume = scene.load_volume(block, "ct_block")
    logic = module.PancreasSSLSegLogic()
    stages = []
    parameters = Parameters(model=str(random_bundle), device="cpu", fast=True,
                            uncertainty_threshold=THRESHOLD)
    outcome = logic.process(volume, parameters=parameters, outputDir=folder / "out",
                            onProgress=lambda record: stages.append(record.stage))
    return scene, volume, logic, outcome, folder / "out", stages


def test_the_engine_reports_the_protocols_stages_in_order(run):
    """The stages the pipeline reports are the protocol's (progress.CASE_STAGES), in its order
    (fine and postprocess are skipped when no pancreas is found); the fake engine of the other
    module tests reports the whole list."""
    stages = run[-1]
    assert stages[-1] == protocol.RUN_DONE
    assert stages[:-1] == [stage for stage in protocol.CASE_STAGES if stage in stages]
    assert stages[0] == protocol.READING and stages[-2] == protocol.CASE_DONE


def test_results_match_the_engine_files(run, random_bundle):
    scene, volume, logic, outcome, out, _ = run
    assert outcome.status is RunStatus.OK
    metadata = json.loads((random_bundle / "metadata.json").read_text(encoding="utf-8"))
    segmentation = outcome.segmentationNode.GetSegmentation()
    specs = [label for label in metadata["labels"] if label["value"] > 0]
    names = [segmentation.GetNthSegment(i).GetName()
             for i in range(segmentation.GetNumberOfSegments())]
    assert names == [spec["name"] for spec in specs] + [metadata["uncertain_region"]["name"]]
    for index, spec in enumerate(specs):
        segment = segmentation.GetNthSegment(index)
        assert np.allclose(segment.GetColor(), np.array(spec["color"]) / 255.0)
        assert f"^{spec['terminology']['type']['code']}^" in segment.GetTerminology()

    written = json.loads((out / "ct_block_report.json").read_text(encoding="utf-8"))
    assert written["regions"] == outcome.report["regions"]
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "ct_block_labels.nii.gz")))
    uncertainty = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "ct_block_uncertainty.nii.gz")))
    for index, spec in enumerate(specs):
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(
            outcome.segmentationNode, segmentation.GetNthSegmentID(index), volume)
        assert np.array_equal(mask > 0, labels == spec["value"])
    volume_array = slicer.util.arrayFromVolume(outcome.uncertaintyNode)
    assert volume_array.shape == uncertainty.shape
    assert np.allclose(volume_array, uncertainty, atol=1e-5)
    assert np.allclose(outcome.uncertaintyNode.GetOrigin(), volume.GetOrigin())


def test_the_panel_summary_of_an_unedited_result_is_the_engine_report(run):
    """One definition of volumes, lesion count and diameter: the engine's (report.py)."""
    _, _, logic, outcome, _, _ = run
    summary, report = logic.reviewSummary(), outcome.report
    # something to compare: pancreas and lesions present (not 0 against 0)
    assert report["pancreas"]["volume_ml"] > 0 and report["lesions"]["count"] > 0
    assert summary["pancreas_volume_ml"] == pytest.approx(report["pancreas"]["volume_ml"])
    assert summary["lesion_count"] == report["lesions"]["count"]
    assert summary["lesion_volume_ml"] == pytest.approx(report["lesions"]["total_volume_ml"])
    assert summary["largest_lesion_diameter_mm"] == pytest.approx(
        report["lesions"]["largest_diameter_mm"] or 0.0)


def test_review_on_real_regions_changes_only_that_region(run):
    scene, volume, logic, outcome, out, _ = run
    assert outcome.report["regions"], "expected review regions at a low threshold"
    region_id = outcome.report["regions"][0]["id"]
    node = outcome.segmentationNode
    ids = [node.GetSegmentation().GetNthSegmentID(i) for i in range(3)]
    before = {i: slicer.util.arrayFromSegmentBinaryLabelmap(node, i, volume).copy() for i in ids}
    region = logic.review.region_mask(region_id)
    logic.review.apply(region_id, ReviewAction.MARK_AS_LESION)
    after = {i: slicer.util.arrayFromSegmentBinaryLabelmap(node, i, volume) for i in ids}
    for segment_id in ids:
        assert np.array_equal(after[segment_id][~region], before[segment_id][~region])
    assert after[ids[1]][region].all() and not after[ids[0]][region].any()
    logic.review.undo()
    assert all(np.array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(node, i, volume),
                              before[i]) for i in ids)


def test_export_records_the_engine_model(run, tmp_path):
    scene, volume, logic, outcome, out, _ = run
    folder = logic.exportCorrectedCase(tmp_path)
    record = json.loads((folder / "correction.json").read_text(encoding="utf-8"))
    assert record["model"] == {"name": "tiny-random", "version": "0.0.1"}
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(folder / "labels.nii.gz")))
    engine = sitk.ReadImage(str(out / "ct_block_labels.nii.gz"))
    assert np.array_equal(labels, sitk.GetArrayFromImage(engine))


def test_banner_and_review_start_follow_the_engine_report(run):
    scene, volume, logic, outcome, out, _ = run
    quality = json.loads((out / "ct_block_report.json").read_text(encoding="utf-8"))["quality"]
    banner = logic.qualityBanner()
    assert (banner.status, banner.score, list(banner.reasons)) == (
        quality["status"], quality["score"], quality["reasons"])
    assert f"score {quality['score']:.2f}" in banner.text
    rank_1 = min(outcome.report["regions"], key=lambda row: row["rank"])
    assert logic.review.current_region_id == rank_1["id"]


def test_segment_files_with_the_real_engine_leaves_its_batch_summary(example_ct, random_bundle,
                                                                     tmp_path):
    paths = [tmp_path / "first.nii.gz", tmp_path / "second.nii.gz"]
    image = sitk.ReadImage(str(example_ct))
    sitk.WriteImage(image[37:77, 25:65, 45:65], str(paths[0]))
    sitk.WriteImage(image[30:70, 30:70, 40:60], str(paths[1]))
    logic = module.PancreasSSLSegLogic()
    logs = []
    logic.logCallback = logs.append
    reports = logic.segmentFiles(paths, tmp_path / "out", Parameters(
        model=str(random_bundle), device="cpu", fast=True))
    summary = tmp_path / "out" / "summary.csv"
    assert f"Batch summary: {summary}" in logs
    lines = summary.read_text(encoding="utf-8").splitlines()
    assert sorted(line.split(",")[0] for line in lines[1:]) == ["first", "second"]
    statuses = {line.split(",")[0]: line.split(",")[2] for line in lines[1:]}
    assert statuses == {case: report["quality"]["status"] for case, report in reports.items()}


def test_bad_bundle_is_reported_and_the_scene_is_unchanged(example_ct, tmp_path):
    scene = SlicerTestScene()
    volume = scene.load_volume(example_ct, "example_ct")
    logic = module.PancreasSSLSegLogic()
    (tmp_path / "metadata.json").write_text("{}", encoding="utf-8")
    nodes = scene.node_ids()
    with pytest.raises(EngineFailed) as failure:
        logic.process(volume, parameters=Parameters(model=str(tmp_path), device="cpu",
                                                    fast=True))
    assert failure.value.exit_code == 2
    assert str(tmp_path) in str(failure.value)  # the engine's own message, naming the bundle
    assert "model.safetensors" in str(failure.value)
    assert scene.node_ids() == nodes
