"""The module's Logic when things go wrong around it: the engine process dies mid-run (crash or
SIGKILL, workers left behind), the temporary folder is full (before the run, and while the real
engine writes), and the input volume (or the target segmentation) is removed from the scene while
the engine runs. Each time: no crash, a clear message, no partial nodes, the user's segment edits
untouched and the rest of the scene intact."""

from __future__ import annotations

import errno
import os
import signal
import sys
import tempfile
import time

import numpy as np
import psutil
import pytest
import SimpleITK as sitk

from slicer_harness import ct_fixture, scene_fixture  # noqa: F401 (fixtures "ct", "scene")
from slicer_harness import fake_engine_logic, install_module_stubs, slow_engine_pids

install_module_stubs()
import slicer  # noqa: E402

import PancreasSSLSeg as module  # noqa: E402
from PancreasSSLSegLib import scene_results, volume_io  # noqa: E402
from PancreasSSLSegLib.engine_process import EngineFailed, RunStatus  # noqa: E402
from PancreasSSLSegLib.parameters import Parameters  # noqa: E402

DEADLINE_S = 30  # a run that has not ended by then hangs (the slow fake engine sleeps 600 s)
FULL_DISK = os.strerror(errno.ENOSPC)


@pytest.fixture
def temp_dir(tmp_path, monkeypatch):
    """The Logic's temporary folder, to check that nothing is left in it."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.fixture
def user_edits(scene, ct):
    """A segmentation the user drew (the module did not make it): must survive every failure."""
    node = scene.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "my edits")
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(ct)
    segment_id = node.GetSegmentation().AddEmptySegment("drawn by hand")
    mask = np.zeros(slicer.util.arrayFromVolume(ct).shape, np.uint8)
    mask[20:30, 40:60, 50:70] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, node, segment_id, ct)
    return node, segment_id, mask


def assert_edits_untouched(user_edits, ct) -> None:
    node, segment_id, mask = user_edits
    assert node.GetScene() is not None
    assert node.GetSegmentation().GetNumberOfSegments() == 1
    assert np.array_equal(slicer.util.arrayFromSegmentBinaryLabelmap(node, segment_id, ct), mask)


def poll_until_done(logic):
    deadline = time.monotonic() + DEADLINE_S
    while (outcome := logic.poll()) is None:
        if time.monotonic() > deadline:
            logic.cancel()
            pytest.fail(f"the run did not end within {DEADLINE_S} s")
        time.sleep(0.05)
    return outcome


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_engine_killed_mid_run_with_a_worker_left_behind(scene, ct, user_edits, temp_dir,
                                                        monkeypatch):
    logic = fake_engine_logic(monkeypatch, mode="slow")
    nodes_before = scene.node_ids()
    workers = []

    def kill_the_engine(record):
        if slow_engine_pids(record):  # as the system's OOM killer would
            worker, engine = slow_engine_pids(record)
            workers.append(worker)
            os.kill(engine, signal.SIGKILL)

    logic.process(ct, outputSegmentation=user_edits[0], replace=True, wait=False,
                  onProgress=kill_the_engine)
    outcome = poll_until_done(logic)
    assert outcome.status is RunStatus.ERROR
    assert "killed by signal SIGKILL" in outcome.message and "nothing was loaded" in outcome.message
    assert workers and gone(workers[0])  # the orphaned worker was stopped too
    assert scene.node_ids() == nodes_before and not logic.isRunning()
    assert_edits_untouched(user_edits, ct)
    assert list(temp_dir.iterdir()) == []


def test_engine_crash_leaves_edits_untouched(scene, ct, user_edits, temp_dir, monkeypatch):
    logic = fake_engine_logic(monkeypatch, mode="crash")
    nodes_before = scene.node_ids()
    with pytest.raises(EngineFailed, match="simulated engine crash") as failure:
        logic.process(ct, outputSegmentation=user_edits[0], replace=True)
    assert failure.value.exit_code == 1
    assert scene.node_ids() == nodes_before
    assert_edits_untouched(user_edits, ct)
    assert list(temp_dir.iterdir()) == []


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, FULL_DISK),
                                   RuntimeError(f"itk::ERROR: NrrdImageIO: {FULL_DISK}")],
                         ids=["oserror", "itk_runtimeerror"])
def test_full_temporary_folder_before_the_run(scene, ct, user_edits, temp_dir, monkeypatch,
                                              error):
    logic = fake_engine_logic(monkeypatch, mode="ok")
    nodes_before = scene.node_ids()
    real_write = sitk.WriteImage
    disk_full = [True]

    def write_on_a_full_disk(image, path, *args, **kwargs):
        if not disk_full[0]:
            return real_write(image, path, *args, **kwargs)
        with open(path, "wb") as stream:
            stream.write(b"NRRD0004\n")  # what fitted before the disk filled up
        raise error

    monkeypatch.setattr(volume_io.sitk, "WriteImage", write_on_a_full_disk)
    with pytest.raises(EngineFailed, match="temporary folder") as failure:
        logic.process(ct, outputSegmentation=user_edits[0], replace=True)
    assert FULL_DISK in str(failure.value) and str(temp_dir) in str(failure.value)
    assert failure.value.exit_code is None
    assert list(temp_dir.iterdir()) == []
    assert scene.node_ids() == nodes_before and not logic.isRunning()
    assert_edits_untouched(user_edits, ct)

    disk_full[0] = False  # space freed: the same Logic works again
    assert logic.process(ct).status is RunStatus.OK


def test_results_that_fail_to_load_put_the_users_segments_back(scene, ct, user_edits, temp_dir,
                                                                monkeypatch):
    # Loading fails after the segments were read into the user's node.
    def no_overlay(*args):
        raise RuntimeError("no memory for the overlay")

    monkeypatch.setattr(scene_results, "add_uncertainty_volume", no_overlay)
    logic = fake_engine_logic(monkeypatch, mode="ok")
    nodes_before = scene.node_ids()
    with pytest.raises(EngineFailed, match="Could not load the engine's results: no memory"):
        logic.process(ct, outputSegmentation=user_edits[0], replace=True)
    assert scene.node_ids() == nodes_before
    assert_edits_untouched(user_edits, ct)
    assert list(temp_dir.iterdir()) == []


# The real engine CLI whose disk fills up while it writes the report (its last file).
FULL_DISK_ENGINE = """
import errno, os, sys
from pancreas_ssl_seg import outputs
from pancreas_ssl_seg.cli import main

def report_on_a_full_disk(report, path):
    path.write_text('{"case": ')
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

outputs._write_report = report_on_a_full_disk
sys.exit(main())
"""


def test_full_disk_while_the_real_engine_writes(scene, example_ct, random_bundle, tmp_path,
                                                temp_dir, monkeypatch):
    block = tmp_path / "ct_block.nii.gz"
    sitk.WriteImage(sitk.ReadImage(str(example_ct))[37:77, 25:65, 45:65], str(block))
    volume = scene.load_volume(block, "ct_block")
    node = scene.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "my edits")
    segment_id = node.GetSegmentation().AddEmptySegment("drawn by hand")
    mask = np.zeros(slicer.util.arrayFromVolume(volume).shape, np.uint8)
    mask[5:10, 10:20, 10:20] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, node, segment_id, volume)
    nodes_before = scene.node_ids()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    logic = module.PancreasSSLSegLogic()
    logic.engineCommand = [sys.executable, "-c", FULL_DISK_ENGINE]
    out_dir = tmp_path / "out"
    with pytest.raises(EngineFailed, match="could not write its outputs") as failure:
        logic.process(volume, outputSegmentation=node, replace=True, outputDir=out_dir,
                      parameters=Parameters(model=str(random_bundle), device="cpu", fast=True))
    assert FULL_DISK in str(failure.value) and failure.value.exit_code == 1
    assert list(out_dir.iterdir()) == []  # not even the engine's temporaries
    assert list(temp_dir.iterdir()) == []
    assert scene.node_ids() == nodes_before
    assert_edits_untouched((node, segment_id, mask), volume)


def test_input_removed_while_the_engine_runs_stops_it(scene, ct, user_edits, temp_dir,
                                                      monkeypatch):
    logic = fake_engine_logic(monkeypatch, mode="slow")
    workers = []
    logic.process(ct, wait=False, onProgress=lambda record: workers.extend(
        [slow_engine_pids(record)[0]] if slow_engine_pids(record) else []))
    deadline = time.monotonic() + DEADLINE_S
    while not workers:  # the engine is busy segmenting
        assert logic.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    expected_nodes = [i for i in scene.node_ids() if i != ct.GetID()]
    scene.scene.RemoveNode(ct)

    outcome = logic.poll()  # the next timer tick
    assert outcome is not None and outcome.status is RunStatus.ERROR
    assert "'CT' was removed from the scene" in outcome.message
    assert gone(workers[0]) and not logic.isRunning()
    assert scene.node_ids() == expected_nodes
    edits = user_edits[0]  # its reference volume is gone: compare what can still be read
    assert edits.GetScene() is scene.scene and edits.GetSegmentation().GetNumberOfSegments() == 1
    assert list(temp_dir.iterdir()) == []


def test_input_removed_just_before_the_results_load(scene, ct, temp_dir, monkeypatch):
    logic = fake_engine_logic(monkeypatch, mode="ok")
    logic.process(ct, wait=False)
    expected_nodes = [i for i in scene.node_ids() if i != ct.GetID()]
    scene.scene.RemoveNode(ct)
    outcome = poll_until_done(logic)
    assert outcome.status is RunStatus.ERROR and "was removed from the scene" in outcome.message
    assert scene.node_ids() == expected_nodes
    assert list(temp_dir.iterdir()) == []


def test_target_segmentation_removed_during_the_run_gets_a_new_node(scene, ct, monkeypatch):
    logic = fake_engine_logic(monkeypatch, mode="ok")
    first = logic.process(ct).segmentationNode
    logic.process(ct, outputSegmentation=first, wait=False)
    scene.scene.RemoveNode(first)
    outcome = poll_until_done(logic)
    assert outcome.status is RunStatus.OK
    assert outcome.segmentationNode is not first
    assert outcome.segmentationNode.GetScene() is scene.scene
    assert outcome.segmentationNode.GetSegmentation().GetNumberOfSegments() == 3
