"""Shared fixtures: real data from ../shared/data, and a small random-weight model bundle."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("PANCREAS_SSL_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

# Small networks: fast enough for CI, same code paths as the shipped model.
TINY_2D = {"spatial_dims": 2, "in_channels": 1, "out_channels": 3,
           "channels": [8, 16, 32], "strides": [2, 2], "dropout": 0.1, "heads": []}


def tiny_metadata(name: str = "tiny-random", coarse_dims: int = 2, fine_dims: int = 2) -> dict:
    from pancreas_ssl_seg.bundle_metadata import default_metadata

    def stage(dims: int, spacing: list[float], patch: int) -> dict:
        return {"network": {**TINY_2D, "spatial_dims": dims}, "spacing_mm": spacing,
                "patch_size": [patch] * dims}

    fine = {**stage(fine_dims, [1.5, 1.5, 3.0], 64), "margin_mm": 15.0}
    return default_metadata(name=name, version="0.0.1",
                            coarse=stage(coarse_dims, [6.0, 6.0, 6.0], 64), fine=fine,
                            description="random weights, for tests only")


def write_random_bundle(out_dir: Path, seed: int = 0, **metadata_kwargs) -> Path:
    """A valid bundle whose networks have random weights (deterministic for ``seed``)."""
    import torch

    from pancreas_ssl_seg.bundle import save_bundle
    from pancreas_ssl_seg.networks import build_network

    torch.manual_seed(seed)
    metadata = tiny_metadata(**metadata_kwargs)
    weights = {stage: build_network(metadata["stages"][stage]["network"]).state_dict()
               for stage in ("coarse", "fine")}
    return save_bundle(out_dir, metadata, weights, "# Random test bundle\nNot a model.\n")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "README.md").is_file():
        pytest.fail(f"test data not found at {SHARED_DATA} (expected ../shared/data beside the "
                    "checkout, or set PANCREAS_SSL_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def example_ct(shared_data: Path) -> Path:
    return shared_data / "ct-abdomen-3mm" / "example_ct.nii.gz"


@pytest.fixture(scope="session")
def pancreas_crop(shared_data: Path):
    """A 40x40x24 crop of the 3 mm CT around its pancreas: (CT, its 62-structure reference map,
    where the pancreas is label 7)."""
    import numpy as np
    import SimpleITK as sitk

    folder = shared_data / "ct-abdomen-3mm"
    image = sitk.ReadImage(str(folder / "example_ct.nii.gz"))
    reference = sitk.ReadImage(str(folder / "example_seg_fast_force_split.nii.gz"))
    centre = np.argwhere(sitk.GetArrayViewFromImage(reference) == 7).mean(0).round().astype(int)
    start = [int(centre[2]) - 20, int(centre[1]) - 20, int(centre[0]) - 12]
    return (sitk.RegionOfInterest(image, [40, 40, 24], start),
            sitk.RegionOfInterest(reference, [40, 40, 24], start))


@pytest.fixture(scope="session")
def random_bundle(tmp_path_factory) -> Path:
    return write_random_bundle(tmp_path_factory.mktemp("bundles") / "tiny-random")


def pytest_sessionfinish(session, exitstatus):
    harness = sys.modules.get("slicer_harness")
    if harness is not None:
        harness.close_all_scenes()


@pytest.fixture
def one_torch_thread():
    """Torch on one thread for the test (modules opt in with ``pytestmark``): the test machine's
    cores are shared, and thread contention there costs 40x, not the model."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
