"""Multi-process training: two CPU processes on gloo finish and hold identical weights."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

WORLD_SIZE = 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, port: int, out_dir: str) -> None:
    # torchrun's environment, set by hand so the test needs no launcher.
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(WORLD_SIZE), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from pancreas_ssl_training.distributed import setup_distributed, teardown_distributed
    from pancreas_ssl_training.trainer import fit
    from test_trainer import BlobSlices, tiny_config

    context = setup_distributed()
    try:
        trainer = fit(tiny_config(iterations=4), Path(out_dir) / "run", context=context,
                      show_progress=False,
                      dataset_factory=lambda name, stage, seed: BlobSlices())
        save_file({f"{stage}.{k}": v for stage, state in trainer.final_state().items()
                   for k, v in state.items()}, str(Path(out_dir) / f"rank{rank}.safetensors"))
    finally:
        teardown_distributed()


def test_two_gloo_processes_finish_with_identical_weights(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    rank0 = load_file(str(tmp_path / "rank0.safetensors"))
    rank1 = load_file(str(tmp_path / "rank1.safetensors"))
    assert rank0.keys() == rank1.keys() and any(k.startswith("fine.") for k in rank0)
    for key, value in rank0.items():
        assert torch.equal(value, rank1[key]), key
    # The ranks drew different batches, so equal weights mean the gradients were averaged.
    from pancreas_ssl_training.trainer import batches
    from test_trainer import BlobSlices

    first = [next(batches(BlobSlices(), 2, 0, rank, "coarse", 0))["image"] for rank in (0, 1)]
    assert not torch.equal(*first)
    # Only rank 0 writes the run folder; its checkpoint holds the same weights.
    from pancreas_ssl_training.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoint")
    assert checkpoint.extra["world_size"] == WORLD_SIZE
    assert torch.equal(checkpoint.network_states["fine"]["seg_head.weight"],
                       rank0["fine.seg_head.weight"])
