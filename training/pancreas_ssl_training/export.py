"""Turn a training checkpoint into a model bundle the engine loads.

The bundle keeps only what inference runs: each stage's network is rebuilt without the SSL heads
(``heads: []``) and gets the matching subset of the trained weights. Provenance (config, data,
iterations, training time, git commit) and the caller's metrics go into ``metadata.json`` and
``MODEL_CARD.md``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import torch

from PancreasSSLSegLib.bundle import STAGES, save_bundle
from PancreasSSLSegLib.errors import BundleError
from PancreasSSLSegLib.networks import build_network

from .bundle_metadata import default_metadata
from .checkpoint import Checkpoint, load_checkpoint
from .config import resolve_config

REPO_ROOT = Path(__file__).resolve().parents[2]


def git_commit(repo: Path = REPO_ROOT) -> str | None:
    """The checkout's HEAD commit (``None`` outside a git checkout)."""
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True,
                                text=True, timeout=10, check=True, encoding="utf-8")
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None


def inference_state(stage: dict[str, Any],
                    trained: dict[str, torch.Tensor]) -> tuple[dict, dict[str, torch.Tensor]]:
    """(network config without SSL heads, the trained tensors that network has)."""
    network = {**stage["network"], "heads": []}
    wanted = build_network(network).state_dict()
    return network, {key: trained[key] for key in wanted}


def stage_entry(name: str, stage: dict[str, Any], network: dict[str, Any]) -> dict[str, Any]:
    entry = {"network": network, "spacing_mm": [float(s) for s in stage["spacing_mm"]],
             "patch_size": [int(p) for p in stage["patch_size"]]}
    if name == "fine":
        entry["margin_mm"] = float(stage["margin_mm"])
    return entry


def provenance(checkpoint: Checkpoint) -> dict[str, Any]:
    config = checkpoint.config
    return {
        "config_name": config["name"],
        "config": config,
        "data": {name: stage["data"] for name, stage in config["stages"].items()},
        "iterations": {name: s["train"]["iterations"] for name, s in config["stages"].items()},
        "batch_size": {name: s["train"]["batch_size"] for name, s in config["stages"].items()},
        "train_seconds": round(float(checkpoint.extra.get("train_seconds", 0.0)), 1),
        "world_size": int(checkpoint.extra.get("world_size", 1)),
        "methods": sorted(n for n, s in config["methods"].items() if s.get("enabled", True)),
        "git_commit": git_commit(),
        "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
    }


def model_card(metadata: dict[str, Any], card_text: str) -> str:
    """Markdown card: the config's own text, then metrics and provenance as recorded."""
    prov, metrics = metadata["provenance"], metadata["metrics"]
    lines = [f"# {metadata['name']} {metadata['version']}", "", metadata.get("description", ""),
             "", card_text.strip(), "", "## Training run (recorded at export)", "",
             f"- config: `{prov['config_name']}`; methods: {', '.join(prov['methods'])}",
             f"- iterations: {json.dumps(prov['iterations'])}, batch size "
             f"{json.dumps(prov['batch_size'])}, "
             f"{prov['world_size']} process(es)",
             f"- training time: {prov['train_seconds']} s",
             f"- git commit: `{prov['git_commit']}`; exported {prov['exported_at']}", ""]
    for name in STAGES:
        stage = metadata["stages"][name]
        lines.append(f"- {name} stage: {stage['network']['spatial_dims']}-D, spacing "
                     f"{stage['spacing_mm']} mm, patch {stage['patch_size']}, channels "
                     f"{stage['network']['channels']}")
    lines += ["", "## Metrics", ""]
    if metrics:
        lines += ["```json", json.dumps(metrics, indent=2), "```"]
    else:
        lines.append("None recorded for this export.")
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def export_bundle(checkpoint_path: str | Path, out_dir: str | Path, *,
                  metrics: dict[str, Any] | None = None) -> Path:
    """Write the bundle for a checkpoint that holds both stages; returns its folder."""
    checkpoint = load_checkpoint(checkpoint_path)
    config = checkpoint.config = resolve_config(checkpoint.config)  # defaults added since it ran
    missing = [s for s in STAGES if s not in checkpoint.progress.get("completed", [])]
    if missing:
        raise BundleError(f"checkpoint {checkpoint_path}: stages {missing} are not trained "
                          "(a bundle needs a trained coarse and fine stage)")
    entries, weights = {}, {}
    for name in STAGES:
        network, weights[name] = inference_state(config["stages"][name],
                                                 checkpoint.network_states[name])
        entries[name] = stage_entry(name, config["stages"][name], network)
    export = config["export"]
    metadata = default_metadata(
        name=export["name"], version=str(export["version"]), coarse=entries["coarse"],
        fine=entries["fine"], hu_window=config["data"]["hu_window"],
        description=export.get("description", ""), license=export["license"],
        provenance=provenance(checkpoint), metrics=metrics or {})
    metadata["inference"].update(export.get("inference", {}))
    card = model_card(metadata, export.get("card_text", ""))
    return save_bundle(out_dir, metadata, weights, card)
