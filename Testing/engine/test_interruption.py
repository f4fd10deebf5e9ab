"""Interrupted and concurrent batches: the real CLI killed (SIGKILL) at random points never
leaves a final-named file that is incomplete, a report exists only beside the five files it
describes (their SHA-256), a re-run resumes (finished cases "skipped") and ``--overwrite`` redoes
everything; two CLI processes writing into one folder do not corrupt each other's files.

The subprocess runs use tiny generated volumes and the tiny random bundle (a few seconds each).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import SimpleITK as sitk
import slicerio
from test_cli import FakeSegment
from test_outputs import fake_result, write_fake_preview

from pancreas_ssl_seg import cli, cli_exit, cli_segment, outputs
from pancreas_ssl_seg.case_files import OUTPUT_SUFFIXES, case_is_complete, output_paths
from pancreas_ssl_seg.outputs import write_case_outputs
from pancreas_ssl_seg.temporaries import TEMPORARY_PREFIX

CASES = ("case0", "case1", "case2", "case3")
# New each run (so CI's random kills land at new moments); printed by every test that uses it,
# and PANCREAS_SSL_KILL_SEED=<seed> replays a failure.
KILL_SEED = int(os.environ.get("PANCREAS_SSL_KILL_SEED", random.SystemRandom().randrange(10**6)))
# Kills at uniformly random times; CI runs one, a longer sweep sets this variable.
RANDOM_KILLS = int(os.environ.get("PANCREAS_SSL_RANDOM_KILLS", "1"))
PROCESS_LIMIT_S = 60


@pytest.fixture(scope="module")
def inputs_dir(tmp_path_factory) -> Path:
    """Small abdomen-like volumes: an air-surrounded soft-tissue body with a fat patch."""
    folder = tmp_path_factory.mktemp("inputs")
    rng = np.random.default_rng(0)
    z, y, x = np.mgrid[:12, :40, :48]
    body = ((y - 20) / 17) ** 2 + ((x - 24) / 21) ** 2 < 1
    for index, case in enumerate(CASES):
        hu = np.where(body, 40.0, -1000.0) + rng.normal(0, 20, body.shape)
        hu[body & (((y - 22) / 6) ** 2 + ((x - 18 - index) / 8) ** 2 < 1)] = -90.0
        image = sitk.GetImageFromArray(hu.astype(np.float32))
        image.SetSpacing((3.0, 3.0, 5.0))
        sitk.WriteImage(image, str(folder / f"{case}.nii.gz"))
    return folder


# The real CLI with every rename slowed down, as on a slow network share: gives a kill time to
# land between the renames of one case.
SLOW_RENAMES_CLI = """
import os, sys, time
from pancreas_ssl_seg.cli import main
real_replace = os.replace
def slow_replace(source, target):
    real_replace(source, target)
    time.sleep(0.2)
os.replace = slow_replace
sys.exit(main())
"""


def start_cli(inputs: list[Path], out_dir: Path, bundle: Path, *extra: str,
              slow_renames: bool = False) -> subprocess.Popen:
    program = ["-c", SLOW_RENAMES_CLI] if slow_renames else ["-m", "pancreas_ssl_seg"]
    command = [sys.executable, *program, "segment", *map(str, inputs), "-o", str(out_dir),
               "--model", str(bundle), "--device", "cpu", "--fast", "--progress", "json", *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, encoding="utf-8")


def finish(process: subprocess.Popen) -> tuple[int, list[dict], str]:
    out, err = process.communicate(timeout=PROCESS_LIMIT_S)
    records = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    return process.returncode, records, err


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_fully(path: Path) -> None:
    """Decode every byte of an output file; a truncated file raises."""
    name = path.name
    if name.endswith(".nii.gz"):
        sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    elif name.endswith(".seg.nrrd"):
        assert slicerio.read_segmentation(str(path))["voxels"].size > 0
    elif name.endswith(".png"):
        assert matplotlib.image.imread(str(path)).size > 0
    else:
        json.loads(path.read_text(encoding="utf-8"))


def final_names(cases=CASES) -> set[str]:
    return {f"{case}{suffix}" for case in cases for suffix in OUTPUT_SUFFIXES.values()}


def assert_folder_consistent(out_dir: Path, cases=CASES) -> dict[str, int]:
    """No incomplete final-named file; every report sits beside the exact files it describes.
    Returns counts of what the folder holds (for the kill statistics)."""
    # a batch's summary.csv/json (batch_summary) sit beside the cases' files
    names = ({p.name for p in out_dir.iterdir() if not p.name.startswith("summary")}
             if out_dir.exists() else set())
    temporaries = {n for n in names if n.startswith(TEMPORARY_PREFIX)}
    assert names - temporaries <= final_names(cases), names - temporaries - final_names(cases)
    for name in names - temporaries:
        read_fully(out_dir / name)
    complete = 0
    for case in cases:
        report_path = output_paths(out_dir, case)["report"]
        if not report_path.exists():
            continue
        report = json.loads(report_path.read_text(encoding="utf-8"))
        assert report["case"] == case
        assert set(report["outputs"]) == set(OUTPUT_SUFFIXES) - {"report"}
        for key, record in report["outputs"].items():
            assert record["file"] == output_paths(out_dir, case)[key].name
            assert sha256(out_dir / record["file"]) == record["sha256"], (case, key)
        assert case_is_complete(out_dir, case)
        complete += 1
    reportless = {n.split("_")[0].split(".")[0] for n in names - temporaries} - {
        c for c in cases if output_paths(out_dir, c)["report"].exists()}
    return {"complete": complete, "temporaries": len(temporaries),
            "cases_without_report": len(reportless)}


def kill_at_progress_line(process: subprocess.Popen, line_number: int, delay_s: float) -> None:
    for _ in range(line_number):
        if not process.stdout.readline():
            return  # finished before that line
    time.sleep(delay_s)
    os.kill(process.pid, signal.SIGKILL)


def kill_when_file_appears(process: subprocess.Popen, out_dir: Path, temporary: bool,
                           delay_s: float, signal_number: int = signal.SIGKILL) -> None:
    """Kill once a temporary (writing) or a report-less final file (renaming) shows up."""
    while process.poll() is None:
        names = os.listdir(out_dir) if out_dir.exists() else []
        if temporary:
            hit = any(n.startswith(TEMPORARY_PREFIX) for n in names)
        else:
            finals = {n for n in names if not n.startswith(TEMPORARY_PREFIX)}
            hit = any(n in finals and not output_paths(out_dir, c)["report"].exists()
                      for c in CASES for n in (f"{c}_labels.nii.gz",))
        if hit:
            time.sleep(delay_s)
            os.kill(process.pid, signal_number)
            return
        time.sleep(0.0005)


def test_sigkill_at_random_points_then_resume_then_overwrite(inputs_dir, random_bundle,
                                                             tmp_path):
    print(f"PANCREAS_SSL_KILL_SEED={KILL_SEED}")
    rng = random.Random(KILL_SEED)
    out_dir = tmp_path / "out"
    inputs = [inputs_dir / f"{case}.nii.gz" for case in CASES]
    # Three kills, each landing at a different stage: after a random progress line while the
    # second or third case is segmented (7 lines a case), while temporaries are being written,
    # and between the renames of one case.
    plans = [("line", rng.randint(9, 20), rng.uniform(0.0, 0.3)),
             ("temporary", None, rng.uniform(0.0, 0.05)),
             ("renamed", None, 0.0)]
    landed = []
    for kind, line_number, delay_s in plans:
        process = start_cli(inputs, out_dir, random_bundle, slow_renames=kind == "renamed")
        if kind == "line":
            kill_at_progress_line(process, line_number, delay_s)
        else:
            kill_when_file_appears(process, out_dir, kind == "temporary", delay_s)
        code, _, err = finish(process)
        assert "Traceback" not in err
        landed.append((kind, code, assert_folder_consistent(out_dir)))
    assert all(code == -signal.SIGKILL for _, code, _ in landed), (KILL_SEED, landed)
    assert landed[1][2]["temporaries"] > 0, KILL_SEED  # that kill hit the writing step
    assert landed[2][2]["cases_without_report"] > 0, KILL_SEED  # and that one the renames
    print("kills:", landed)

    finished_before = {c for c in CASES if case_is_complete(out_dir, c)}
    assert 0 < len(finished_before) < len(CASES)
    code, records, err = finish(start_cli(inputs, out_dir, random_bundle))
    assert code == 0, err
    statuses = {c["case"]: c["status"] for c in records[-1]["cases"]}
    assert statuses == {c: "skipped" if c in finished_before else "ok" for c in CASES}
    assert {r["case"] for r in records if r["stage"] == "skipped"} == finished_before
    assert assert_folder_consistent(out_dir) == {"complete": len(CASES), "temporaries": 0,
                                                 "cases_without_report": 0}

    reports_before = {c: output_paths(out_dir, c)["report"].stat().st_mtime_ns for c in CASES}
    code, records, err = finish(start_cli(inputs, out_dir, random_bundle, "--overwrite"))
    assert code == 0, err
    assert [c["status"] for c in records[-1]["cases"]] == ["ok"] * len(CASES)
    assert all(output_paths(out_dir, c)["report"].stat().st_mtime_ns > reports_before[c]
               for c in CASES)
    assert assert_folder_consistent(out_dir)["complete"] == len(CASES)


def test_sigkill_at_random_times_during_overwrite_runs(inputs_dir, random_bundle, tmp_path):
    print(f"PANCREAS_SSL_KILL_SEED={KILL_SEED}")
    rng = random.Random(KILL_SEED + 1)
    out_dir = tmp_path / "out"
    inputs = [inputs_dir / f"{case}.nii.gz" for case in CASES]
    outcomes = []
    for _ in range(RANDOM_KILLS):
        process = start_cli(inputs, out_dir, random_bundle, "--overwrite")
        process.stdout.readline()  # started (imports take seconds): the cases take ~1 s each
        time.sleep(rng.uniform(0.0, 4.0))
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
        code, _, err = finish(process)
        assert "Traceback" not in err and code in (0, -signal.SIGKILL), (KILL_SEED, err)
        outcomes.append((code, assert_folder_consistent(out_dir)))
    print("random kills (exit code, folder):", outcomes)


def test_overwrite_killed_between_renames_leaves_no_old_report_beside_new_files(
        inputs_dir, random_bundle, tmp_path):
    """``--overwrite`` with another model over a finished case, killed right after the new
    labels replaced the old ones (renames slowed as on a network share). The old report must be
    gone by then (removed before the first rename): otherwise it would describe old labels beside
    new ones. Deterministic, so CI catches a regression every run (random kills needed ~20)."""
    from conftest import write_random_bundle

    other = write_random_bundle(tmp_path / "other-model", seed=1)
    out_dir = tmp_path / "out"
    inputs = [inputs_dir / "case0.nii.gz"]
    code, _, err = finish(start_cli(inputs, out_dir, random_bundle))
    assert code == 0, err
    labels = output_paths(out_dir, "case0")["labels"]
    old_inode, old_sha = labels.stat().st_ino, sha256(labels)
    process = start_cli(inputs, out_dir, other, "--overwrite", slow_renames=True)
    while process.poll() is None:
        if labels.exists() and labels.stat().st_ino != old_inode:  # first rename done
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.0005)
    code, _, err = finish(process)
    assert code == -signal.SIGKILL, err
    assert sha256(labels) != old_sha  # the new model's labels are in place...
    state = assert_folder_consistent(out_dir, cases=("case0",))
    assert state == {"complete": 0, "temporaries": 5, "cases_without_report": 1}  # ...unclaimed
    code, records, err = finish(start_cli(inputs, out_dir, other))  # a re-run completes it
    assert code == 0 and records[-1]["cases"][0]["status"] == "ok", err
    assert assert_folder_consistent(out_dir, cases=("case0",))["complete"] == 1


def test_sigterm_while_writing_cleans_up_and_says_so(inputs_dir, random_bundle, tmp_path):
    out_dir = tmp_path / "out"
    process = start_cli([inputs_dir / "case0.nii.gz"], out_dir, random_bundle)
    kill_when_file_appears(process, out_dir, temporary=True, delay_s=0.0,
                           signal_number=signal.SIGTERM)
    code, records, err = finish(process)
    assert code == 1 and err.splitlines() == [f"error: {cli_exit.INTERRUPTED}"]
    assert (records[-1]["stage"], records[-1]["status"]) == ("done", "error")
    assert list(out_dir.iterdir()) == []  # its temporaries went with it


def two_case_batch(tmp_path, example_ct, random_bundle):
    """(exit code, second input, output folder) of an in-process CLI batch of two cases."""
    second = tmp_path / "second.nii.gz"
    second.symlink_to(example_ct)
    out_dir = tmp_path / "out"
    code = cli.main(["segment", str(example_ct), str(second), "-o", str(out_dir), "--model",
                     str(random_bundle), "--progress", "none"])
    return code, second, out_dir


def test_ctrl_c_gives_one_line_and_keeps_finished_cases(capsys, tmp_path, example_ct,
                                                        random_bundle, monkeypatch):
    segment = FakeSegment()

    def interrupted_second_case(path, **options):
        if segment.calls:
            raise KeyboardInterrupt
        return segment(path, **options)

    monkeypatch.setattr(cli_segment, "_segment", interrupted_second_case)
    monkeypatch.setattr(outputs, "_write_preview", write_fake_preview)
    code, second, out_dir = two_case_batch(tmp_path, example_ct, random_bundle)
    assert code == 1 and capsys.readouterr().err == f"error: {cli_exit.INTERRUPTED}\n"
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(final_names(["example_ct"]))


def test_two_processes_share_an_output_folder(inputs_dir, random_bundle, tmp_path):
    out_dir = tmp_path / "out"
    shared = inputs_dir / "case0.nii.gz"
    first = start_cli([shared, inputs_dir / "case1.nii.gz"], out_dir, random_bundle,
                      "--overwrite")
    second = start_cli([shared, inputs_dir / "case2.nii.gz"], out_dir, random_bundle,
                       "--overwrite")
    for process in (first, second):
        code, records, err = finish(process)
        assert code == 0, err
        assert records[-1]["cases_ok"] == 2
    assert assert_folder_consistent(out_dir, CASES[:3]) == {
        "complete": 3, "temporaries": 0, "cases_without_report": 0}


# Writes one case over and over, each time with different content (a writer number per write).
REPEATED_WRITER = """
import sys
sys.path.insert(0, sys.argv[4])
import test_outputs
from test_outputs import fake_result, write_fake_preview
from pancreas_ssl_seg import outputs
outputs._write_preview = write_fake_preview
# The bundle's label table needs torch to import: a stand-in keeps this process light.
test_outputs.report_segments = lambda: ([{"value": 1, "name": "Pancreas"}],
                                        {"name": "High-uncertainty region"})
out_dir, writer, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for number in range(count):
    result = fake_result()
    result.labels[result.labels > 0] = 1 + (writer * count + number) % 200
    outputs.write_case_outputs(result, out_dir, "c1")
"""
WRITES_PER_PROCESS = 15


@pytest.mark.skipif(sys.platform == "win32", reason="the folder lock is POSIX flock")
def test_concurrent_writes_of_one_case_always_show_one_writers_files(tmp_path):
    """Two processes rewrite one case with different content; whenever the folder lock is free
    (no writer mid-rename), the report describes exactly the files beside it."""
    import fcntl

    writers = [subprocess.Popen([sys.executable, "-c", REPEATED_WRITER, str(tmp_path), str(n),
                                 str(WRITES_PER_PROCESS), str(Path(__file__).parent)],
                                stderr=subprocess.PIPE, text=True, encoding="utf-8")
               for n in range(2)]
    observations = 0
    while any(writer.poll() is None for writer in writers):
        descriptor = os.open(tmp_path, os.O_RDONLY)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            observations += assert_folder_consistent(tmp_path, cases=("c1",))["complete"]
        finally:
            os.close(descriptor)
        time.sleep(0.005)
    for writer in writers:
        _, err = writer.communicate(timeout=PROCESS_LIMIT_S)
        assert writer.returncode == 0, err
    assert observations > 0
    print(f"consistent observations under the lock: {observations}")
    assert assert_folder_consistent(tmp_path, cases=("c1",)) == {
        "complete": 1, "temporaries": 0, "cases_without_report": 0}


def test_stale_temporaries_are_removed_but_a_running_writers_are_kept(tmp_path, monkeypatch):
    monkeypatch.setattr(outputs, "_write_preview", write_fake_preview)
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        running = tmp_path / f"{TEMPORARY_PREFIX}{alive.pid}-0123abcd-c1_labels.nii.gz"
        stale = tmp_path / f"{TEMPORARY_PREFIX}{dead.pid}-0123abcd-c1_labels.nii.gz"
        for path in (running, stale):
            path.write_bytes(b"half written")
        write_case_outputs(fake_result(), tmp_path, "c1")
        assert running.exists() and not stale.exists()
    finally:
        alive.kill()
        alive.wait()


@pytest.mark.skipif(sys.platform == "win32", reason="the folder lock is POSIX flock")
def test_renames_wait_for_the_folder_lock(tmp_path, monkeypatch):
    import fcntl

    monkeypatch.setattr(outputs, "_write_preview", write_fake_preview)
    descriptor = os.open(tmp_path, os.O_RDONLY)
    fcntl.flock(descriptor, fcntl.LOCK_EX)  # another writer renaming its files
    writer = threading.Thread(target=write_case_outputs, args=(fake_result(), tmp_path, "c1"))
    writer.start()
    try:
        deadline = time.monotonic() + 20
        while len(list(tmp_path.glob(f"{TEMPORARY_PREFIX}*"))) < 6:
            assert time.monotonic() < deadline, "the writer did not write its temporaries"
            time.sleep(0.01)
        time.sleep(0.2)
        assert not any(p.exists() for p in output_paths(tmp_path, "c1").values())
    finally:
        os.close(descriptor)
    writer.join(timeout=20)
    assert case_is_complete(tmp_path, "c1")
    assert assert_folder_consistent(tmp_path, cases=("c1",))["temporaries"] == 0


def test_full_disk_while_writing_fails_the_case_cleanly(capsys, tmp_path, example_ct,
                                                        random_bundle, monkeypatch):
    monkeypatch.setattr(cli_segment, "_segment", FakeSegment())
    written = []

    def preview_on_a_full_disk(result, path):
        written.append(path)
        if len(written) == 2:  # the first case succeeds, the second meets a full disk
            Path(path).write_bytes(b"\x89PNG half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        write_fake_preview(result, path)

    monkeypatch.setattr(outputs, "_write_preview", preview_on_a_full_disk)
    code, second, out_dir = two_case_batch(tmp_path, example_ct, random_bundle)
    err = capsys.readouterr().err
    assert code == 1
    assert err.splitlines() == [f"error: {second}: could not write its outputs in {out_dir}: "
                                "No space left on device (nothing of this case was kept)"]
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(
        final_names(["example_ct"]) | {"summary.csv", "summary.json"})
    assert assert_folder_consistent(out_dir, cases=("example_ct",))["complete"] == 1
