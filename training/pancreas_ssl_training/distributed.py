"""Multi-process training under ``torchrun``: process group, device choice, DDP wrapping.

``torchrun --nproc_per_node N -m pancreas_ssl_training.cli fit ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and the rendezvous address; without them training runs as a single process.
NCCL on CUDA, gloo on CPU (how the tests run it: two CPU processes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class DistributedContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def pick_device(local_rank: int = 0) -> torch.device:
    """CUDA (this process's GPU) when present, CPU otherwise."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def setup_distributed() -> DistributedContext:
    """Join the process group when launched by ``torchrun``; a single-process context otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(local_rank)
    if world_size > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank,
                              device=device)


def teardown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class HeadsModule(nn.Module):
    """Makes ``forward_heads`` the module's ``forward``, so DDP sees (and syncs) that call."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.network.forward_heads(x)


class HeadsCaller:
    """What the methods receive as ``network``: ``forward_heads`` goes through the DDP wrapper.

    Methods that run the network again (a second view) call ``network.forward_heads`` and so
    take part in DDP's gradient synchronisation like the main forward pass.
    """

    def __init__(self, wrapped: nn.Module, network: nn.Module):
        self._wrapped, self.network = wrapped, network

    def forward_heads(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self._wrapped(x)

    def __getattr__(self, name: str):  # config, heads and the rest come from the plain network
        return getattr(self.network, name)


def wrap_for_training(network: nn.Module, context: DistributedContext) -> HeadsCaller:
    """The network as methods call it: DDP-wrapped in multi-process runs, plain otherwise."""
    module = HeadsModule(network)
    if context.enabled:
        device_ids = [context.device.index] if context.device.type == "cuda" else None
        # SSL heads unused by a given iteration's terms would stall DDP's reducer without this.
        module = DistributedDataParallel(module, device_ids=device_ids,
                                         find_unused_parameters=True)
    return HeadsCaller(module, network)


def all_reduce_mean(value: float, context: DistributedContext) -> float:
    """The mean of a scalar over all ranks (for logging)."""
    if not context.enabled:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=context.device)
    dist.all_reduce(tensor)
    return float(tensor.item()) / context.world_size
