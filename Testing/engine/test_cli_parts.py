"""Cohort parts: ``segment INPUT... --num-parts N --part-id I`` (issue 14, item 2).

The split is checked on its own (disjoint, complete, independent of the input order, same-named
cases kept together) and through real concurrent CLI processes writing into one folder; the
pipeline is the CLI tests' stand-in (``test_cli.FakeSegment``), the model does not matter here.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import REPO_ROOT

from test_cli import fake_segment_fixture, run  # noqa: F401 (fixture)

from pancreas_ssl_seg import cli, cli_segment
from pancreas_ssl_seg.case_files import case_is_complete

TESTING = Path(__file__).resolve().parent
# One CLI process with the stand-in pipeline: the real argument parsing, split, skip and writing.
DRIVER = f"""
import sys
sys.path[:0] = [{str(TESTING)!r}]
from test_cli import FakeSegment
from test_outputs import write_fake_preview
from pancreas_ssl_seg import cli, cli_segment, outputs
cli_segment._segment = FakeSegment()
outputs._write_preview = write_fake_preview
sys.exit(cli.main(sys.argv[1:]))
"""


def write_cases(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        image = sitk.GetImageFromArray(rng.normal(40, 30, (4, 12, 14)).astype(np.int16))
        image.SetSpacing((1.5, 1.5, 3.0))
        path = folder / f"case{index:02d}.nii.gz"
        sitk.WriteImage(image, str(path))
        paths.append(path)
    return paths


def cases_of(names: list[str], folder: Path = Path("/data")) -> list[cli_segment.Case]:
    return [cli_segment.Case(folder / f"{name}.nii.gz", name) for name in names]


@pytest.mark.parametrize("num_parts", [1, 2, 3, 7, 12])
def test_parts_are_disjoint_cover_every_case_and_ignore_input_order(num_parts):
    names = [f"p{i:03d}" for i in range(10)]
    cases = cases_of(names)
    parts = [cli_segment.select_part(cases, num_parts, part) for part in range(num_parts)]
    owners = {name: [p for p, part in enumerate(parts) if name in {c.name for c in part}]
              for name in names}
    assert all(len(found) == 1 for found in owners.values()), owners
    sizes = [len(part) for part in parts]
    assert max(sizes) - min(sizes) <= 1  # balanced: at most one case more than another part
    shuffled = cases[:]
    random.Random(num_parts).shuffle(shuffled)
    for part in range(num_parts):
        assert {c.name for c in cli_segment.select_part(shuffled, num_parts, part)} == {
            c.name for c in parts[part]}


def test_cases_sharing_a_name_go_to_one_part():
    cases = cases_of(["a", "b", "c", "d"]) + cases_of(["b"], Path("/other"))
    parts = [cli_segment.select_part(cases, 2, part) for part in range(2)]
    holding_b = [p for p, part in enumerate(parts) if any(c.name == "b" for c in part)]
    assert len(holding_b) == 1
    assert sorted(str(c.path) for c in parts[holding_b[0]] if c.name == "b") == [
        "/data/b.nii.gz", "/other/b.nii.gz"]


@pytest.mark.parametrize("argv, message", [
    (["--num-parts", "2", "--part-id", "2"], "--part-id 2 is not below --num-parts 2"),
    (["--num-parts", "0"], "0 is not a positive integer"),
    (["--part-id", "-1"], "-1 is not 0 or more"),
    (["--part-id", "1"], "--part-id 1 is not below --num-parts 1"),
])
def test_bad_part_arguments_exit_2(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["segment", str(tmp_path), "-o", str(tmp_path / "out"), *argv])
    assert stopped.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.usefixtures("fake_segment")
def test_two_parts_running_at_once_into_one_folder_complete_every_case(capsys, tmp_path,
                                                                       random_bundle):
    inputs = write_cases(tmp_path / "in", 5)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "PancreasSSLSeg")}

    def start(part: int) -> subprocess.Popen:
        # the folder as INPUT for one part, the files for the other: the same expanded cases
        given = [str(tmp_path / "in")] if part == 0 else [str(p) for p in reversed(inputs)]
        return subprocess.Popen(
            [sys.executable, "-c", DRIVER, "segment", *given, "-o", str(out), "--model",
             str(random_bundle), "--progress", "json", "--num-parts", "2", "--part-id", str(part)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)

    processes = [start(0), start(1)]
    done = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr.decode("utf-8", "replace")
        done.append(json.loads(stdout.decode("utf-8").splitlines()[-1]))
    written = [{c["case"] for c in d["cases"] if c["status"] == "ok"} for d in done]
    assert not written[0] & written[1]
    assert written[0] | written[1] == {p.name[:-7] for p in inputs}
    assert all(case_is_complete(out, p.name[:-7]) for p in inputs)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporaries left
    for case in written[1]:
        report = json.loads((out / f"{case}_report.json").read_text(encoding="utf-8"))
        assert report["case"] == case

    # Resume: part 1 again skips its cases; --overwrite segments them again, part 0's untouched.
    # (In this process, with the same stand-in: the concurrency above needed real processes.)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    given = [str(p) for p in inputs]
    common = ["--model", str(random_bundle), "--progress", "json", "--num-parts", "2",
              "--part-id", "1"]
    code, stdout, _ = run(capsys, "segment", *given, "-o", out, *common)
    last = json.loads(stdout.splitlines()[-1])
    assert (code, last["cases_ok"], last["cases_skipped"]) == (0, 0, len(written[1]))
    code, stdout, _ = run(capsys, "segment", *given, "-o", out, *common, "--overwrite")
    assert (code, json.loads(stdout.splitlines()[-1])["cases_ok"]) == (0, len(written[1]))
    after = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    summaries = {name for name in after if name.startswith("summary")}
    # each part's own summary, rewritten by every run of that part; no summary of the whole
    assert summaries == {f"summary-part-{i}-of-2.{kind}" for i in (0, 1)
                         for kind in ("csv", "json")}
    assert after["summary-part-0-of-2.csv"] == before["summary-part-0-of-2.csv"]
    changed = {name.split("_")[0].split(".")[0] for name in set(after) - summaries
               if after[name] != before[name]}
    assert changed == written[1]

    # One command merges the parts: every case once.
    code, stdout, _ = run(capsys, "summary", out)
    assert code == 0 and stdout.startswith(f"{len(inputs)} cases: {len(inputs)} segmented")
    merged = (out / "summary.csv").read_text(encoding="utf-8").splitlines()[1:]
    assert sorted(line.split(",")[0] for line in merged) == sorted(p.name[:-7] for p in inputs)
