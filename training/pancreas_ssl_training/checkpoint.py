"""Training checkpoints that never unpickle: tensors in safetensors, everything else in JSON.

A checkpoint is a folder:

- ``networks.safetensors``: ``<stage>.<state_dict key>`` for every stage trained so far;
- ``optimizer.safetensors``: the current stage's optimizer tensors (``state.<param>.<name>``)
  and the RNG states that are tensors (``rng.torch``, ``rng.cuda.<device>``);
- ``state.json``: the resolved config, progress (stage, iteration), optimizer hyper-parameters and
  scalar state, gradient-scaler state, numpy and Python RNG states, and free-form ``extra``.

It is written to a temporary folder and renamed over the old one, so a crash mid-write leaves the
previous checkpoint intact.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from pancreas_ssl_seg.errors import PancreasSSLSegError

NETWORKS_FILE, OPTIMIZER_FILE, STATE_FILE = "networks.safetensors", "optimizer.safetensors", \
    "state.json"
CHECKPOINT_FORMAT = "pancreas-ssl-train-checkpoint"


class CheckpointError(PancreasSSLSegError):
    """A checkpoint folder is missing files or cannot be read."""


@dataclass
class Checkpoint:
    """What a checkpoint folder holds, ready to load into networks and an optimizer."""

    path: Path
    config: dict[str, Any]
    progress: dict[str, Any]
    network_states: dict[str, dict[str, torch.Tensor]]
    optimizer_state: dict[str, Any] | None = None
    scaler_state: dict[str, Any] | None = None
    rng_state: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def capture_rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Torch (CPU and CUDA), numpy and Python RNG states as (tensors, JSON-able values)."""
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{index}"] = state
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    values = {"numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
              "python": [version, list(internal), gauss]}
    return tensors, values


def restore_rng_state(tensors: dict[str, torch.Tensor], values: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda_states = [tensors[k] for k in sorted(tensors) if k.startswith("rng.cuda.")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states[:torch.cuda.device_count()])
    kind, keys, pos, has_gauss, cached = values["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    version, internal, gauss = values["python"]
    random.setstate((version, tuple(internal), gauss))


def _split_optimizer_state(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for param_id, param_state in state["state"].items():
        for name, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{param_id}.{name}"] = value
            else:
                scalars[f"{param_id}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _join_optimizer_state(tensors: dict[str, torch.Tensor], values: dict) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("state."):
            _, param_id, name = key.split(".", 2)
            state.setdefault(int(param_id), {})[name] = value
    for key, value in values["scalars"].items():
        param_id, name = key.split(".", 1)
        state.setdefault(int(param_id), {})[name] = value
    return {"state": state, "param_groups": values["param_groups"]}


def save_checkpoint(path: str | Path, *, config: dict[str, Any], progress: dict[str, Any],
                    network_states: dict[str, dict[str, torch.Tensor]],
                    optimizer_state: dict[str, Any] | None = None,
                    scaler_state: dict[str, Any] | None = None,
                    extra: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint folder atomically, with the caller's current RNG states."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        save_file({f"{stage}.{key}": value.detach().cpu().contiguous()
                   for stage, states in network_states.items() for key, value in states.items()},
                  str(tmp / NETWORKS_FILE))
        rng_tensors, rng_values = capture_rng_state()
        optimizer_tensors, optimizer_values = ({}, None) if optimizer_state is None \
            else _split_optimizer_state(optimizer_state)
        save_file({**{k: v.detach().cpu().contiguous() for k, v in optimizer_tensors.items()},
                   **rng_tensors}, str(tmp / OPTIMIZER_FILE))
        state = {"format": CHECKPOINT_FORMAT, "config": config, "progress": progress,
                 "stages": sorted(network_states), "optimizer": optimizer_values,
                 "scaler": scaler_state, "rng": rng_values, "extra": extra or {}}
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
            tmp.rename(path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint folder (raises ``CheckpointError`` naming what is wrong)."""
    path = Path(path)
    missing = [name for name in (NETWORKS_FILE, OPTIMIZER_FILE, STATE_FILE)
               if not (path / name).is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {path}: missing {missing} (expected a folder written "
                              "by pancreas-ssl-train fit/pretrain)")
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        tensors = load_file(str(path / NETWORKS_FILE))
        optimizer_tensors = load_file(str(path / OPTIMIZER_FILE))
    except (OSError, ValueError, SafetensorError) as exc:
        raise CheckpointError(f"checkpoint {path}: unreadable ({exc})") from None
    if state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path}: {STATE_FILE} is not a {CHECKPOINT_FORMAT}")
    network_states = {stage: {k[len(stage) + 1:]: v for k, v in tensors.items()
                              if k.startswith(f"{stage}.")} for stage in state["stages"]}
    optimizer_state = None if state["optimizer"] is None \
        else _join_optimizer_state(optimizer_tensors, state["optimizer"])
    rng_tensors = {k: v for k, v in optimizer_tensors.items() if k.startswith("rng.")}
    return Checkpoint(path=path, config=state["config"], progress=state["progress"],
                      network_states=network_states, optimizer_state=optimizer_state,
                      scaler_state=state["scaler"],
                      rng_state={"tensors": rng_tensors, "values": state["rng"]},
                      extra=state["extra"])
