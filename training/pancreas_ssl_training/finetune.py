"""Fine-tune a bundle on the cases reviewers corrected, and export the result as a new bundle.

``pancreas-ssl-train finetune --model BUNDLE --data CORRECTIONS --out NEW_BUNDLE``: the corrected
cases (the folder the Slicer module's *Export corrected case* writes) are split by case name into
training and validation parts; the bundle's fine stage is trained on the training part, starting
from its weights, with the trainer (``fit``: logs, checkpoints, resume); the coarse stage is kept.
Parent and child are both measured on the validation part through the engine (``segment()``),
and the new bundle records its parent, the corrections it learned from and both figures.
"""

from __future__ import annotations

import copy
import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from pancreas_ssl_seg.bundle import ModelBundle, load_bundle, save_bundle
from pancreas_ssl_seg.bundle_format import CARD_FILE, weight_keys
from pancreas_ssl_seg.errors import InputError
from pancreas_ssl_seg.hashing import sha256_of
from pancreas_ssl_seg.labels import PANCREAS
from pancreas_ssl_seg.pipeline import segment

from .config import load_config, resolve_config
from .data.slice_datasets import build_slice_sources
from .data.volumes import VolumeCase, read_corrections
from .evaluation.metrics import mask_dice
from .export import inference_state
from .trainer import fit

DEFAULT_ITERATIONS = 300
DEFAULT_LR = 2e-4  # a tenth of the default model's: adapt, do not relearn


def split_cases(cases: list[VolumeCase], validation_fraction: float
                ) -> tuple[list[VolumeCase], list[VolumeCase]]:
    """(training, validation) by sorted case name: every k-th case validates (k from the
    fraction), so the split does not depend on the order the reviewer exported them in."""
    ordered = sorted(cases, key=lambda c: c.case)
    if validation_fraction <= 0 or len(ordered) < 2:
        return ordered, []
    every = max(2, round(1 / validation_fraction))
    validation = ordered[every - 1::every]
    return [c for c in ordered if c not in validation], validation


def _foreground_slices(sources: dict[str, Any], excluded: set[str]) -> int:
    return sum(1 for s in build_slice_sources(sources)
               if s.patient not in excluded and s.label is not None and s.label.any())


def finetune_data(bundle: ModelBundle, cases: list[VolumeCase],
                  replay: dict[str, Any] | None) -> tuple[dict[str, Any], int]:
    """(the config's ``data`` section, how many times each corrected case is listed): the
    corrected cases alone, or with ``replay`` (a training config whose data the parent learned
    from) the parent's sources as well, the corrections listed often enough to make about half
    the slices (a fine-tune on them alone forgets the rest: NOTES.md, session 5)."""
    volumes = [{"image": str(c.image_path), "label": str(c.label_path),
                "label_map": dict(c.label_map), "source": c.source, "case": c.case}
               for c in cases]
    if replay is None:
        return {"hu_window": list(bundle.hu_window), "sources": {"volumes": volumes}}, 1
    data = copy.deepcopy(replay["data"])
    excluded = {str(p) for p in data.get("exclude_patients", [])}
    repeat = max(1, round(_foreground_slices(data["sources"], excluded)
                          / max(1, _foreground_slices({"volumes": volumes}, excluded))))
    sources = data["sources"]
    sources["volumes"] = list(sources.get("volumes", [])) + volumes * repeat
    return data, repeat


def finetune_config(bundle: ModelBundle, data: dict[str, Any], iterations: int, lr: float,
                    seed: int, batch_size: int) -> dict[str, Any]:
    """A trainer config for the bundle's fine stage on ``data`` (its network, spacing, patch,
    intensity window), initialised from the bundle's weights."""
    fine = bundle.metadata["stages"]["fine"]
    return resolve_config({
        "name": f"finetune-{bundle.name}",
        "data": {**data, "hu_window": list(bundle.hu_window)},
        "network": copy.deepcopy(fine["network"]),
        "methods": {"supervised": {"enabled": True, "weight": 1.0, "batch_dice": True}},
        "optim": {"lr": lr, "warmup_iterations": min(20, iterations // 5), "schedule": "cosine"},
        "train": {"iterations": iterations, "batch_size": batch_size, "seed": seed,
                  "log_every": 10, "checkpoint_every": max(10, iterations // 4)},
        "stages": {"fine": {"spacing_mm": fine["spacing_mm"], "patch_size": fine["patch_size"],
                            "margin_mm": fine.get("margin_mm", 0.0),
                            "data": {"foreground_slices_only": True}}},
        "init_weights": str(bundle.path),
    }, source=f"finetune of {bundle.path}")


def organ_dice(bundle: ModelBundle, cases: Iterable[tuple[Any, np.ndarray]]) -> float | None:
    """Mean pancreas (labels 1 + 2) Dice of ``bundle`` through ``segment()`` over ``(image or
    path, reference labels (z, y, x))`` pairs; None without any."""
    scores = [mask_dice(segment(image, model=bundle, device="cpu").labels >= PANCREAS,
                        truth >= PANCREAS, empty=1.0) for image, truth in cases]
    return float(np.mean(scores)) if scores else None


def finetune(model: str | Path, corrections: str | Path, out: str | Path, *,
             iterations: int = DEFAULT_ITERATIONS, lr: float = DEFAULT_LR,
             validation_fraction: float = 0.25, seed: int = 0, batch_size: int = 8,
             replay: str | Path | None = None, work_dir: str | Path | None = None,
             show_progress: bool = True) -> dict[str, Any]:
    """Fine-tune ``model`` on ``corrections`` (with ``replay``, a training config, also on the
    data it names) into the bundle ``out``; returns the record the new bundle's provenance
    carries (``finetune``)."""
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; remove it or choose another folder")
    parent = load_bundle(model)
    cases = read_corrections(corrections)
    if not cases:
        raise InputError(f"{corrections}: no corrected case to learn from")
    train_cases, validation_cases = split_cases(cases, validation_fraction)
    data, repeat = finetune_data(parent, train_cases,
                                 None if replay is None else load_config(replay))
    config = finetune_config(parent, data, iterations, lr, seed, batch_size)
    # the trainer's folder (log, checkpoint: an interrupted run resumes); kept only when asked
    run_dir = Path(work_dir) if work_dir is not None else out.parent / f".{out.name}.run"
    started = time.time()
    trainer = fit(config, run_dir, resume=True, show_progress=show_progress)
    train_seconds = time.time() - started
    _, fine_state = inference_state(config["stages"]["fine"], trainer.network_states["fine"])

    metadata = copy.deepcopy(parent.metadata)
    metadata.pop("weights", None)
    metadata["version"] = f"{parent.version}+ft{len(train_cases)}"
    # An ensemble's fine stage becomes its first network, fine-tuned: the other members never
    # saw the corrections, and averaging them in would dilute what was learned.
    metadata["stages"]["fine"].pop("members", None)
    coarse = {key: parent.stage_weights[key]
              for stage, key in weight_keys(parent.metadata) if stage == "coarse"}
    child = ModelBundle(parent.path, metadata, {**coarse, "fine": fine_state})
    validation = [(c.image_path, sitk.GetArrayFromImage(sitk.ReadImage(str(c.label_path))))
                  for c in validation_cases]
    record = {
        "parent": {"name": parent.name, "version": parent.version,
                   "weights_sha256": parent.metadata["weights"]["sha256"]},
        "corrections": [{"case": c.case, "labels_sha256": sha256_of(c.label_path)}
                        for c in train_cases],
        "validation_cases": [c.case for c in validation_cases],
        "replay": None if replay is None else str(replay), "corrections_repeat": repeat,
        "iterations": iterations, "lr": lr, "seed": seed, "batch_size": batch_size,
        "train_seconds": round(train_seconds, 1),
        "validation_dice_parent": organ_dice(parent, validation),
        "validation_dice_finetuned": organ_dice(child, validation),
    }
    metadata["provenance"] = {**metadata.get("provenance", {}), "finetune": record}
    card = _card(parent, record)
    half = parent.metadata["weights"].get("dtype") == "float16"
    save_bundle(out, metadata, child.stage_weights, card, half_precision=half)
    if work_dir is None:
        shutil.rmtree(run_dir, ignore_errors=True)
    return record


def _card(parent: ModelBundle, record: dict[str, Any]) -> str:
    def figure(value):
        return "n/a (no validation case)" if value is None else f"{value:.3f}"

    try:
        parent_card = (parent.path / CARD_FILE).read_text(encoding="utf-8")
    except OSError:
        parent_card = ""
    return "\n".join([
        f"# {parent.name} {parent.version}+ft{len(record['corrections'])}", "",
        f"Fine-tuned from {parent.name} {parent.version} on {len(record['corrections'])} "
        f"corrected case(s) ({record['iterations']} iterations of the fine stage, lr "
        f"{record['lr']:g}, {record['train_seconds']} s"
        + ("" if record["replay"] is None else
           f", replaying the data of `{record['replay']}` with the corrections listed "
           f"{record['corrections_repeat']}x") + "); the coarse stage is the parent's.", "",
        f"Pancreas Dice on the {len(record['validation_cases'])} validation case(s) through the "
        f"engine: parent {figure(record['validation_dice_parent'])}, fine-tuned "
        f"{figure(record['validation_dice_finetuned'])}.", "",
        "## Parent model card", "", parent_card])

