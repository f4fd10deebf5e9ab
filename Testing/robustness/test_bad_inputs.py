"""Bad-input suite (issue 6, items 1 and 5): malformed and unusual CT inputs, all generated here.

One table (``EXPECTED``) says for every input of ``bad_inputs.INPUTS`` what must happen:
``Refused(error, message)``: the Python API raises that engine exception naming the file, the CLI
exits 2 with one ``error: <file>: <problem>`` line and writes nothing; ``Runs(warning)``: the CLI
exits 0, writes all six outputs, and the report carries the warning (``None``: no warning needed).
Runs use tiny random-weight bundles, so they test the engine's handling, not the model's accuracy.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from bad_inputs import INPUTS, metaimage
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pancreas_ssl_seg import cascade, cli, cli_exit, memory
from pancreas_ssl_seg.errors import InputError, PancreasSSLSegError, ResourceError
from pancreas_ssl_seg.image_io import as_image
from pancreas_ssl_seg.case_files import OUTPUT_SUFFIXES
from pancreas_ssl_seg.pipeline import segment


@dataclass(frozen=True)
class Refused:
    error: type[PancreasSSLSegError]
    message: str  # regular expression the message must match after the file's name


@dataclass(frozen=True)
class Runs:
    warning: str | None  # regular expression one report warning must match


EXPECTED = {
    # file level
    "missing_file": Refused(InputError, "no such file"),
    "empty_file": Refused(InputError, "cannot be read as an image"),
    "text_named_nii_gz": Refused(InputError, "cannot be read as an image"),
    "truncated_gzip": Refused(InputError, "truncated or corrupt"),
    "truncated_raw_nifti": Refused(InputError, r"declares \[32, 32, 10\] voxels .* truncated"),
    "unsupported_extension": Refused(InputError, "unsupported file type"),
    "nifti_with_nrrd_extension": Refused(InputError, "cannot be read as an image"),
    "directory_named_like_file": Refused(InputError, "folder is empty; expected a DICOM series"),
    "folder_without_dicom": Refused(InputError, "no DICOM series found"),
    "unreadable_permissions": Refused(InputError, "permission denied"),
    "symlink_loop": Refused(InputError, "symbolic links"),
    "broken_symlink": Refused(InputError, "symbolic link leads nowhere"),
    "fifo": Refused(InputError, "not a regular file"),
    "unreadable_folder": Refused(InputError, "permission denied"),
    "mhd_data_file_missing": Refused(InputError, "voxel data file no-data.raw is missing"),
    "mhd_data_file_short": Refused(InputError, r"\(20480 bytes\) but the file holds only 5000"),
    # header level
    "zero_spacing_nifti": Refused(InputError, r"spacing \(pixdim\) \[2.0, 0.0, 4.0\]"),
    "zero_spacing_nrrd": Refused(InputError, r"spacing \[1.0, 0.0, 1.0\] mm; expected positive"),
    "negative_spacing_nifti": Refused(InputError, r"spacing \(pixdim\) \[2.0, -2.0, 4.0\]"),
    "non_orthogonal_direction": Refused(InputError, "not orthonormal"),
    "huge_size_raw_data": Refused(InputError, r"declares \[4000, 4000, 4000\] .* holds only"),
    "huge_size_compressed": Refused(ResourceError, r"declares \[4000, 4000, 4000\].*GiB"),
    "huge_size_nifti_gz": Refused(ResourceError, r"declares \[4000, 4000, 4000\].*GiB"),
    # one axial slice: the 2-D stages of these test bundles segment it (3-D stages refuse it:
    # test_cascade.py)
    "image_2d": Runs(r"field of view 64 x 64 x 1 mm"),
    "single_slice_3d": Runs(r"field of view 64 x 64 x 4 mm"),
    "image_4d": Refused(InputError, "is 4-D"),
    "rgb": Refused(InputError, "3 components per voxel"),
    "complex": Refused(InputError, "2 components per voxel"),
    "metaimage_negative_ndims": Refused(InputError, "NDims = -5; expected 1 to 5"),
    "nifti_infinite_sform": Refused(InputError, "infinite or impossibly large"),
    # DICOM level: refused rather than interpolated (see dicom_folder's docstring)
    "dicom_mixed_series": Runs(r"holds 2 DICOM series; read the largest CT series .*\(10 slices\)"),
    "dicom_ct_and_larger_mr": Runs(r"holds 2 DICOM series; read the largest CT series .*\.301 "),
    "dicom_missing_slice": Refused(InputError, r"not uniformly spaced \(gaps 4.00..8.00 mm\)"),
    "dicom_inconsistent_spacing": Refused(InputError, "not uniformly spaced"),
    "dicom_duplicate_position": Refused(InputError, r"not uniformly spaced \(gaps 0.00"),
    "dicom_localizer_in_series": Runs("left out 1 localizer"),
    "dicom_localizer_only": Refused(InputError, "no readable slices, only localizer"),
    "dicom_gantry_tilt": Refused(InputError, "gantry tilt about 15.0 degrees"),
    "dicom_corrupt_slice": Refused(InputError, "missing, duplicated or corrupt"),
    "dicom_multiframe": Runs(None),
    # content level
    "constant_volume": Refused(InputError, "every voxel has the value 40"),
    "nan_voxel": Runs(r"1 voxel\(s\) are not finite numbers \(NaN 1\) on 1 of 10 slice\(s\) "
                      r"\(index k = 4\); they were set to -1024 HU"),
    "inf_voxel": Runs(r"1 voxel\(s\) are not finite numbers \(\+inf 1\)"),
    "mr_like_intensities": Runs("not like CT in Hounsfield units"),
    "ct_without_pancreas": Runs("no pancreas was found"),
    "very_small_fov": Runs(r"field of view 24 x 24 x 24 mm"),
}
REFUSED = sorted(name for name, expected in EXPECTED.items() if isinstance(expected, Refused))
RUNS = sorted(name for name, expected in EXPECTED.items() if isinstance(expected, Runs))
# A process as root reads any file whatever its mode: there the CLI is run in-process with
# os.access emulating an ordinary user (the file's owner), see ``as_ordinary_user``.
AS_ROOT = os.geteuid() == 0


def test_every_generated_input_has_an_expectation():
    assert set(EXPECTED) == set(INPUTS)
    assert len(INPUTS) >= 30
    assert {level for level, _ in INPUTS.values()} == {"file", "header", "dicom", "content"}


@pytest.fixture
def as_ordinary_user(monkeypatch):
    """Mode bits decide readability, as they do for a user who is not root."""
    if AS_ROOT:
        def access(path, mode, **kwargs):
            bits = os.stat(path).st_mode
            wanted = [(os.R_OK, stat.S_IRUSR), (os.W_OK, stat.S_IWUSR), (os.X_OK, stat.S_IXUSR)]
            return all(bits & flag for requested, flag in wanted if mode & requested)
        monkeypatch.setattr(os, "access", access)


@pytest.fixture(scope="module")
def finds_nothing_bundle(tmp_path_factory) -> Path:
    """Tiny random networks whose background logit dominates: a model that sees no pancreas."""
    import torch
    from conftest import tiny_metadata

    from pancreas_ssl_seg.bundle import save_bundle
    from pancreas_ssl_seg.networks import build_network

    torch.manual_seed(0)
    metadata = tiny_metadata(name="finds-nothing")
    weights = {}
    for stage in ("coarse", "fine"):
        state = build_network(metadata["stages"][stage]["network"]).state_dict()
        state["seg_head.bias"] = torch.tensor([50.0, 0.0, 0.0])
        weights[stage] = state
    return save_bundle(tmp_path_factory.mktemp("bundles") / "finds-nothing", metadata, weights,
                       "# Test bundle that never finds a pancreas\nNot a model.\n")


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


@pytest.mark.parametrize("name", REFUSED)
def test_refused_input(name, tmp_path, capsys, example_ct, random_bundle, as_ordinary_user):
    expected = EXPECTED[name]
    (tmp_path / "in").mkdir()
    path = INPUTS[name][1](tmp_path / "in", example_ct)

    with pytest.raises(expected.error) as raised:
        segment(path, model=random_bundle, device="cpu", fast=True)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith((path.name, str(path))), message
    assert re.search(expected.message, message), message

    out_dir = tmp_path / "out"
    code, out, err = run_cli(capsys, "segment", path, "-o", out_dir, "--model", random_bundle,
                             "--device", "cpu", "--progress", "json")
    assert code == cli_exit.EXIT_BAD_INPUT
    # the same message, but for the free memory it quotes (other processes change it)
    free = re.compile(r"only [0-9.]+ GiB of memory")
    assert free.sub("only * GiB of memory", err) == free.sub("only * GiB of memory",
                                                          f"error: {message}\n")
    done = json.loads(out.splitlines()[-1])
    assert (done["stage"], done["status"], done["cases_failed"]) == ("done", "error", 1)
    assert files_in(out_dir) == []


@pytest.mark.parametrize("name", RUNS)
def test_input_that_runs_with_a_warning(name, tmp_path, capsys, example_ct, random_bundle,
                                        finds_nothing_bundle):
    expected = EXPECTED[name]
    (tmp_path / "in").mkdir()
    path = INPUTS[name][1](tmp_path / "in", example_ct)
    bundle = finds_nothing_bundle if name == "ct_without_pancreas" else random_bundle
    out_dir = tmp_path / "out"
    code, _, err = run_cli(capsys, "segment", path, "-o", out_dir, "--model", bundle,
                           "--device", "cpu", "--fast", "--progress", "none")
    case = path.name.split(".")[0]
    report = json.loads((out_dir / f"{case}_report.json").read_text(encoding="utf-8"))
    # These synthetic series lack what a DICOM SEG must reference: the one thing said on stderr.
    # The multi-frame file is an enhanced CT with GDCM's UIDs: it gets its SEG.
    seg_written = name == "dicom_multiframe"
    seg_missing = [w for w in report["warnings"] if w.startswith("DICOM SEG not written: ")]
    assert len(seg_missing) == (name.startswith("dicom_") and not seg_written), report["warnings"]
    assert (code, err) == (cli_exit.EXIT_OK,
                           "".join(f"warning: {case}: {w}\n" for w in seg_missing))
    assert files_in(out_dir) == sorted([case + suffix for suffix in OUTPUT_SUFFIXES.values()]
                                       + [f"{case}_seg.dcm"] * seg_written)
    if expected.warning is not None:
        assert any(re.search(expected.warning, w) for w in report["warnings"]), report["warnings"]
    labels = sitk.ReadImage(str(out_dir / f"{case}_labels.nii.gz"))
    assert labels.GetSize() == tuple(report["input"]["size"])
    if name == "ct_without_pancreas":
        assert not sitk.GetArrayViewFromImage(labels).any()
        assert report["pancreas"]["found"] is False


def sheared_image() -> sitk.Image:
    image = sitk.GetImageFromArray(np.zeros((10, 32, 32), np.float32))
    image.SetDirection((1.0, 0.5, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    return image


@pytest.mark.parametrize("make, message", [
    (lambda: sitk.GetImageFromArray(np.ones((10, 32, 32), np.complex64)), "complex voxel values"),
    (sheared_image, "not orthonormal"),
    (lambda: sitk.GetImageFromArray(np.zeros((10, 32, 32, 3), np.uint8), isVector=True),
     "3 components"),
], ids=["complex_sitk_image", "sheared_sitk_image", "rgb_sitk_image"])
def test_in_memory_images_are_refused_with_input_error(make, message, random_bundle):
    with pytest.raises(InputError, match=f"^input image: .*{message}"):
        segment(make(), model=random_bundle, device="cpu")


def test_cli_subprocess_batch_of_bad_inputs_one_line_each(tmp_path, example_ct, random_bundle):
    """A real process: every refused input in one batch gives exactly one line on stderr (no
    traceback, no ITK/GDCM console output), exit 2 and an empty output folder."""
    paths = []
    for name in REFUSED:
        if name in ("unreadable_permissions", "unreadable_folder") and AS_ROOT:
            continue  # root reads it; covered in-process by test_refused_input
        (tmp_path / name).mkdir()
        paths.append(INPUTS[name][1](tmp_path / name, example_ct))
    out_dir = tmp_path / "out"
    completed = subprocess.run(
        [sys.executable, "-m", "pancreas_ssl_seg", "segment", *map(str, paths),
         "-o", str(out_dir), "--model", str(random_bundle), "--device", "cpu",
         "--progress", "none"], capture_output=True, text=True, timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"}, encoding="utf-8")
    lines = completed.stderr.splitlines()
    assert completed.returncode == cli_exit.EXIT_BAD_INPUT, completed.stderr
    assert "Traceback" not in completed.stderr and completed.stdout == ""
    assert len(lines) == len(paths), completed.stderr
    for line, path in zip(lines, paths):
        assert line.startswith("error: ") and path.name in line, (line, path)
    assert files_in(out_dir) == []


def test_huge_declared_volume_is_refused_before_allocation(tmp_path):
    import resource

    path = INPUTS["huge_size_nifti_gz"][1](tmp_path, tmp_path)
    peak_before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(ResourceError, match=r"^huge.nii.gz: declares \[4000, 4000, 4000\]"):
        segment(path)  # refused before the (default) bundle is even looked for
    assert time.perf_counter() - started < 2.0
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before_kib) / 1024
    assert grown_mib < 100, f"peak memory grew by {grown_mib:.0f} MiB"


def forbid_reading_voxels(monkeypatch):
    def refuse(self, *args):
        pytest.fail("voxels were read although the memory guard should have refused")
    monkeypatch.setattr(sitk.ImageFileReader, "Execute", refuse)
    monkeypatch.setattr(sitk.ImageSeriesReader, "Execute", refuse)


def test_memory_guard_uses_declared_size_of_files_and_dicom(tmp_path, capsys, monkeypatch,
                                                            random_bundle):
    """A volume the reader could hold but the whole run could not: ``memory.GridGuard`` refuses
    it from the header (64x64x64 voxels x 24 B + 600 MB + the stage grids > 100 MB), voxels
    unread."""
    import gzip as gz

    data = gz.compress(bytes(64 ** 3 * 2))
    mha = metaimage(tmp_path, "big.mha", "DimSize = 64 64 64\nElementType = MET_SHORT\n"
                    f"ElementSpacing = 1 1 1\nCompressedData = True\nCompressedDataSize = "
                    f"{len(data)}\n", data)
    dicom = INPUTS["dicom_mixed_series"][1](tmp_path, tmp_path)
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 100 << 20)
    forbid_reading_voxels(monkeypatch)
    with pytest.raises(ResourceError, match=r"^big.mha: segmenting \[64, 64, 64\] voxels of "
                                            r"\[1.0, 1.0, 1.0\] mm needs about 0.6 GiB"):
        segment(mha, model=random_bundle, device="cpu")
    with pytest.raises(ResourceError, match=r"^mixed-series: segmenting \[32, 32, 10\] voxels"):
        segment(dicom, model=random_bundle, device="cpu")
    code, _, err = run_cli(capsys, "segment", mha, "-o", tmp_path / "out", "--model",
                           random_bundle, "--progress", "none")
    assert code == cli_exit.EXIT_BAD_INPUT
    assert err.startswith("error: big.mha: segmenting [64, 64, 64] voxels")
    assert len(err.splitlines()) == 1 and files_in(tmp_path / "out") == []


def test_memory_guard_on_arrays_runs_no_network(monkeypatch, random_bundle):
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 100 << 20)
    monkeypatch.setattr(cascade, "predict_stage",
                        lambda *a, **k: pytest.fail("the networks ran despite the memory guard"))
    with pytest.raises(ResourceError, match=r"^input array: segmenting \[32, 32, 10\] voxels"):
        segment(np.zeros((10, 32, 32), np.float32) + np.arange(32), model=random_bundle,
                spacing_mm=(1, 1, 1))


ELEMENT_TYPES = {"MET_UCHAR": ("uchar", np.uint8), "MET_SHORT": ("short", np.int16),
                 "MET_FLOAT": ("float", np.float32)}
DECLARED_EXAMPLES = 60


@settings(max_examples=DECLARED_EXAMPLES, deadline=3000, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.tuples(*[st.integers(2, 12)] * 3), element=st.sampled_from(sorted(ELEMENT_TYPES)),
       data_fraction=st.floats(0.0, 1.2), suffix=st.sampled_from([".mha", ".nrrd", ".nii"]))
def test_declared_size_against_data_property(size, element, data_fraction, suffix, tmp_path_factory,
                                             capfd):
    """Any raw header/data mismatch: read only when every declared voxel is there, otherwise an
    ``InputError`` naming the shortfall; never another exception, never console output."""
    nrrd_type, dtype = ELEMENT_TYPES[element]
    voxels = np.random.default_rng(0).integers(0, 100, int(np.prod(size) * 1.2) + 1).astype(dtype)
    needed = int(np.prod(size)) * voxels.itemsize
    data = voxels.tobytes()[:int(needed * data_fraction)]
    folder = tmp_path_factory.mktemp("declared")
    if suffix == ".mha":
        path = metaimage(folder, "x.mha", f"DimSize = {' '.join(map(str, size))}\nElementType = "
                         f"{element}\nElementSpacing = 1 1 1\n", data)
    elif suffix == ".nrrd":
        path = folder / "x.nrrd"
        path.write_bytes(f"NRRD0004\ntype: {nrrd_type}\ndimension: 3\nsizes: "
                         f"{' '.join(map(str, size))}\nencoding: raw\nendian: little\n\n".encode()
                         + data)
    else:
        full = sitk.GetImageFromArray(np.zeros(size[::-1], dtype))
        sitk.WriteImage(full, str(folder / "full.nii"))
        header = (folder / "full.nii").read_bytes()[:352]
        path = folder / "x.nii"
        path.write_bytes(header + data)
    try:
        image = as_image(path)
    except InputError as error:
        assert len(data) < needed or "every voxel" in str(error), str(error)
        if len(data) < needed:
            assert f"holds only {len(data)} bytes" in str(error)
    else:
        assert len(data) >= needed and image.GetSize() == size
    assert capfd.readouterr().err == ""
