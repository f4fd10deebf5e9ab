"""Turn a training checkpoint into a model bundle the engine loads.

The bundle keeps only what inference runs: each stage's network is rebuilt without the SSL heads
(``heads: []``) and gets the matching subset of the trained weights. Provenance (config, data,
iterations, training time, git commit) and the caller's metrics go into ``metadata.json`` and
``MODEL_CARD.md``.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import torch

from pancreas_ssl_seg.bundle import ModelBundle, load_bundle, save_bundle
from pancreas_ssl_seg.bundle_format import METADATA_FILE, STAGES
from pancreas_ssl_seg.bundle_metadata import default_metadata
from pancreas_ssl_seg.errors import BundleError
from pancreas_ssl_seg.networks import build_network

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


def provenance(sources: dict[str, Checkpoint], paths: dict[str, Path]) -> dict[str, Any]:
    """What trained each stage; ``sources`` maps a stage to the checkpoint that trained it."""
    config = sources["fine"].config
    runs = {}
    for name, checkpoint in sources.items():
        run = runs.setdefault(str(paths[name]), {
            "checkpoint": str(paths[name]), "stages": [],
            "train_seconds": round(float(checkpoint.extra.get("train_seconds", 0.0)), 1),
            "world_size": int(checkpoint.extra.get("world_size", 1))})
        run["stages"].append(name)
        if "bundle_runs" in checkpoint.extra:  # a bundle: the runs that trained stages taken
            run["train_seconds"] = round(sum(  # from it, each once
                float(r.get("train_seconds", 0)) for r in checkpoint.extra["bundle_runs"]
                if set(r.get("stages", [])) & set(run["stages"])), 1)
    return {
        "config_name": config["name"],
        "config": config,
        "data": {name: c.config["stages"][name]["data"] for name, c in sources.items()},
        "iterations": {name: c.config["stages"][name]["train"]["iterations"]
                       for name, c in sources.items()},
        "batch_size": {name: c.config["stages"][name]["train"]["batch_size"]
                       for name, c in sources.items()},
        "runs": list(runs.values()),
        "train_seconds": round(sum(r["train_seconds"] for r in runs.values()), 1),
        "world_size": max(r["world_size"] for r in runs.values()),
        "methods": sorted(n for n, s in config["methods"].items() if s.get("enabled", True)),
        "git_commit": git_commit(),
        "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "torch_version": torch.__version__,
    }


def intensity_reference(stages: dict[str, dict[str, Any]]) -> str:
    """Where the soft-tissue reference was measured in training, which inference must repeat:
    per axial slice for 2-D stages (a training slice is all there is), per scan for 3-D ones."""
    dims = {int(stage["network"]["spatial_dims"]) for stage in stages.values()}
    if len(dims) != 1:
        raise BundleError("a bundle's stages must all be 2-D or all 3-D: the intensity "
                          "reference (per slice or per scan) is one decision for the bundle")
    return "slice" if dims == {2} else "scan"


def model_card(metadata: dict[str, Any], card_text: str) -> str:
    """Markdown card: the config's own text, then metrics and provenance as recorded."""
    prov, metrics = metadata["provenance"], metadata["metrics"]
    lines = [f"# {metadata['name']} {metadata['version']}", "", metadata.get("description", ""),
             "", card_text.strip(), "", "## Training run (recorded at export)", ""]
    if "config_name" in prov:  # bundles built in code (tests) record no training run
        lines += [
            f"- config: `{prov['config_name']}`; methods: {', '.join(prov['methods'])}",
            f"- iterations: {json.dumps(prov['iterations'])}, batch size "
            f"{json.dumps(prov['batch_size'])}, {prov['world_size']} process(es)",
            f"- training time: {prov['train_seconds']} s"
            + ("" if len(prov.get("runs", [])) < 2 else " over the runs: " + "; ".join(
                f"{'+'.join(r['stages'])} {r['train_seconds']} s" for r in prov["runs"]))]
    lines += [f"- ensemble of {member['name']} {member['version']} (weights "
              f"`{member['weights_sha256'][:12]}`)" for member in prov.get("ensemble_of", [])]
    lines += [f"- git commit: `{prov.get('git_commit')}`; exported {prov.get('exported_at')}",
              ""]
    for name in STAGES:
        stage = metadata["stages"][name]
        members = stage.get("members", 1)
        lines.append(f"- {name} stage: {stage['network']['spatial_dims']}-D, spacing "
                     f"{stage['spacing_mm']} mm, patch {stage['patch_size']}, channels "
                     f"{stage['network']['channels']}"
                     + (f", {members} networks averaged" if members > 1 else ""))
    lines += ["", "## Metrics", ""]
    if metrics:
        lines += ["```json", json.dumps(metrics, indent=2), "```"]
    else:
        lines.append("None recorded for this export.")
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip() + "\n"


def stages_of_bundle(path: Path) -> Checkpoint:
    """A bundle's stages as a checkpoint export can take a stage from (e.g. a retrained fine
    stage behind a shipped bundle's coarse one): its weights (single-network stages only), the
    training config its provenance recorded, and each stage's training time."""
    bundle = load_bundle(path)
    provenance = bundle.metadata["provenance"]
    config = copy.deepcopy(provenance.get("config"))
    if config is None:
        raise BundleError(f"model bundle {path}: its provenance records no training config, "
                          "so its stages cannot be exported again")
    if any(bundle.members(stage) > 1 for stage in STAGES):
        raise BundleError(f"model bundle {path}: an ensemble's stages cannot be exported as one "
                          "network each; use `pancreas-ssl-train ensemble`")
    # The recorded config is one run's (e.g. only the fine stage's, when each stage had its own
    # process); every stage as the bundle holds it, with the data and schedule that trained it.
    config["stages"] = {stage: {
        **{key: value for key, value in bundle.metadata["stages"][stage].items()
           if key != "members"},
        "data": provenance.get("data", {}).get(stage, {}),
        "train": {"iterations": provenance.get("iterations", {}).get(stage, 0),
                  "batch_size": provenance.get("batch_size", {}).get(stage, 1)}}
        for stage in STAGES}
    return Checkpoint(path=path, config=config, progress={"completed": list(STAGES)},
                      network_states={stage: bundle.stage_weights[stage] for stage in STAGES},
                      extra={"bundle_runs": bundle.metadata["provenance"].get("runs", []),
                             "world_size": 1})


def _stage_sources(checkpoint_paths: list[Path]) -> tuple[dict[str, Checkpoint], dict[str, Path]]:
    """Each stage from the first checkpoint (or bundle folder) that completed it."""
    sources, paths = {}, {}
    for path in checkpoint_paths:
        is_bundle = (path / METADATA_FILE).is_file()
        checkpoint = stages_of_bundle(path) if is_bundle else load_checkpoint(path)
        checkpoint.config = resolve_config(checkpoint.config)  # defaults added since it ran
        for name in STAGES:
            if name not in sources and name in checkpoint.progress.get("completed", []):
                sources[name], paths[name] = checkpoint, path
    missing = [s for s in STAGES if s not in sources]
    if missing:
        raise BundleError(f"checkpoint {', '.join(map(str, checkpoint_paths))}: stages {missing} "
                          "are not trained (a bundle needs a trained coarse and fine stage)")
    return sources, paths


def bundle_metadata_for(config: dict[str, Any], stage_states: dict[str, dict[str, torch.Tensor]],
                        provenance_entry: dict[str, Any] | None = None,
                        metrics: dict[str, Any] | None = None
                        ) -> tuple[dict[str, Any], dict[str, dict[str, torch.Tensor]]]:
    """(metadata, inference weights per stage) of a resolved config and trained stage states."""
    entries, weights = {}, {}
    export = config["export"]
    for name, trained in stage_states.items():
        stage = config["stages"][name]
        network, weights[name] = inference_state(stage, trained)
        entries[name] = stage_entry(name, stage, network)
    metadata = default_metadata(
        name=export["name"], version=str(export["version"]), coarse=entries.get("coarse"),
        fine=entries["fine"], hu_window=config["data"]["hu_window"],
        intensity_reference=intensity_reference(entries),
        description=export.get("description", ""), license=export["license"],
        provenance=provenance_entry or {}, metrics=metrics or {})
    if "coarse" not in entries:
        del metadata["stages"]["coarse"]
    apply_export_settings(metadata, export)
    return metadata, weights


def apply_export_settings(metadata: dict[str, Any], export: dict[str, Any]) -> None:
    """Lay an ``export`` section over ``metadata``: name, version, description and licence,
    the fine stage's margin (an inference setting: 2-D training never used it) and the
    inference settings (the quality thresholds key by key: a config names only those it
    changes)."""
    for key in ("name", "version", "description", "license"):
        if key in export:
            metadata[key] = str(export[key])
    if "fine_margin_mm" in export and metadata["stages"].get("fine"):
        metadata["stages"]["fine"]["margin_mm"] = float(export["fine_margin_mm"])
    settings = dict(export.get("inference", {}))
    quality = {**metadata["inference"]["quality"], **settings.pop("quality", {})}
    metadata["inference"].update(settings, quality=quality)


def in_memory_bundle(config: dict[str, Any],
                     stage_states: dict[str, dict[str, torch.Tensor]]) -> ModelBundle:
    """The bundle an export of these weights would write, without writing it (evaluation of
    checkpoints and training snapshots). With only a ``fine`` stage it is not a loadable
    bundle: the evaluation's one-stage mode runs it."""
    metadata, weights = bundle_metadata_for(config, stage_states)
    return ModelBundle(path=Path("<in memory>"), metadata=metadata, stage_weights=weights)


def export_bundle(checkpoint_paths: str | Path | list[str | Path], out_dir: str | Path, *,
                  metrics: dict[str, Any] | None = None,
                  export_settings: dict[str, Any] | None = None) -> Path:
    """Write the bundle for checkpoints that hold both stages between them (e.g. the coarse and
    the fine stage trained as two processes); returns its folder. The HU window comes from the
    fine stage's run, the export settings (name, version, card, inference settings) from
    ``export_settings`` when given (a config's ``export`` section, e.g. settings chosen after
    training), else from that run's config."""
    if isinstance(checkpoint_paths, (str, Path)):
        checkpoint_paths = [checkpoint_paths]
    sources, paths = _stage_sources([Path(p) for p in checkpoint_paths])
    config = {**sources["fine"].config,
              "stages": {name: c.config["stages"][name] for name, c in sources.items()}}
    if export_settings is not None:
        config["export"] = export_settings
    metadata, weights = bundle_metadata_for(
        config, {name: c.network_states[name] for name, c in sources.items()},
        provenance(sources, paths), metrics)
    card = model_card(metadata, config["export"].get("card_text", ""))
    return save_bundle(out_dir, metadata, weights, card,
                       half_precision=config["export"].get("weights_dtype") == "float16")
