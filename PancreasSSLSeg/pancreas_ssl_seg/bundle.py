"""Model bundles: a folder with ``metadata.json``, ``model.safetensors`` and ``MODEL_CARD.md``.

Bundles travel by email and shared drives, so loading treats them as hostile. Nothing is ever
unpickled: weights are parsed by ``safetensors``. A bundle is refused (``BundleError`` naming the
folder and the problem) unless its folder holds exactly those three regular files (no links, no
pickles, no code), each file's size is within its limit before it is read, the metadata is strict
JSON that passes :func:`.bundle_metadata.validate_metadata` (bounded network sizes and inference
settings), the weights' SHA-256 matches the one recorded, and the safetensors header declares
exactly the tensors (names, shapes, dtypes) of the networks the stage configs build
(:mod:`.bundle_weights`). The format's names and limits are in :mod:`.bundle_format`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from .bundle_format import (BUNDLE_FILES, CARD_FILE, MAX_METADATA_BYTES, METADATA_FILE,
                            WEIGHTS_FILE, bundle_error, member_key, require, short, stage_members)
from .bundle_metadata import validate_metadata
from .bundle_weights import load_weights, parse_json, read_bounded
from .catalogue import shipped_model_places
from .hashing import sha256_of
from .networks import PancreasUNet, build_network

DEFAULT_BUNDLE_NAME = "pancreas-demo"
MODEL_PATH_ENV = "PANCREAS_SSL_SEG_MODEL"


@dataclass(frozen=True)
class StageSpec:
    """One cascade stage as the bundle declares it."""

    name: str
    network: dict[str, Any]
    spacing_mm: tuple[float, float, float]
    patch_size: tuple[int, ...]
    margin_mm: float = 0.0

    @property
    def spatial_dims(self) -> int:
        return int(self.network["spatial_dims"])


@dataclass(frozen=True)
class ModelBundle:
    """A validated bundle: metadata plus the weights of each stage's networks, keyed by
    ``bundle_format.member_key`` (``"fine"`` is the fine stage's first or only network)."""

    path: Path
    metadata: dict[str, Any]
    stage_weights: dict[str, dict[str, torch.Tensor]]

    @property
    def name(self) -> str:
        return self.metadata["name"]

    @property
    def version(self) -> str:
        return self.metadata["version"]

    @property
    def labels(self) -> list[dict[str, Any]]:
        return self.metadata["labels"]

    @property
    def inference(self) -> dict[str, Any]:
        return self.metadata["inference"]

    @property
    def hu_window(self) -> tuple[float, float]:
        lo, hi = self.metadata["intensity"]["hu_window"]
        return float(lo), float(hi)

    @property
    def intensity_reference(self) -> str:
        """Where ``normalize_ct``'s soft-tissue reference is measured, as in training:
        ``"slice"`` (each axial slice its own) or ``"scan"`` (bundles that predate the key)."""
        return self.metadata["intensity"].get("reference", "scan")

    def stage(self, name: str) -> StageSpec:
        spec = self.metadata["stages"][name]
        return StageSpec(name=name, network=spec["network"],
                         spacing_mm=tuple(float(s) for s in spec["spacing_mm"]),
                         patch_size=tuple(int(p) for p in spec["patch_size"]),
                         margin_mm=float(spec.get("margin_mm", 0.0)))

    def members(self, stage: str) -> int:
        """How many networks (ensemble members) the stage holds."""
        return stage_members(self.metadata, stage)

    def load_network(self, stage: str, device: torch.device | str = "cpu",
                     member: int = 0) -> PancreasUNet:
        """The stage's network (member ``member`` of an ensemble) with its weights, in eval
        mode, on ``device``."""
        network = build_network(self.metadata["stages"][stage]["network"])
        network.load_state_dict(self.stage_weights[member_key(stage, member)])
        return network.eval().to(device)


def _read_metadata(path: Path) -> dict[str, Any]:
    data = read_bounded(path / METADATA_FILE, MAX_METADATA_BYTES, path)
    try:
        return parse_json(data)
    except (UnicodeError, ValueError, RecursionError) as exc:
        raise bundle_error(path, f"{METADATA_FILE} is not valid JSON "
                           f"({short(str(exc), 120)})") from None


def load_bundle(path: str | os.PathLike | None = None) -> ModelBundle:
    """Load and validate a bundle folder (``None``: the default bundle)."""
    path = Path(path) if path is not None else default_bundle_path()
    require(path.is_dir(), path, "not a folder (a bundle is a folder with "
            f"{', '.join(sorted(BUNDLE_FILES))})")
    try:
        entries = {entry.name: entry for entry in path.iterdir()}
    except OSError as exc:
        raise bundle_error(path, f"folder cannot be listed ({exc.strerror})") from None
    extra = sorted(set(entries) - BUNDLE_FILES)
    require(not extra, path, f"unexpected files {[short(e) for e in extra[:5]]}; a bundle "
            f"holds only {sorted(BUNDLE_FILES)} (pickles and code are never loaded)")
    missing = sorted(BUNDLE_FILES - set(entries))
    require(not missing, path, f"missing {missing}")
    for name, entry in entries.items():
        # A link could point anywhere (../../, /dev/zero); a FIFO would block the read.
        require(entry.is_file() and not entry.is_symlink(), path,
                f"{name} must be a regular file, not a link or folder")
    metadata = _read_metadata(path)
    validate_metadata(metadata, path)
    return ModelBundle(path=path, metadata=metadata, stage_weights=load_weights(path, metadata))


def save_bundle(out_dir: str | os.PathLike, metadata: dict[str, Any],
                stage_state_dicts: dict[str, dict[str, torch.Tensor]], model_card: str,
                half_precision: bool = False) -> Path:
    """Write a bundle atomically (temporary folder, then rename) and return its path.

    ``metadata`` needs every key but ``weights``, which is filled in here;
    ``stage_state_dicts`` is keyed like ``ModelBundle.stage_weights``. The written bundle is
    loaded back once, so a bundle that this engine would refuse is never left behind.
    ``half_precision`` stores float32 tensors as float16 (half the file; loaded as float32).
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} exists; remove it or choose another folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        tensors = {f"{group}.{key}": value.detach().cpu().contiguous()
                   for group, state in stage_state_dicts.items() for key, value in state.items()}
        if half_precision:
            tensors = {k: v.half() if v.dtype == torch.float32 else v for k, v in tensors.items()}
        save_file(tensors, str(tmp / WEIGHTS_FILE))
        metadata = {**metadata, "weights": {"file": WEIGHTS_FILE,
                                            "sha256": sha256_of(tmp / WEIGHTS_FILE),
                                            "dtype": "float16" if half_precision else "float32"}}
        (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
        (tmp / CARD_FILE).write_text(model_card, encoding="utf-8")
        load_bundle(tmp)
        _default_permissions(tmp)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _default_permissions(folder: Path) -> None:
    """What a plain mkdir and file write would give (mkdtemp and safetensors make them private,
    which would hide a model installed for a shared server from its other users)."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for item in folder.iterdir():
        item.chmod(0o666 & ~umask)


def default_bundle_path() -> Path:
    """The shipped model: ``$PANCREAS_SSL_SEG_MODEL`` if set, else ``Resources/Models/…`` in the
    first of the catalogue's shipped-model places that holds it."""
    if os.environ.get(MODEL_PATH_ENV):
        return Path(os.environ[MODEL_PATH_ENV])
    candidates = [place / DEFAULT_BUNDLE_NAME for place in shipped_model_places()]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return candidates[0]
