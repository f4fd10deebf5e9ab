"""Model bundles: a folder with ``metadata.json``, ``model.safetensors`` and ``MODEL_CARD.md``.

Loading never unpickles: weights are read with ``safetensors``. A bundle is refused (``BundleError``)
unless its folder holds exactly those three files, the metadata passes :func:`validate_metadata`,
the weights' SHA-256 matches the one recorded, and every stage's tensors match the network its
config builds, name for name and shape for shape.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import BundleError
from .networks import PancreasUNet, build_network, validate_network_config

FORMAT_NAME = "pancreas-ssl-seg-bundle"
FORMAT_VERSION = 1
METADATA_FILE, WEIGHTS_FILE, CARD_FILE = "metadata.json", "model.safetensors", "MODEL_CARD.md"
BUNDLE_FILES = frozenset({METADATA_FILE, WEIGHTS_FILE, CARD_FILE})
STAGES = ("coarse", "fine")
MAX_METADATA_BYTES = 1 << 20
MAX_WEIGHTS_BYTES = 512 << 20
REQUIRED_KEYS = ("format", "format_version", "name", "version", "license", "labels",
                 "uncertain_region", "intensity", "stages", "inference", "weights",
                 "provenance", "metrics")
REQUIRED_INFERENCE_KEYS = ("tta_flips", "mc_dropout_samples", "uncertainty_threshold",
                           "min_component_fraction", "lesion_dilation_mm", "sw_overlap")
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
    """A validated bundle: metadata plus the weights of each stage."""

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

    def stage(self, name: str) -> StageSpec:
        spec = self.metadata["stages"][name]
        return StageSpec(name=name, network=spec["network"],
                         spacing_mm=tuple(float(s) for s in spec["spacing_mm"]),
                         patch_size=tuple(int(p) for p in spec["patch_size"]),
                         margin_mm=float(spec.get("margin_mm", 0.0)))

    def load_network(self, stage: str, device: torch.device | str = "cpu") -> PancreasUNet:
        """The stage's network with its weights, in eval mode, on ``device``."""
        network = build_network(self.metadata["stages"][stage]["network"])
        network.load_state_dict(self.stage_weights[stage])
        return network.eval().to(device)


def _fail(path: Path, problem: str) -> BundleError:
    return BundleError(f"model bundle {path}: {problem}")


def _require(condition: bool, path: Path, problem: str) -> None:
    if not condition:
        raise _fail(path, problem)


def _is_rgb(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 3
            and all(isinstance(c, int) and 0 <= c <= 255 for c in value))


def _is_code(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(value.get(k), str) and value.get(k)
                                           for k in ("scheme", "code", "meaning"))


def _check_segment_entry(entry: Any, path: Path, where: str) -> None:
    _require(isinstance(entry, dict) and isinstance(entry.get("name"), str) and entry["name"],
             path, f"{where} needs a non-empty name")
    _require(_is_rgb(entry.get("color")), path, f"{where} needs color [r, g, b] in 0..255")
    terminology = entry.get("terminology")
    _require(isinstance(terminology, dict) and _is_code(terminology.get("category"))
             and _is_code(terminology.get("type")), path,
             f"{where} needs terminology.category and terminology.type codes "
             "(scheme, code, meaning)")


def _check_stage(name: str, spec: Any, path: Path) -> None:
    _require(isinstance(spec, dict), path, f"stages.{name} must be an object")
    try:
        validate_network_config(spec.get("network", {}))
    except (ValueError, TypeError) as exc:
        raise _fail(path, f"stages.{name}.network: {exc}") from None
    dims = spec["network"]["spatial_dims"]
    spacing, patch = spec.get("spacing_mm"), spec.get("patch_size")
    _require(isinstance(spacing, list) and len(spacing) == 3
             and all(isinstance(s, (int, float)) and 0.1 <= s <= 20 for s in spacing),
             path, f"stages.{name}.spacing_mm must be 3 numbers in 0.1..20 mm")
    _require(isinstance(patch, list) and len(patch) == dims
             and all(isinstance(p, int) and 8 <= p <= 512 for p in patch),
             path, f"stages.{name}.patch_size must be {dims} integers in 8..512")
    if name == "fine":
        margin = spec.get("margin_mm")
        _require(isinstance(margin, (int, float)) and 0 <= margin <= 200, path,
                 "stages.fine.margin_mm must be a number in 0..200")


def validate_metadata(metadata: Any, path: Path) -> None:
    """Raise ``BundleError`` naming the first way ``metadata`` breaks format version 1."""
    _require(isinstance(metadata, dict), path, "metadata.json must hold a JSON object")
    missing = [key for key in REQUIRED_KEYS if key not in metadata]
    _require(not missing, path, f"metadata.json lacks {missing}")
    _require(metadata["format"] == FORMAT_NAME, path, f"format must be {FORMAT_NAME!r}")
    _require(metadata["format_version"] == FORMAT_VERSION, path,
             f"format_version {metadata['format_version']!r} is not supported "
             f"(this engine reads {FORMAT_VERSION})")
    for key in ("name", "version", "license"):
        _require(isinstance(metadata[key], str) and metadata[key], path, f"{key} must be a string")
    labels = metadata["labels"]
    values = [lbl.get("value") if isinstance(lbl, dict) else None for lbl in labels] \
        if isinstance(labels, list) else None
    _require(values == [0, 1, 2],
             path, "labels must list values 0 (background), 1 (pancreas), 2 (lesion) in order")
    for label in labels[1:]:
        _check_segment_entry(label, path, f"label {label['value']}")
    _check_segment_entry(metadata["uncertain_region"], path, "uncertain_region")
    window = metadata["intensity"].get("hu_window") if isinstance(metadata["intensity"],
                                                                  dict) else None
    _require(isinstance(window, list) and len(window) == 2
             and all(isinstance(v, (int, float)) for v in window) and window[0] < window[1],
             path, "intensity.hu_window must be [low, high] HU with low < high")
    stages = metadata["stages"]
    _require(isinstance(stages, dict) and set(stages) == set(STAGES), path,
             f"stages must be exactly {list(STAGES)}")
    for name in STAGES:
        _check_stage(name, stages[name], path)
    inference = metadata["inference"]
    _require(isinstance(inference, dict), path, "inference must be an object")
    missing = [key for key in REQUIRED_INFERENCE_KEYS if key not in inference]
    _require(not missing, path, f"inference lacks {missing}")
    _require(0 < inference["uncertainty_threshold"] < 1, path,
             "inference.uncertainty_threshold must be in (0, 1)")
    weights = metadata["weights"]
    _require(isinstance(weights, dict) and weights.get("file") == WEIGHTS_FILE
             and isinstance(weights.get("sha256"), str) and len(weights["sha256"]) == 64,
             path, f"weights must be {{'file': '{WEIGHTS_FILE}', 'sha256': <64 hex digits>}}")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_metadata(path: Path) -> dict[str, Any]:
    metadata_path = path / METADATA_FILE
    size = metadata_path.stat().st_size
    _require(size <= MAX_METADATA_BYTES, path,
             f"{METADATA_FILE} is {size} bytes; at most {MAX_METADATA_BYTES} are accepted")
    try:
        return json.loads(metadata_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(path, f"{METADATA_FILE} is not valid JSON ({exc})") from None


def _split_stage_weights(tensors: dict[str, torch.Tensor], metadata: dict[str, Any],
                         path: Path) -> dict[str, dict[str, torch.Tensor]]:
    stage_weights: dict[str, dict[str, torch.Tensor]] = {}
    for stage in STAGES:
        expected = build_network(metadata["stages"][stage]["network"]).state_dict()
        prefix = f"{stage}."
        found = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        missing = sorted(set(expected) - set(found))
        unexpected = sorted(set(found) - set(expected))
        _require(not missing, path, f"{WEIGHTS_FILE} lacks {stage} tensors, e.g. {missing[:3]}")
        _require(not unexpected, path,
                 f"{WEIGHTS_FILE} has {stage} tensors the network does not, e.g. {unexpected[:3]}")
        for key, tensor in found.items():
            _require(tuple(tensor.shape) == tuple(expected[key].shape), path,
                     f"{WEIGHTS_FILE}: {stage}.{key} has shape {tuple(tensor.shape)}, "
                     f"the network needs {tuple(expected[key].shape)}")
            _require(tensor.dtype == expected[key].dtype, path,
                     f"{WEIGHTS_FILE}: {stage}.{key} has dtype {tensor.dtype}, "
                     f"expected {expected[key].dtype}")
        stage_weights[stage] = found
    stray = [k for k in tensors if not k.startswith(tuple(f"{s}." for s in STAGES))]
    _require(not stray, path, f"{WEIGHTS_FILE} has tensors of no stage, e.g. {stray[:3]}")
    return stage_weights


def load_bundle(path: str | os.PathLike | None = None) -> ModelBundle:
    """Load and validate a bundle folder (``None``: the default bundle)."""
    path = Path(path) if path is not None else default_bundle_path()
    _require(path.is_dir(), path, "not a folder (a bundle is a folder with "
             f"{', '.join(sorted(BUNDLE_FILES))})")
    entries = {entry.name: entry for entry in path.iterdir()}
    extra = sorted(set(entries) - BUNDLE_FILES)
    _require(not extra, path, f"unexpected files {extra}; a bundle holds only "
             f"{sorted(BUNDLE_FILES)} (pickles and code are never loaded)")
    missing = sorted(BUNDLE_FILES - set(entries))
    _require(not missing, path, f"missing {missing}")
    for name, entry in entries.items():
        _require(entry.is_file() and not entry.is_symlink(), path,
                 f"{name} must be a regular file, not a link or folder")
    metadata = _read_metadata(path)
    validate_metadata(metadata, path)
    weights_path = path / WEIGHTS_FILE
    _require(weights_path.stat().st_size <= MAX_WEIGHTS_BYTES, path,
             f"{WEIGHTS_FILE} is larger than {MAX_WEIGHTS_BYTES >> 20} MB")
    digest = sha256_of(weights_path)
    _require(digest == metadata["weights"]["sha256"], path,
             f"{WEIGHTS_FILE} SHA-256 {digest[:12]}… does not match the metadata's "
             f"{metadata['weights']['sha256'][:12]}… (changed or corrupted weights)")
    try:
        tensors = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise _fail(path, f"{WEIGHTS_FILE} is not a valid safetensors file ({exc})") from None
    return ModelBundle(path=path, metadata=metadata,
                       stage_weights=_split_stage_weights(tensors, metadata, path))


def save_bundle(out_dir: str | os.PathLike, metadata: dict[str, Any],
                stage_state_dicts: dict[str, dict[str, torch.Tensor]], model_card: str) -> Path:
    """Write a bundle atomically (temporary folder, then rename) and return its path.

    ``metadata`` needs every key but ``weights``, which is filled in here. The written bundle is
    loaded back once, so a bundle that this engine would refuse is never left behind.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} exists; remove it or choose another folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        tensors = {f"{stage}.{key}": value.detach().cpu().contiguous()
                   for stage in STAGES for key, value in stage_state_dicts[stage].items()}
        save_file(tensors, str(tmp / WEIGHTS_FILE))
        metadata = {**metadata, "weights": {"file": WEIGHTS_FILE,
                                            "sha256": sha256_of(tmp / WEIGHTS_FILE)}}
        (tmp / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
        (tmp / CARD_FILE).write_text(model_card, encoding="utf-8")
        load_bundle(tmp)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def default_bundle_path() -> Path:
    """The shipped model: ``$PANCREAS_SSL_SEG_MODEL`` if set, else ``Resources/Models/…``.

    Looks beside the source tree (checkout, editable install, Slicer "additional module path")
    and in the extension's installed share folder.
    """
    if os.environ.get(MODEL_PATH_ENV):
        return Path(os.environ[MODEL_PATH_ENV])
    here = Path(__file__).resolve().parent
    candidates = [here.parents[1] / "Resources" / "Models" / DEFAULT_BUNDLE_NAME,
                  here.parent / "Resources" / "Models" / DEFAULT_BUNDLE_NAME]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return candidates[0]
