"""Speed guard (issue 16): ``segment()`` timed against a fixed reference workload in this process.

The figure is the ratio engine / reference (``benchmarks/speed_guard.py``: ``segment()`` Fast on
the example CT at 1.5 mm against the shipped coarse network on a fixed tensor, one thread, median
of alternating rounds), so a slower or busier machine moves both sides. The test fails when the
ratio exceeds ``ALLOWED_GROWTH`` (2) times the figure committed in ``benchmarks/speed_guard.json``;
a 3x slower ``segment()`` was shown to fail it (benchmarks/NOTES.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import SimpleITK as sitk
import torch
from conftest import REPO_ROOT

BENCH_DIR = REPO_ROOT / "benchmarks"
sys.path.insert(0, str(BENCH_DIR))

import speed_guard  # noqa: E402

ROUNDS = 3  # after one warm-up round; about 30 s on the 2-core CI machine


@pytest.fixture
def one_thread():
    """Torch and ITK on one thread, as when the figure was committed (steadier on 2 cores)."""
    previous = torch.get_num_threads(), sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    torch.set_num_threads(1)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    yield
    torch.set_num_threads(previous[0])
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(previous[1])


@pytest.fixture(scope="module")
def guard_ct(tmp_path_factory) -> Path:
    return speed_guard.build_guard_ct(speed_guard.DEFAULT_SOURCE,
                                      tmp_path_factory.mktemp("speed") / "guard_ct.nii.gz")


def test_segment_has_not_slowed_down_against_the_reference_workload(guard_ct, one_thread):
    committed = speed_guard.load_committed()
    figures = speed_guard.measure(guard_ct, repeats=ROUNDS)
    limit = speed_guard.ALLOWED_GROWTH * committed["ratio"]
    assert figures["ratio"] <= limit, (
        f"segment() took {figures['ratio']}x the reference workload (rounds {figures['ratios']}; "
        f"engine {figures['engine_s']} s, reference {figures['reference_s']} s); committed "
        f"{committed['ratio']}x on {committed['machine']} ({committed['measured']}); limit "
        f"{limit:.2f}x. If the engine's cost changed on purpose, re-measure with "
        f"`{committed['command']}` and commit benchmarks/speed_guard.json")
