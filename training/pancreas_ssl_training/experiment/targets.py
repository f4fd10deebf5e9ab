"""The test sets of an experiment, each reported on its own, prepared once and shared by every run.

- ``in_domain``: the held-out 8-bit patients mapped to HU as in training (same domain, unseen
  patients); the stop rule is read here.
- ``hu_slices`` (real shift): the NIH slices stored in Hounsfield units (patients 0001–0003,
  never trained on): true HU instead of the 8-bit slices' clipped, posterised mapping.
- ``other_mapping`` (real shift): the held-out 8-bit patients mapped to HU by the *other*
  ``grey_to_hu`` fit than the recipe's.
- ``<corruption>-<severity>``: the ``in_domain`` slices under one acquisition shift of
  ``evaluation.corruptions`` (seed 0, mixed with each slice's name).

Every set is built by ``evaluate.labelled_cases`` (the path of ``pancreas-ssl-train evaluate``)
and written to ``<folder>/<name>.npz`` (``image_i``, ``label_i`` per slice) + ``<name>.json``
(``{"prepare_seconds", "cases": one info dict per slice, with its spacing}``): plain files any
run or a reader can open.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from ..data.intensity_mapping import METHODS as GREY_TO_HU_METHODS
from ..evaluation.evaluate import _slice_image, labelled_cases
from ..evaluation.protocols import patient_range

NIH_HU_FOLDER, NIH_8BIT_FOLDER = "nih-pancreas-slices-hu", "nih-pancreas-slices-8bit"


@dataclass(frozen=True)
class Target:
    name: str
    kind: str  # "in_domain", "real_shift" or "corruption"
    spec: dict[str, Any] = field(hash=False)
    corruption: str = ""
    severity: int = 0


def experiment_targets(experiment: dict[str, Any], recipe: dict[str, Any],
                       data_root: Path) -> list[Target]:
    """The experiment's targets in report order."""
    config = experiment["targets"]
    mapping_method = (recipe["data"].get("grey_to_hu") or {}).get("method", "percentile")
    held_out = {"path": str(data_root / NIH_8BIT_FOLDER),
                "patients": patient_range(*config["patients"])}
    mapped = {"nih_8bit": held_out,
              "grey_to_hu": {"data_root": str(data_root), "method": mapping_method}}
    targets = []
    if config.get("in_domain", True):
        targets.append(Target("in_domain", "in_domain", mapped))
    if config.get("hu_slices", True):
        targets.append(Target("hu_slices", "real_shift",
                              {"nih_hu": str(data_root / NIH_HU_FOLDER)}))
    other = config.get("other_mapping")
    if other:
        if other not in GREY_TO_HU_METHODS or other == mapping_method:
            raise ValueError(f"targets.other_mapping: expected one of {GREY_TO_HU_METHODS} "
                             f"other than the recipe's {mapping_method!r}, got {other!r}")
        targets.append(Target("other_mapping", "real_shift",
                              {**mapped, "grey_to_hu": {"data_root": str(data_root),
                                                        "method": other}}))
    for name in config.get("corruptions", []):
        for severity in config.get("severities", []):
            targets.append(Target(f"{name}-{severity}", "corruption",
                                  {**mapped, "corruption": {"name": name, "severity": severity,
                                                            "seed": 0}},
                                  corruption=name, severity=severity))
    return targets


def prepare_target(target: Target, folder: Path, slices_per_patient: int | None = None) -> Path:
    """Write the target's slices (once; an existing file is kept) and return the ``.npz``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{target.name}.npz"
    if path.is_file() and (folder / f"{target.name}.json").is_file():
        return path
    started = time.time()
    arrays, infos, taken = {}, [], {}
    for info, image, labels in labelled_cases(target.spec):
        taken[info["patient"]] = taken.get(info["patient"], 0) + 1
        if slices_per_patient is not None and taken[info["patient"]] > slices_per_patient:
            continue
        index = len(infos)
        arrays[f"image_{index}"] = sitk.GetArrayFromImage(image)[0]
        arrays[f"label_{index}"] = labels[0]
        infos.append({**info, "spacing_mm": list(image.GetSpacing()[:2])})
    partial = folder / f".{target.name}.partial.npz"
    np.savez(partial, **arrays)
    partial.replace(path)
    record = {"prepare_seconds": round(time.time() - started, 2), "cases": infos}
    (folder / f"{target.name}.json").write_text(json.dumps(record, indent=1) + "\n",
                                               encoding="utf-8")
    return path


def target_record(target: Target, folder: Path) -> dict[str, Any]:
    """``{"prepare_seconds", "cases"}`` of a prepared target."""
    return json.loads((folder / f"{target.name}.json").read_text(encoding="utf-8"))


def target_cases(target: Target, folder: Path) -> Iterator[tuple[dict[str, Any], sitk.Image,
                                                                 np.ndarray]]:
    """``(info, canonical one-slice image, labels (1, y, x))`` of a prepared target, as
    ``evaluate.labelled_cases`` yields them."""
    infos = target_record(target, folder)["cases"]
    with np.load(folder / f"{target.name}.npz") as arrays:
        for index, info in enumerate(infos):
            spacing = tuple(info.pop("spacing_mm"))
            yield (info, _slice_image(arrays[f"image_{index}"], spacing),
                   arrays[f"label_{index}"][None])
