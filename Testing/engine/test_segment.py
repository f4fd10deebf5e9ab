"""segment(): geometry round trip, real CT and numpy input, progress, OOM fallback, memory guard."""

import copy
import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from pancreas_ssl_seg import CancelledError, DeviceError, ResourceError, segment
from pancreas_ssl_seg import cascade, memory, pipeline
from pancreas_ssl_seg.bundle import load_bundle

# Oblique, axis-permuted and flipped: nothing like the canonical LPS grid.
ANGLE = np.deg2rad(20)
OBLIQUE = (np.array([[0, 0, -1], [np.cos(ANGLE), np.sin(ANGLE), 0],
                     [-np.sin(ANGLE), np.cos(ANGLE), 0]]).ravel().tolist())


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def coarse_bundle(random_bundle):
    """The random bundle at coarse fine-stage spacing, so a whole CT runs in seconds."""
    bundle = load_bundle(random_bundle)
    metadata = copy.deepcopy(bundle.metadata)
    metadata["stages"]["fine"]["spacing_mm"] = [4.0, 4.0, 4.0]
    return dataclasses.replace(bundle, metadata=metadata)


def _phantom(size_xyz=(37, 29, 23), spacing=(0.9, 1.3, 2.7), direction=OBLIQUE):
    """Soft tissue (40 HU) with a bright 300 HU box at known voxels; returns image and box mask."""
    array = np.full(size_xyz[::-1], 40.0, np.float32)
    array += np.random.default_rng(0).normal(0, 5, array.shape).astype(np.float32)
    box = np.zeros(array.shape, bool)
    box[6:15, 8:20, 10:26] = True
    array[box] = 300.0
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin((-12.5, 40.0, 7.25))
    image.SetDirection(direction)
    return image, box


def _threshold_stage(bundle, stage_name, volume, device, flips=((),), mc_dropout_samples=0,
                     overlap=0.25, members=1):
    """Stand-in network: class 1 where the normalised CT is bright (the phantom's box)."""
    bright = (volume > 1.5).astype(np.float32)
    return np.stack([1.0 - bright, 0.9 * bright, 0.1 * bright]).astype(np.float32)


def _same_geometry(result, image):
    out = result.to_sitk(result.labels)
    assert out.GetSize() == image.GetSize()
    assert out.GetSpacing() == image.GetSpacing()
    assert out.GetOrigin() == image.GetOrigin()
    assert out.GetDirection() == image.GetDirection()
    for array in (result.labels, result.uncertainty, result.regions):
        assert array.shape == image.GetSize()[::-1]
    assert result.labels.dtype == np.uint8 and result.uncertainty.dtype == np.float32
    assert result.regions.dtype == np.int32


def test_geometry_round_trip_puts_labels_where_the_structure_is(monkeypatch, coarse_bundle):
    monkeypatch.setattr(cascade, "predict_stage", _threshold_stage)
    image, box = _phantom()
    bundle = dataclasses.replace(coarse_bundle, metadata=copy.deepcopy(coarse_bundle.metadata))
    bundle.metadata["stages"]["fine"]["spacing_mm"] = [1.0, 1.0, 1.5]
    result = segment(image, model=bundle, device="cpu")
    _same_geometry(result, image)
    found = result.labels == 1
    dice = 2 * np.count_nonzero(found & box) / (found.sum() + box.sum())
    assert dice > 0.85, dice
    # Entropy of (0.9, 0.1) over 3 classes inside, certain background outside.
    inside = result.uncertainty[6:15, 8:20, 10:26][2:-2, 2:-2, 2:-2]
    expected = -(0.9 * np.log(0.9) + 0.1 * np.log(0.1)) / np.log(3)
    np.testing.assert_allclose(inside, expected, atol=1e-4)
    assert result.uncertainty[~box].max() < 0.33
    report = result.report
    assert report["pancreas"]["found"] and report["device"] == "cpu"
    assert report["mode"] == "accurate"
    assert report["input"]["direction"] == pytest.approx(list(image.GetDirection()))
    voxel_ml = np.prod(image.GetSpacing()) / 1000
    assert report["pancreas"]["volume_ml"] == pytest.approx(found.sum() * voxel_ml)


def test_example_ct_path_with_random_bundle(example_ct, coarse_bundle):
    calls = []
    result = segment(example_ct, model=coarse_bundle, device="cpu",
                     progress=lambda stage, fraction, message: calls.append((stage, fraction)))
    image = sitk.ReadImage(str(example_ct))
    _same_geometry(result, image)
    fractions = [fraction for _, fraction in calls]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and calls[-1][0] == "case_done"
    report = result.report
    assert 0.0 <= result.uncertainty.min() and result.uncertainty.max() <= 1.0
    assert report["model"] == {"name": coarse_bundle.name, "version": coarse_bundle.version}
    assert report["input"]["size"] == list(image.GetSize())
    ranks = [entry["rank"] for entry in report["regions"]]
    assert ranks == list(range(1, len(ranks) + 1))
    assert int(result.regions.max()) == len(report["regions"])
    scores = [entry["score"] for entry in report["regions"]]
    assert scores == sorted(scores, reverse=True)
    assert report["timings_s"]["total"] > 0 and report["peak_memory_mb"] > 0
    assert set(report) >= {"case", "engine_version", "segments", "uncertain_region", "lesions",
                           "uncertainty", "warnings"}


def test_numpy_input_and_nothing_found(monkeypatch, coarse_bundle):
    monkeypatch.setattr(cascade, "predict_stage",
                        lambda bundle, stage, volume, device, **_: np.stack(
                            [np.ones_like(volume), np.zeros_like(volume), np.zeros_like(volume)]))
    image, _ = _phantom()
    array = sitk.GetArrayFromImage(image)
    result = segment(array, model=coarse_bundle, device="cpu", spacing_mm=image.GetSpacing(),
                     origin=image.GetOrigin(), direction=image.GetDirection())
    _same_geometry(result, image)
    assert not result.labels.any() and not result.uncertainty.any()
    assert result.report["pancreas"] == {"found": False, "volume_ml": 0.0,
                                         "definition": result.report["pancreas"]["definition"]}
    assert any("no pancreas" in warning for warning in result.report["warnings"])


def test_gpu_out_of_memory_falls_back_to_cpu(monkeypatch, coarse_bundle):
    devices = []

    def stage_on(bundle, stage_name, volume, device, **options):
        devices.append(device.type)
        if device.type == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (test)")
        return _threshold_stage(bundle, stage_name, volume, device, **options)

    monkeypatch.setattr(pipeline, "select_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(cascade, "predict_stage", stage_on)
    image, _ = _phantom()
    result = segment(image, model=coarse_bundle)
    assert devices[0] == "cuda" and devices[1:] == ["cpu", "cpu"]
    assert result.report["device"] == "cpu" and result.report["pancreas"]["found"]
    assert any("out of memory" in warning for warning in result.report["warnings"])


def test_memory_guard_refuses_before_running(monkeypatch, coarse_bundle):
    monkeypatch.setattr(memory, "available_memory_bytes", lambda: 100 << 20)
    monkeypatch.setattr(cascade, "predict_stage",
                        lambda *a, **k: pytest.fail("the networks ran despite the memory guard"))
    with pytest.raises(ResourceError, match="GiB"):
        segment(_phantom()[0], model=coarse_bundle, device="cpu")


def test_cuda_without_gpu_and_cancel(monkeypatch, coarse_bundle):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError):
        segment(_phantom()[0], model=coarse_bundle, device="cuda")

    def cancel_at_fine(stage, fraction, message):
        if stage == "fine":
            raise CancelledError("stopped by the user")

    monkeypatch.setattr(cascade, "predict_stage", _threshold_stage)
    with pytest.raises(CancelledError):
        segment(_phantom()[0], model=coarse_bundle, device="cpu", progress=cancel_at_fine)


def test_fast_mode_and_uncertainty_off(monkeypatch, coarse_bundle):
    flips_seen = {}

    def recording_stage(bundle, stage_name, volume, device, flips=((),), **options):
        flips_seen[stage_name] = [list(axes) for axes in flips]
        return _threshold_stage(bundle, stage_name, volume, device)

    monkeypatch.setattr(cascade, "predict_stage", recording_stage)
    image, _ = _phantom()
    accurate = segment(image, model=coarse_bundle, device="cpu")
    assert flips_seen["fine"] == coarse_bundle.inference["tta_flips"]
    assert flips_seen["coarse"] == [[]]
    fast = segment(image, model=coarse_bundle, device="cpu", fast=True, uncertainty=False)
    assert flips_seen["fine"] == [[]] and fast.report["mode"] == "fast"
    assert fast.report["uncertainty"]["enabled"] is False and fast.report["regions"] == []
    assert not fast.uncertainty.any() and not fast.regions.any()
    np.testing.assert_array_equal(fast.labels, accurate.labels)
    assert accurate.report["uncertainty"]["enabled"] and accurate.uncertainty.max() > 0


def test_package_exports_the_callable():
    import pancreas_ssl_seg
    assert callable(pancreas_ssl_seg.segment)
    assert pancreas_ssl_seg.SegmentationResult is pipeline.SegmentationResult
