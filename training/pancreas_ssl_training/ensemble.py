"""Join bundles into one whose stages are ensembles: Accurate mode averages the softmax of every
member network of a stage, Fast mode runs each stage's first network.

The bundles must agree on everything inference reads besides the weights (labels, intensity, each
stage's network config, spacing and patch): an ensemble averages networks that see the same
input. Members keep their order: the first bundle's networks come first, so Fast mode of the
ensemble is Fast mode of the first bundle.
"""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pancreas_ssl_seg.bundle import ModelBundle, load_bundle, save_bundle
from pancreas_ssl_seg.bundle_format import STAGES, member_key
from pancreas_ssl_seg.errors import BundleError

from .export import apply_export_settings, git_commit, model_card

# What must be identical across members for their outputs to be averaged.
SHARED_KEYS = ("labels", "uncertain_region", "intensity")
SHARED_STAGE_KEYS = ("network", "spacing_mm", "patch_size")


def check_compatible(bundles: Sequence[ModelBundle]) -> None:
    """``BundleError`` naming the first bundle that differs from the first one, and where."""
    first = bundles[0]
    for other in bundles[1:]:
        for key in SHARED_KEYS:
            if other.metadata[key] != first.metadata[key]:
                raise BundleError(f"model bundle {other.path}: its {key} differ from "
                                  f"{first.path}'s; an ensemble needs the same")
        for stage in STAGES:
            for key in SHARED_STAGE_KEYS:
                if other.metadata["stages"][stage][key] != first.metadata["stages"][stage][key]:
                    raise BundleError(f"model bundle {other.path}: stages.{stage}.{key} differs "
                                      f"from {first.path}'s; an ensemble needs the same")


def _members(bundle: ModelBundle, stage: str) -> list[dict[str, torch.Tensor]]:
    return [bundle.stage_weights[member_key(stage, m)] for m in range(bundle.members(stage))]


def ensemble_provenance(bundles: Sequence[ModelBundle]) -> dict[str, Any]:
    """The first bundle's training provenance, every member bundle's runs and training time,
    and which bundles (name, version, weights' SHA-256) were joined."""
    first = bundles[0].metadata["provenance"]
    runs = [run for b in bundles for run in b.metadata["provenance"].get("runs", [])]
    return {**copy.deepcopy(first), "runs": runs,
            "train_seconds": round(sum(float(b.metadata["provenance"].get("train_seconds", 0))
                                       for b in bundles), 1),
            "ensemble_of": [{"name": b.name, "version": b.version,
                             "weights_sha256": b.metadata["weights"]["sha256"],
                             "git_commit": b.metadata["provenance"].get("git_commit")}
                            for b in bundles],
            "git_commit": git_commit(),
            "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "torch_version": torch.__version__}


def ensemble_bundle(bundle_paths: Sequence[str | Path], out_dir: str | Path, *,
                    stages: Sequence[str] = STAGES,
                    export_settings: dict[str, Any] | None = None,
                    metrics: dict[str, Any] | None = None) -> Path:
    """Write the ensemble of ``bundle_paths`` (at least two) to ``out_dir``; returns it.

    Only ``stages`` are joined; any other stage keeps the first bundle's network(s).
    Name, version, description, licence, the fine margin, inference settings and card text come
    from ``export_settings`` (a config's ``export`` section) when given, else from the first
    bundle. Weights are stored as float16 when every member's were."""
    if len(bundle_paths) < 2:
        raise BundleError("an ensemble needs at least two bundles")
    bundles = [load_bundle(path) for path in bundle_paths]
    check_compatible(bundles)
    metadata = copy.deepcopy(bundles[0].metadata)
    metadata.pop("weights")
    weights = {}
    for stage in STAGES:
        joined = bundles if stage in stages else bundles[:1]
        members = [state for bundle in joined for state in _members(bundle, stage)]
        weights.update({member_key(stage, m): state for m, state in enumerate(members)})
        metadata["stages"][stage]["members"] = len(members)
    card_text = ""
    if export_settings is not None:
        apply_export_settings(metadata, export_settings)
        card_text = export_settings.get("card_text", "")
    metadata["provenance"] = ensemble_provenance(bundles)
    metadata["metrics"] = metrics or {}
    half = all(b.metadata["weights"].get("dtype") == "float16" for b in bundles)
    return save_bundle(out_dir, metadata, weights, model_card(metadata, card_text),
                       half_precision=half)
