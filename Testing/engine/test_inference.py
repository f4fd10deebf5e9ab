"""Stage inference: device choice, sliding window shapes, flip TTA in one batch, MC dropout."""

import numpy as np
import pytest
import torch

from conftest import write_random_bundle
from pancreas_ssl_seg.bundle import load_bundle
from pancreas_ssl_seg import inference
from pancreas_ssl_seg.errors import DeviceError
from pancreas_ssl_seg.inference import predict_stage, select_device


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bundle_3d(tmp_path_factory):
    return load_bundle(write_random_bundle(tmp_path_factory.mktemp("b3") / "tiny3d",
                                           coarse_dims=3, fine_dims=3))


def test_select_device(monkeypatch):
    assert select_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto") == torch.device("cpu")
    with pytest.raises(DeviceError, match="cuda"):
        select_device("cuda")
    with pytest.raises(DeviceError, match="unknown device"):
        select_device("tpu")


@pytest.mark.parametrize("flips", [[[2]], [[0]]])
def test_2d_flip_tta_equals_mean_of_separate_passes(random_bundle, flips, monkeypatch):
    monkeypatch.setattr(inference, "SLICES_PER_PASS", 4)  # 6 slices: chunks of 4 and 2
    bundle = load_bundle(random_bundle)
    volume = np.random.default_rng(0).normal(size=(3, 37, 70)).astype(np.float32)
    cpu = torch.device("cpu")
    batched = predict_stage(bundle, "fine", volume, cpu, flips=[[]] + flips)
    plain = predict_stage(bundle, "fine", volume, cpu, flips=[[]])
    flipped = predict_stage(bundle, "fine", np.flip(volume, axis=flips[0]).copy(), cpu, flips=[[]])
    expected = 0.5 * (plain + np.flip(flipped, axis=[a + 1 for a in flips[0]]))
    assert batched.shape == (3, 3, 37, 70) and batched.dtype == np.float32
    np.testing.assert_allclose(batched, expected, atol=1e-5)
    np.testing.assert_allclose(batched.sum(axis=0), 1.0, atol=1e-5)
    # A z flip only reorders the slices a 2-D network sees; in-plane flips change its output.
    assert np.allclose(plain, batched, atol=1e-5) == (flips == [[0]])


def test_whole_slice_roi_covers_the_slice_in_network_sized_steps():
    assert inference.whole_slice_roi((133, 97), (128, 128), 8) == [136, 128]
    assert inference.whole_slice_roi((300, 20), (64, 64), 16) == [304, 64]


def test_2d_stage_runs_one_whole_slice_window_per_slice(random_bundle, monkeypatch):
    bundle = load_bundle(random_bundle)
    network = bundle.load_network("fine")
    seen = []

    def recording_network(*args, **kwargs):
        def forward(x):
            seen.append(tuple(x.shape))
            return network(x)
        return forward

    monkeypatch.setattr(inference.ModelBundle, "load_network", recording_network)
    patch = bundle.stage("fine").patch_size
    volume = np.zeros((5, patch[0] + 9, patch[1] * 3), np.float32)  # taller and 3x wider
    predict_stage(bundle, "fine", volume, torch.device("cpu"))
    divisor = int(np.prod(bundle.stage("fine").network["strides"]))
    roi = inference.whole_slice_roi(volume.shape[1:], patch, divisor)
    assert {shape[2:] for shape in seen} == {tuple(roi)}
    assert sum(shape[0] for shape in seen) == 5  # one window per slice, no overlap


def test_3d_stage_and_mc_dropout(bundle_3d):
    volume = np.random.default_rng(1).normal(size=(12, 21, 27)).astype(np.float32)
    cpu = torch.device("cpu")
    plain = predict_stage(bundle_3d, "coarse", volume, cpu)
    assert plain.shape == (3, 12, 21, 27)
    np.testing.assert_allclose(plain.sum(axis=0), 1.0, atol=1e-5)
    np.testing.assert_allclose(predict_stage(bundle_3d, "coarse", volume, cpu), plain, atol=1e-6)
    torch.manual_seed(0)
    sampled = predict_stage(bundle_3d, "coarse", volume, cpu, mc_dropout_samples=3)
    np.testing.assert_allclose(sampled.sum(axis=0), 1.0, atol=1e-5)
    assert not np.allclose(sampled, plain, atol=1e-4)  # dropout was active
