"""The training loop: one network per cascade stage, the config's methods as weighted loss terms.

``fit(config, out_dir)`` trains the config's stages in order (coarse, then fine) and leaves in
``out_dir``: ``checkpoint/`` (see :mod:`.checkpoint`; resumable, exportable), ``train_log.csv``
(one row per iteration, one column per active loss term), ``tensorboard/`` and ``config.yaml``;
with ``train.snapshot_every``, also ``snapshots/<stage>-<iteration>.safetensors`` (the network's
weights then, for learning curves evaluated after the run).

Exact resume: every batch is drawn from a generator seeded by (seed, rank, stage, iteration), and
the torch/numpy/Python RNG states and optimizer state are restored from the checkpoint, so
"N iterations" and "k iterations, stop, resume to N" give the same weights.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import Dataset, default_collate
from tqdm import tqdm

from pancreas_ssl_seg.bundle import load_bundle
from pancreas_ssl_seg.bundle_format import METADATA_FILE, STAGES
from pancreas_ssl_seg.networks import PancreasUNet, build_network

from .checkpoint import Checkpoint, load_checkpoint, restore_rng_state, save_checkpoint
from .config import ConfigError, enabled_methods
from .data.stage_data import default_dataset_factory
from .distributed import (DistributedContext, all_reduce_mean, setup_distributed,
                          wrap_for_training)

CHECKPOINT_DIR, LOG_FILE, TENSORBOARD_DIR = "checkpoint", "train_log.csv", "tensorboard"
SNAPSHOT_DIR = "snapshots"
DatasetFactory = Callable[[str, dict[str, Any], int], Dataset]


def build_methods_for(config: dict[str, Any]) -> list:
    from .methods import build_methods  # the methods package is optional until a run needs it

    return build_methods(enabled_methods(config))


def stage_network_config(stage: dict[str, Any], methods: list) -> dict[str, Any]:
    """The stage's network config with the SSL heads its methods need switched on."""
    heads = sorted(set(stage["network"].get("heads", [])).union(*(m.heads for m in methods)))
    return {**stage["network"], "heads": heads}


def iteration_seed(seed: int, rank: int, stage_name: str, iteration: int) -> list[int]:
    return [int(seed), int(rank), STAGES.index(stage_name), int(iteration)]


def batches(dataset: Dataset, batch_size: int, seed: int, rank: int, stage_name: str,
            start: int) -> Iterator[dict[str, Any]]:
    """Batches from iteration ``start`` on; batch ``i`` depends only on (seed, rank, stage, i)."""
    iteration = start
    while True:
        key = iteration_seed(seed, rank, stage_name, iteration)
        rng = np.random.default_rng(key)
        if hasattr(dataset, "set_random_state"):  # per-sample augmentation, reproducible too
            dataset.set_random_state(seed=int(np.random.SeedSequence(key).generate_state(1)[0]))
        indices = rng.integers(0, len(dataset), size=batch_size)
        yield default_collate([dataset[int(i)] for i in indices])
        iteration += 1


def learning_rate(optim: dict[str, Any], iteration: int, total: int) -> float:
    warmup = int(optim.get("warmup_iterations", 0))
    if iteration < warmup:
        return optim["lr"] * (iteration + 1) / warmup
    if optim["schedule"] == "constant":
        return optim["lr"]
    progress = (iteration - warmup) / max(1, total - warmup)
    return optim["lr"] * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def weighted_terms(weights: dict[str, float],
                   terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each unweighted term times its weight (``Method.weights``, from the config's
    ``weight``/``weights``); a term without a weight counts once."""
    return {name: value * float(weights.get(name, 1.0)) for name, value in terms.items()}


def load_encoder(network: PancreasUNet, checkpoint_path: str | Path) -> None:
    """Initialise ``network``'s encoder (stem + down path) from a pre-training checkpoint."""
    checkpoint = load_checkpoint(checkpoint_path)
    own = network.encoder_state_dict()
    for stage_state in checkpoint.network_states.values():
        encoder = {k: v for k, v in stage_state.items() if k in own}
        if set(encoder) == set(own) and all(v.shape == own[k].shape for k, v in encoder.items()):
            network.load_state_dict(encoder, strict=False)
            return
    raise ConfigError(f"init_encoder {checkpoint_path}: no stage there has an encoder matching "
                      f"this network ({len(own)} tensors, channels {network.config['channels']})")


def load_stage_weights(network: PancreasUNet, stage_name: str, checkpoint_path: str | Path) -> None:
    """Initialise ``network`` from the same stage of an earlier run or of a model bundle (a
    folder with ``metadata.json``: fine-tuning); heads it lacks stay random."""
    if (Path(checkpoint_path) / METADATA_FILE).is_file():
        trained = load_bundle(checkpoint_path).stage_weights.get(stage_name)
    else:
        trained = load_checkpoint(checkpoint_path).network_states.get(stage_name)
    if trained is None:
        raise ConfigError(f"init_weights {checkpoint_path}: has no trained {stage_name} stage")
    own = network.state_dict()
    mismatched = [k for k, v in trained.items() if k in own and v.shape != own[k].shape]
    if mismatched or not set(own) & set(trained):
        raise ConfigError(f"init_weights {checkpoint_path}: the {stage_name} network differs "
                          f"from this config's (e.g. {mismatched[:2]})")
    network.load_state_dict({k: v for k, v in trained.items() if k in own}, strict=False)


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()}


class LossLog:
    """Per-iteration CSV (one column per loss term) and TensorBoard scalars, main rank only."""

    def __init__(self, out_dir: Path, enabled: bool):
        self.path, self.enabled = out_dir / LOG_FILE, enabled
        self.columns: list[str] | None = None
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out_dir / TENSORBOARD_DIR))
            if self.path.is_file():
                with open(self.path, newline="", encoding="utf-8") as handle:
                    self.columns = next(csv.reader(handle), None)

    def truncate_after(self, stage: str, iteration: int) -> None:
        """Drop rows a crashed run logged past its last checkpoint (they will be redone)."""
        if not (self.enabled and self.path.is_file()):
            return
        with open(self.path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        order = {name: i for i, name in enumerate(STAGES)}
        kept = [r for r in rows if (order[r["stage"]], int(r["iteration"]))
                <= (order[stage], iteration)]
        with open(self.path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.columns or [])
            writer.writeheader()
            writer.writerows(kept)

    def write(self, stage: str, iteration: int, row: dict[str, float]) -> None:
        if not self.enabled:
            return
        if self.columns is None:
            self.columns = ["stage", "iteration", *row]
            with open(self.path, "w", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerow(self.columns)
        with open(self.path, "a", newline="", encoding="utf-8") as handle:
            csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore").writerow(
                {"stage": stage, "iteration": iteration, **row})
        for name, value in row.items():
            self.writer.add_scalar(f"{stage}/{name}", value, iteration)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class Trainer:
    """Trains every stage of a resolved config (see :func:`fit`)."""

    def __init__(self, config: dict[str, Any], out_dir: str | Path, *,
                 context: DistributedContext | None = None,
                 dataset_factory: DatasetFactory = default_dataset_factory,
                 show_progress: bool = True):
        self.config, self.out_dir = config, Path(out_dir)
        self.context = context or setup_distributed()
        self.dataset_factory, self.show_progress = dataset_factory, show_progress
        self.methods = build_methods_for(config)
        self.network_states: dict[str, dict[str, torch.Tensor]] = {}
        self.started = time.time()

    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT_DIR

    def run(self, resume: bool = False) -> Path:
        checkpoint = self._resume_point() if resume else None
        if self.context.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / "config.yaml").write_text(yaml.safe_dump(self.config, sort_keys=False),
                                                      encoding="utf-8")
        log = LossLog(self.out_dir, self.context.is_main)
        if checkpoint is not None:
            log.truncate_after(checkpoint.progress["stage"], checkpoint.progress["iteration"])
        try:
            for stage_name in [s for s in STAGES if s in self.config["stages"]]:
                done = checkpoint is not None and stage_name in checkpoint.progress["completed"]
                if not done:
                    resume_from = checkpoint if checkpoint is not None \
                        and checkpoint.progress["stage"] == stage_name else None
                    self._train_stage(stage_name, log, resume_from)
        finally:
            log.close()
        return self.checkpoint_path

    def _resume_point(self) -> Checkpoint | None:
        if not self.checkpoint_path.is_dir():
            return None
        checkpoint = load_checkpoint(self.checkpoint_path)
        self.network_states = dict(checkpoint.network_states)
        self.started -= float(checkpoint.extra.get("train_seconds", 0.0))
        return checkpoint

    def _build_network(self, stage_name: str, stage: dict[str, Any]) -> PancreasUNet:
        torch.manual_seed(self.config["train"]["seed"])  # identical initial weights on every rank
        network = build_network(stage_network_config(stage, self.methods))
        if self.config.get("init_encoder"):
            load_encoder(network, self.config["init_encoder"])
        if self.config.get("init_weights"):
            load_stage_weights(network, stage_name, self.config["init_weights"])
        return network.to(self.context.device)

    def _train_stage(self, stage_name: str, log: LossLog, checkpoint: Checkpoint | None) -> None:
        stage = self.config["stages"][stage_name]
        train = stage["train"]
        device, context = self.context.device, self.context
        network = self._build_network(stage_name, stage)
        optimizer = torch.optim.AdamW(network.parameters(), lr=self.config["optim"]["lr"],
                                      weight_decay=self.config["optim"]["weight_decay"])
        use_amp = bool(train["amp"]) and device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        start = 0
        if checkpoint is not None:
            network.load_state_dict(checkpoint.network_states[stage_name])
            optimizer.load_state_dict(checkpoint.optimizer_state)
            if checkpoint.scaler_state:
                scaler.load_state_dict(checkpoint.scaler_state)
            start = int(checkpoint.progress["iteration"])
        caller = wrap_for_training(network, context)
        dataset = self.dataset_factory(stage_name, stage, train["seed"] + 1000 * context.rank)
        if checkpoint is not None:  # after everything that may draw from the global RNGs
            restore_rng_state(checkpoint.rng_state["tensors"], checkpoint.rng_state["values"])
        stream = batches(dataset, train["batch_size"], train["seed"], context.rank, stage_name,
                         start)
        total = train["iterations"]
        bar = tqdm(range(start, total), desc=f"{stage_name}", initial=start, total=total,
                   disable=not (self.show_progress and context.is_main), dynamic_ncols=True)
        network.train()
        for iteration in bar:
            lr = learning_rate(self.config["optim"], iteration, total)
            for group in optimizer.param_groups:
                group["lr"] = lr
            batch = to_device(next(stream), device)
            with torch.autocast(device.type, enabled=use_amp):
                outputs = caller.forward_heads(batch["image"])
                terms: dict[str, torch.Tensor] = {}
                weighted: dict[str, torch.Tensor] = {}
                for method in self.methods:
                    raw = method.losses(caller, batch, outputs)
                    terms.update(raw)
                    weighted.update(weighted_terms(method.weights, raw))
                loss = sum(weighted.values())
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            if self.config["optim"].get("grad_clip"):
                nn.utils.clip_grad_norm_(network.parameters(), self.config["optim"]["grad_clip"])
            scaler.step(optimizer)
            scaler.update()
            row = {"loss_total": all_reduce_mean(float(loss.detach()), context), "lr": lr,
                   **{k: all_reduce_mean(float(v.detach()), context) for k, v in terms.items()}}
            if (iteration + 1) % train["log_every"] == 0 or iteration + 1 == total:
                log.write(stage_name, iteration + 1, row)
                bar.set_postfix(loss=f"{row['loss_total']:.4f}")
            if train.get("snapshot_every") and (iteration + 1) % train["snapshot_every"] == 0:
                self._snapshot(stage_name, network, iteration + 1)
            if (iteration + 1) % train["checkpoint_every"] == 0 and iteration + 1 < total:
                self._save(stage_name, network, optimizer, scaler, iteration + 1, completed=False)
        bar.close()
        self._save(stage_name, network, optimizer, scaler, total, completed=True)

    def _snapshot(self, stage_name: str, network: PancreasUNet, iteration: int) -> None:
        if self.context.is_main:
            from safetensors.torch import save_file

            folder = self.out_dir / SNAPSHOT_DIR
            folder.mkdir(exist_ok=True)
            save_file({k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()},
                      str(folder / f"{stage_name}-{iteration:06d}.safetensors"))

    def _save(self, stage_name: str, network: PancreasUNet, optimizer, scaler, iteration: int,
              completed: bool) -> None:
        self.network_states[stage_name] = {k: v.detach().cpu().clone()
                                           for k, v in network.state_dict().items()}
        if self.context.is_main:
            done = [s for s in self.network_states if s != stage_name or completed]
            save_checkpoint(
                self.checkpoint_path, config=self.config,
                progress={"stage": stage_name, "iteration": iteration, "completed": done},
                network_states=self.network_states,
                optimizer_state=optimizer.state_dict(), scaler_state=scaler.state_dict(),
                extra={"train_seconds": time.time() - self.started,
                       "world_size": self.context.world_size})
        if self.context.enabled:  # no rank runs ahead while the checkpoint is written
            torch.distributed.barrier()

    def final_state(self) -> dict[str, dict[str, torch.Tensor]]:
        return dict(self.network_states)


def fit(config: dict[str, Any], out_dir: str | Path, *, resume: bool = False,
        context: DistributedContext | None = None,
        dataset_factory: DatasetFactory = default_dataset_factory,
        show_progress: bool = True) -> Trainer:
    """Train ``config``'s stages into ``out_dir``; the returned trainer holds the final weights."""
    trainer = Trainer(config, out_dir, context=context, dataset_factory=dataset_factory,
                      show_progress=show_progress)
    trainer.run(resume=resume)
    return trainer
