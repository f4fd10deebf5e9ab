"""What the benchmark ran on: CPU, cores, memory, torch threads, GPU (if any) and the load."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import psutil
import torch


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (other jobs share the machine; record them)."""
    return [round(x, 2) for x in os.getloadavg()]


def describe_machine() -> dict:
    return {"cpu_model": cpu_model(), "logical_cores": psutil.cpu_count(logical=True),
            "usable_cores": len(os.sched_getaffinity(0)),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "load_average_start": load_average()}
