"""The engine's corrections writer (issue 12, item 5): the one writer of the corrections folder,
used by the Slicer module and read by training, on a crop of the real CT and its reference labels.

Atomicity is checked with a real writer process killed (SIGKILL) at random moments: the seed is
new each run and printed, so a failure reproduces with ``CORRECTIONS_KILL_SEED=<seed>``.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from pancreas_ssl_seg import corrections
from pancreas_ssl_seg.corrections import read_correction_record, write_correction_case
from pancreas_ssl_seg.errors import InputError

ENGINE_DIR = Path(corrections.__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def case(pancreas_crop):
    """The crop of the 3 mm CT around its pancreas; reference label 7 → 1."""
    crop, reference = pancreas_crop
    return crop, sitk.Cast(reference == 7, sitk.sitkUInt8)


def folder_listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_round_trip_on_the_real_grid(case, tmp_path):
    image, labels = case
    folder = write_correction_case(tmp_path, "case-01", image, labels, "pancreas-ssl", "1.0.0",
                                   ["Pancreas"])
    assert folder == tmp_path / "case-01"
    assert folder_listing(tmp_path) == ["case-01", "case-01/correction.json",
                                        "case-01/image.nii.gz", "case-01/labels.nii.gz"]
    written = sitk.ReadImage(str(folder / "labels.nii.gz"))
    assert written.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(written),
                                  sitk.GetArrayViewFromImage(labels))
    ct = sitk.ReadImage(str(folder / "image.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(ct), sitk.GetArrayViewFromImage(image))
    for volume in (ct, written):
        assert np.allclose(volume.GetOrigin(), image.GetOrigin(), atol=1e-4)
        assert np.allclose(volume.GetDirection(), image.GetDirection())
    record = read_correction_record(folder)
    assert record["model"] == {"name": "pancreas-ssl", "version": "1.0.0"}
    assert record["edited_segments"] == ["Pancreas"] and record["source"] == "corrections"


def shifted(image: sitk.Image, **change) -> sitk.Image:
    moved = sitk.Image(image)
    if "origin" in change:
        moved.SetOrigin([o + d for o, d in zip(image.GetOrigin(), change["origin"])])
    if "spacing" in change:
        moved.SetSpacing(change["spacing"])
    return moved


def relabelled(labels: sitk.Image, value, pixel=sitk.sitkFloat32) -> sitk.Image:
    array = sitk.GetArrayFromImage(labels).astype(np.float64)
    array[0, 0, 0] = value
    out = sitk.Cast(sitk.GetImageFromArray(array), pixel)
    out.CopyInformation(labels)
    return out


@pytest.mark.parametrize("make, message", [
    (lambda im, lb: (im, shifted(lb, origin=(5, 0, 0))), "labels are not on the image grid"),
    (lambda im, lb: (im, shifted(lb, spacing=(3.0, 3.0, 2.5))), "labels are not on the image grid"),
    (lambda im, lb: (im, lb[:, :, :20]), r"labels size \[40, 40, 20\]"),
    (lambda im, lb: (im, relabelled(lb, 3, sitk.sitkUInt8)), r"value\(s\) 3; expected only 0"),
    (lambda im, lb: (im, relabelled(lb, 0.5)), r"value\(s\) 0.5; expected only 0"),
    (lambda im, lb: (im, relabelled(lb, -1, sitk.sitkInt16)), r"value\(s\) -1;"),
    (lambda im, lb: (im[:, :, 0], lb[:, :, 0]), "image is 2-D"),
    (lambda im, lb: (im, sitk.GetArrayFromImage(lb)), "labels is a ndarray"),
], ids=["origin", "spacing", "size", "value_3", "fraction", "negative", "2d", "array"])
def test_checks_refuse_before_writing_and_keep_the_old_case(case, tmp_path, make, message):
    image, labels = case
    write_correction_case(tmp_path, "c", image, labels, "m", "1", [])
    before = {p: p.read_bytes() for p in (tmp_path / "c").iterdir()}
    bad_image, bad_labels = make(image, labels)
    with pytest.raises(InputError, match=f"^{re.escape(str(tmp_path / 'c'))}: .*{message}"):
        write_correction_case(tmp_path, "c", bad_image, bad_labels, "m", "2", [])
    assert {p: p.read_bytes() for p in (tmp_path / "c").iterdir()} == before
    assert folder_listing(tmp_path) == ["c", "c/correction.json", "c/image.nii.gz",
                                        "c/labels.nii.gz"]


@pytest.mark.parametrize("name", ["../escape", ".hidden", "", "a/b", "a b", None])
def test_case_names_that_are_not_folder_names(case, tmp_path, name):
    image, labels = case
    with pytest.raises(InputError, match="folder name"):
        write_correction_case(tmp_path / "root", name, image, labels, "m", "1", [])
    assert not (tmp_path / "root").exists()


def test_a_failed_write_keeps_the_previous_case_and_leaves_no_temporaries(case, tmp_path,
                                                                           monkeypatch):
    """The disk fills while the labels are written (ITK raises RuntimeError)."""
    image, labels = case
    write_correction_case(tmp_path, "c", image, labels, "m", "1", [])
    before = {p.name: p.read_bytes() for p in (tmp_path / "c").iterdir()}
    real_write, calls = sitk.WriteImage, []

    def write_image(image, path, *args, **kwargs):
        calls.append(path)
        if path.endswith("labels.nii.gz"):
            raise RuntimeError("ITK ERROR: ... \nNo space left on device")
        return real_write(image, path, *args, **kwargs)

    monkeypatch.setattr(sitk, "WriteImage", write_image)
    with pytest.raises(OSError, match=rf"^{tmp_path / 'c'}: could not write the corrected case "
                                      r"\(No space left on device\); nothing of it was kept, "
                                      "the previous one is unchanged"):
        write_correction_case(tmp_path, "c", image, labels, "m", "2", [])
    assert len(calls) == 2
    assert {p.name: p.read_bytes() for p in (tmp_path / "c").iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["c"]


WRITER = textwrap.dedent("""
    import sys
    sys.modules["pancreas_ssl_training"] = None  # the writer needs no training package
    sys.modules["torch"] = None                  # nor torch
    import numpy as np, SimpleITK as sitk
    from pancreas_ssl_seg.corrections import write_correction_case
    image, labels = sitk.ReadImage(sys.argv[2]), sitk.ReadImage(sys.argv[3])
    lesion = sitk.GetArrayFromImage(labels)
    lesion[10:14, 18:22, 18:22] = 2
    with_lesion = sitk.GetImageFromArray(lesion)
    with_lesion.CopyInformation(labels)
    print("ready", flush=True)
    for n in range(10 ** 6):
        version = "B" if n % 2 else "A"
        write_correction_case(sys.argv[1], "case", image, with_lesion if n % 2 else labels,
                              "kill-test", version, [])
""")


def check_case(folder: Path) -> str:
    """The complete case's version; its labels must be those of that version (no mixing)."""
    assert sorted(p.name for p in folder.iterdir()) == sorted(corrections.CASE_FILES)
    version = read_correction_record(folder)["model"]["version"]
    # A copy, not a view: a view of the temporary image read here would outlive its buffer.
    has_lesion = bool((sitk.GetArrayFromImage(
        sitk.ReadImage(str(folder / "labels.nii.gz"))) == 2).any())
    assert has_lesion == (version == "B"), (folder, version)
    sitk.ReadImage(str(folder / "image.nii.gz"))
    return version


def test_writer_killed_at_random_moments_never_leaves_half_a_case(case, tmp_path):
    seed = int(os.environ.get("CORRECTIONS_KILL_SEED", random.SystemRandom().randrange(10**6)))
    print(f"corrections kill test: CORRECTIONS_KILL_SEED={seed}")
    rng = random.Random(seed)
    image, labels = case
    sitk.WriteImage(image, str(tmp_path / "image.nrrd"))
    sitk.WriteImage(labels, str(tmp_path / "labels.nrrd"))
    root = tmp_path / "corrections"
    env = {**os.environ, "PYTHONPATH": str(ENGINE_DIR)}
    seen = set()
    for kill in range(6):
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), str(tmp_path / "image.nrrd"),
             str(tmp_path / "labels.nrrd")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, encoding="utf-8", env=env)
        assert writer.stdout.readline().strip() == "ready", writer.stderr.read()
        time.sleep(rng.uniform(0.05, 0.6))
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
        assert writer.returncode == -signal.SIGKILL, writer.stderr.read()
        target = root / "case"
        if target.exists():
            seen.add(check_case(target))
        else:  # killed between the two renames: the old case waits under its .replaced name
            kept = [p for p in root.iterdir() if ".replaced-" in p.name]
            assert len(kept) == 1, (seed, kill, sorted(p.name for p in root.iterdir()))
            check_case(kept[0])
    # The next write (this process) puts things right: one complete case, no temporaries.
    write_correction_case(root, "case", image, labels, "kill-test", "A", [])
    assert [p.name for p in root.iterdir()] == ["case"]
    assert check_case(root / "case") == "A"
    assert seen, f"no kill left a case folder (seed {seed})"


def test_a_case_left_under_its_replaced_name_is_restored(case, tmp_path):
    """The moment between the two renames, made by hand: the writer (pid 999999999, gone) had
    moved the old case aside. The next write of another case leaves it alone; the next write of
    this case puts it back and then replaces it."""
    image, labels = case
    write_correction_case(tmp_path, "c", image, labels, "m", "old", [])
    aside = tmp_path / ".c.replaced-999999999-abcdef12"
    (tmp_path / "c").rename(aside)
    write_correction_case(tmp_path, "other", image, labels, "m", "1", [])
    assert aside.is_dir()
    corrections._clean_up_after_dead_writers(tmp_path, "c")
    assert read_correction_record(tmp_path / "c")["model"]["version"] == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "other"]


def test_needs_neither_training_nor_torch(case, tmp_path):
    """In a process where neither package can be imported, the writer writes and refuses as
    usual, and training reads what it wrote (in this process)."""
    image, labels = case
    sitk.WriteImage(image, str(tmp_path / "image.nrrd"))
    code = textwrap.dedent("""
        import json, sys
        sys.modules["pancreas_ssl_training"] = None
        sys.modules["torch"] = None
        import SimpleITK as sitk
        from pancreas_ssl_seg.corrections import write_correction_case
        from pancreas_ssl_seg.errors import InputError
        image = sitk.ReadImage(sys.argv[2])
        labels = sitk.Cast(image > 0, sitk.sitkUInt8)
        write_correction_case(sys.argv[1], "ok", image, labels, "m", "1", ["Pancreas"])
        try:
            write_correction_case(sys.argv[1], "bad", image, labels * 3, "m", "1", [])
        except InputError as error:
            print(json.dumps(str(error)))
    """)
    completed = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "corr"), str(tmp_path / "image.nrrd")],
        capture_output=True, text=True, encoding="utf-8", timeout=120,
        env={**os.environ, "PYTHONPATH": str(ENGINE_DIR)})
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout).endswith(
        "bad: labels hold the value(s) 3; expected only "
        "0 (background), 1 (pancreas), 2 (pancreatic lesion)")
    from pancreas_ssl_training.data.volumes import read_corrections

    cases = read_corrections(tmp_path / "corr")
    assert [c.case for c in cases] == ["ok"]
