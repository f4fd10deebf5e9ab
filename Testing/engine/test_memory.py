"""Memory of the grids a run allocates (issue 12, item 2): ``pancreas_ssl_seg.memory``.

The issue's case: a file a few hundred kB on disk whose header (400^3 voxels of 15 mm) passes
the input-size guard but would make the coarse stage resample a 6 m cube at 3 mm; before the
guard it ended with exit 1 and "unexpected RuntimeError ... Failed to allocate memory for image".
Expectations are computed here from the shipped bundle's spacings, not by the code under test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from pancreas_ssl_seg import memory
from pancreas_ssl_seg.bundle import ModelBundle, default_bundle_path, load_bundle
from pancreas_ssl_seg.errors import ResourceError
from pancreas_ssl_seg.image_io import read_image
from pancreas_ssl_seg.pipeline import segment


@pytest.fixture(scope="module")
def shipped():
    return load_bundle(default_bundle_path())


def compressed_mha(path: Path, size: int, spacing_mm: float) -> Path:
    """A valid MetaImage declaring ``size``^3 int16 voxels, zlib-compressed: tiny on disk."""
    data = zlib.compress(bytes(size ** 3 * 2), 9)
    header = (f"ObjectType = Image\nNDims = 3\nBinaryData = True\nDimSize = {size} {size} {size}\n"
              f"ElementType = MET_SHORT\nElementSpacing = {spacing_mm} {spacing_mm} {spacing_mm}\n"
              f"CompressedData = True\nCompressedDataSize = {len(data)}\n"
              "ElementDataFile = LOCAL\n")
    path.write_bytes(header.encode() + data)
    return path


def test_grids_come_from_the_bundle_spacings(shipped):
    coarse, fine = shipped.stage("coarse"), shipped.stage("fine")
    estimate = memory.estimate_run((400, 400, 400), (15.0, 15.0, 15.0), shipped)
    # 6000 mm per axis at the coarse spacing; the fine box capped at 200 mm + 2 margins
    assert estimate.coarse_grid == [round(6000 / s) for s in coarse.spacing_mm]
    box_mm = 200 + 2 * fine.margin_mm
    assert estimate.fine_grid == [round(box_mm / s) for s in fine.spacing_mm]
    classes = coarse.network["out_channels"]
    coarse_probabilities = classes * int(np.prod(estimate.coarse_grid)) * 4
    assert estimate.coarse_bytes > coarse_probabilities  # at least its class probabilities
    small = memory.estimate_run((10, 10, 10), (15.0, 15.0, 15.0), shipped)  # 150 mm: no cap
    assert small.fine_grid == [round(150 / s) for s in fine.spacing_mm]


def test_cli_refuses_a_small_file_with_enormous_grids(tmp_path, shipped):
    path = compressed_mha(tmp_path / "big-voxels.mha", 400, 15.0)
    assert path.stat().st_size < 1 << 20
    out_dir = tmp_path / "out"
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "pancreas_ssl_seg", "segment", str(path), "-o", str(out_dir),
         "--progress", "none", "--device", "cpu"], capture_output=True, text=True,
        encoding="utf-8", timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    elapsed = time.perf_counter() - started
    coarse = [round(6000 / s) for s in shipped.stage("coarse").spacing_mm]
    assert completed.returncode == 2, completed.stderr
    lines = completed.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "error: big-voxels.mha: segmenting [400, 400, 400] voxels of [15.0, 15.0, 15.0] mm needs "
        "about "), lines
    assert f"(coarse grid {coarse}, fine grid up to" in lines[0]
    assert "GiB of memory is available" in lines[0]
    assert not out_dir.exists() or not any(out_dir.iterdir())
    assert elapsed < 60  # refused from the header: 256 MB of voxels were never decompressed


def forbid_reading_voxels(monkeypatch):
    def refuse(self, *args):
        pytest.fail("voxels were read although the header should have been refused")
    monkeypatch.setattr(sitk.ImageFileReader, "Execute", refuse)
    monkeypatch.setattr(sitk.ImageSeriesReader, "Execute", refuse)


def test_guard_uses_the_headers_of_a_real_dicom_series(shared_data, monkeypatch, shipped):
    """The real series (512x512x20 of 0.98 x 0.98 x 2 mm, the slice gap read from the headers)
    with 300 MB available: refused before a voxel is read, whatever the input-size guard says."""
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 300 << 20)
    forbid_reading_voxels(monkeypatch)
    with pytest.raises(ResourceError, match=r"^ct-dicom-series: segmenting \[512, 512, 20\] "
                                            r"voxels of \[0.9766, 0.9766, 2.0\] mm needs about"):
        segment(shared_data / "ct-dicom-series", model=shipped, device="cpu")


@pytest.mark.parametrize("available_mib, refused", [(1, True), (2, False)])
def test_reading_needs_the_stored_voxels_and_their_float32_copy(tmp_path, monkeypatch,
                                                                available_mib, refused):
    """No bundle, no grid check: 64^3 int16 voxels need 64^3 x (2 + 4) B = 1.5 MiB to read."""
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: available_mib << 20)
    path = compressed_mha(tmp_path / "small.mha", 64, 1.0)
    if refused:
        forbid_reading_voxels(monkeypatch)
        with pytest.raises(ResourceError, match=r"^small.mha: declares \[64, 64, 64\] voxels, "
                                                r"which need about 0.0 GiB to read but only "):
            read_image(path)
    else:
        assert read_image(path).GetSize() == (64, 64, 64)


def test_guard_on_arrays_runs_no_network(monkeypatch, random_bundle):
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 300 << 20)
    loaded = []
    monkeypatch.setattr(ModelBundle, "load_network",
                        lambda self, *a, **k: loaded.append(a) or pytest.fail("network loaded"))
    volume = np.random.default_rng(0).normal(0, 300, (40, 64, 64)).astype(np.float32)
    with pytest.raises(ResourceError, match=r"^input array: segmenting \[64, 64, 40\] voxels"):
        segment(volume, model=random_bundle, spacing_mm=(1, 1, 1), device="cpu")
    assert loaded == []


def test_fine_box_is_checked_before_it_is_resampled(example_ct, monkeypatch, random_bundle):
    """Memory enough at the header check, gone when the coarse stage has found its box: the run
    stops with a ResourceError before the fine network is loaded."""
    stages = []
    # Plenty while the input is read and checked; 1 MiB once the coarse network is loaded.
    monkeypatch.setattr(memory, "available_memory_bytes",
                        lambda: 1 << 20 if stages else 64 << 30)
    real_load = ModelBundle.load_network
    monkeypatch.setattr(ModelBundle, "load_network",
                        lambda self, stage, *a, **k: stages.append(stage)
                        or real_load(self, stage, *a, **k))
    with pytest.raises(ResourceError, match=r"^the region the coarse stage found \(\d+ x \d+ x \d+ "
                                            r"mm\) needs about .* at the fine stage's grid"):
        segment(example_ct, model=random_bundle, device="cpu", fast=True)
    assert stages == ["coarse"]


def test_estimate_bounds_the_peak_memory_of_a_real_run(shared_data, shipped, tmp_path):
    """The shipped model, accurate mode, on the real DICOM series in a fresh process: its peak
    resident memory stays below the estimate made from the headers."""
    series = shared_data / "ct-dicom-series"
    # VmHWM, not ru_maxrss: the latter keeps the (large) pytest parent's peak across exec
    code = ("import sys; from pancreas_ssl_seg.cli import main; code = main(sys.argv[1:]); "
            "print([l for l in open('/proc/self/status') if l.startswith('VmHWM')][0]); "
            "sys.exit(code)")
    completed = subprocess.run(
        [sys.executable, "-c", code, "segment", str(series), "-o", str(tmp_path / "out"),
         "--progress", "none", "--device", "cpu"], capture_output=True, text=True,
        encoding="utf-8", timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert completed.returncode == 0, completed.stderr
    peak = int(completed.stdout.split()[-2]) * 1024  # "VmHWM: <n> kB"
    estimate = memory.estimate_run((512, 512, 20), (0.9765625, 0.9765625, 2.0), shipped)
    print(f"DICOM series: peak {peak / 2**20:.0f} MiB, estimate "
          f"{estimate.total_bytes / 2**20:.0f} MiB")
    assert peak < estimate.total_bytes
