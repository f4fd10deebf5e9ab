"""The model catalogue: installed bundles, found by folder, listed by name.

A bundle is installed by copying its folder into a models folder; nothing is downloaded. Folders
searched, in this order (an earlier one wins when two bundles share name and version):

1. the user's models folders: ``$PANCREAS_SSL_SEG_MODELS`` (one or more folders separated by
   ``os.pathsep``) if set, else ``~/.pancreas-ssl-seg/models``;
2. the shipped models, ``Resources/Models`` beside the engine (checkout, Slicer module, extension).

Listing reads each bundle's ``metadata.json`` only (strict JSON, size-limited) and imports no
torch, so the Slicer module can fill its model list before the engine's packages are installed.
The weights are checked when the bundle is loaded (:func:`.bundle.load_bundle`), as for any
bundle folder.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .bundle_format import MAX_METADATA_BYTES, METADATA_FILE
from .errors import BundleError

MODELS_ENV = "PANCREAS_SSL_SEG_MODELS"
USER_MODELS_DIR = Path("~/.pancreas-ssl-seg/models")


@dataclass(frozen=True)
class CatalogueEntry:
    """One installed bundle as its metadata describes it (not yet validated: see the module
    docstring). ``problem`` is set, and the other fields may be empty, when its metadata cannot
    be read."""

    name: str
    version: str
    path: Path
    source: str  # "user" or "shipped"
    license: str = ""
    description: str = ""
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    uncertainty_threshold: float | None = None  # the bundle's region threshold (inference)
    problem: str | None = None

    @property
    def label(self) -> str:
        """What a model list shows: ``name version``."""
        return f"{self.name} {self.version}".strip()

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "path": str(self.path),
                "source": self.source, "license": self.license,
                "description": self.description, "stages": self.stages, "metrics": self.metrics,
                "uncertainty_threshold": self.uncertainty_threshold, "problem": self.problem}


def user_model_dirs() -> list[Path]:
    """The user's models folders (see the module docstring); they need not exist."""
    value = os.environ.get(MODELS_ENV, "")
    if value.strip():
        return [Path(part).expanduser() for part in value.split(os.pathsep) if part.strip()]
    return [USER_MODELS_DIR.expanduser()]


def shipped_model_places() -> list[Path]:
    """Where shipped models are looked for, existing or not: ``Resources/Models`` beside the
    source tree (checkout, editable install, Slicer "additional module path"), then beside the
    installed module (the extension's share folder)."""
    here = Path(__file__).resolve().parent
    return [here.parents[1] / "Resources" / "Models", here.parent / "Resources" / "Models"]


def shipped_model_dirs() -> list[Path]:
    """The shipped models folders that exist (each once)."""
    found = []
    for candidate in shipped_model_places():
        if candidate.is_dir() and candidate.resolve() not in [f.resolve() for f in found]:
            found.append(candidate)
    return found


def list_models() -> list[CatalogueEntry]:
    """Every bundle folder (a folder holding ``metadata.json``) in the models folders, user
    folders first, each folder's bundles sorted by folder name; duplicates (same name and
    version as an earlier entry) left out."""
    entries: list[CatalogueEntry] = []
    seen: set[tuple[str, str]] = set()
    folders = [(d, "user") for d in user_model_dirs()] + [(d, "shipped")
                                                          for d in shipped_model_dirs()]
    for folder, source in folders:
        try:
            children = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        except OSError:  # a models folder that does not exist (yet) holds nothing
            continue
        for child in children:
            if child.is_dir() and (child / METADATA_FILE).is_file():
                entry = read_entry(child, source)
                if entry.problem is None and (entry.name, entry.version) in seen:
                    continue
                seen.add((entry.name, entry.version))
                entries.append(entry)
    return entries


def read_entry(folder: Path, source: str) -> CatalogueEntry:
    """The catalogue entry of one bundle folder, from its ``metadata.json`` only."""
    try:
        metadata = _read_metadata(folder / METADATA_FILE)
        name, version = metadata["name"], metadata["version"]
        if not (isinstance(name, str) and isinstance(version, str) and name.strip()):
            raise ValueError("'name' and 'version' must be strings")
        stages = metadata.get("stages", {})
        stages = {stage: _stage_summary(spec) for stage, spec in stages.items()} if isinstance(
            stages, dict) else {}
        metrics = metadata.get("metrics", {})
        threshold = (metadata.get("inference") or {}).get("uncertainty_threshold")
        return CatalogueEntry(name=name, version=version, path=folder, source=source,
                              license=str(metadata.get("license", "")),
                              description=str(metadata.get("description", "")),
                              stages=stages, metrics=metrics if isinstance(metrics, dict) else {},
                              uncertainty_threshold=float(threshold) if isinstance(
                                  threshold, (int, float)) else None)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        return CatalogueEntry(name=folder.name, version="", path=folder, source=source,
                              problem=f"{folder / METADATA_FILE}: {error}")


def _read_metadata(path: Path) -> dict[str, Any]:
    if path.is_symlink():
        raise ValueError("is a link; bundles hold regular files only")
    if path.stat().st_size > MAX_METADATA_BYTES:
        raise ValueError(f"larger than {MAX_METADATA_BYTES} bytes")

    def refuse(constant: str):
        raise ValueError(f"{constant} is not valid JSON")

    metadata = json.loads(path.read_text(encoding="utf-8"), parse_constant=refuse)
    if not isinstance(metadata, dict):
        raise ValueError("not a JSON object")
    return metadata


def _stage_summary(spec: Any) -> dict[str, Any]:
    network = spec.get("network", {}) if isinstance(spec, dict) else {}
    return {"spatial_dims": network.get("spatial_dims"), "spacing_mm": spec.get("spacing_mm"),
            "patch_size": spec.get("patch_size")}


_NAME_AT_VERSION = re.compile(r"^(?P<name>[^@/\\]+)@(?P<version>[^@/\\]+)$")


def find_model(name: str, entries: list[CatalogueEntry] | None = None) -> CatalogueEntry:
    """The installed bundle called ``name`` (or ``name@version``); with several versions of
    ``name``, the first one in catalogue order (a user folder before the shipped models).
    ``BundleError`` listing what is installed when there is none."""
    entries = list_models() if entries is None else entries
    match = _NAME_AT_VERSION.match(name)
    wanted, version = (match["name"], match["version"]) if match else (name, None)
    for entry in entries:
        if entry.problem is None and entry.name == wanted and version in (None, entry.version):
            return entry
    installed = ", ".join(e.label for e in entries if e.problem is None) or "none"
    folders = ", ".join(str(d) for d in user_model_dirs())
    raise BundleError(f"{name}: no such bundle folder, and no installed model of that name "
                      f"(installed: {installed}); install one by copying its folder into "
                      f"{folders}, or see `pancreas-ssl-seg models`")


def resolve_model(value: str | os.PathLike | None) -> Path | None:
    """``--model`` as given: an existing folder (or anything that looks like a path) is a bundle
    path, any other text an installed model's name; ``None`` keeps the default model."""
    if value is None:
        return None
    text = str(value)
    path = Path(text).expanduser()
    if path.exists() or os.sep in text or (os.altsep and os.altsep in text) or text.startswith("."):
        return path
    return find_model(text).path
