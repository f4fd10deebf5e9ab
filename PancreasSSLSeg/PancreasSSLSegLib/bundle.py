"""Model bundles: a folder with ``metadata.json``, ``model.safetensors`` and ``MODEL_CARD.md``.

Bundles travel by email and shared drives, so loading treats them as hostile. Nothing is ever
unpickled: weights are parsed by ``safetensors``. A bundle is refused (``BundleError`` naming the
folder and the problem) unless its folder holds exactly those three regular files (no links, no
pickles, no code), each file's size is within its limit before it is read, the metadata is strict
JSON that passes :func:`validate_metadata` (bounded network sizes and inference settings), the
weights' SHA-256 matches the one recorded, and the safetensors header declares exactly the
tensors (names, shapes, dtypes) of the networks the stage configs build.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from .errors import BundleError
from .hashing import sha256_of
from .networks import PancreasUNet, build_network, state_shapes, validate_network_config

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
INTENSITY_REFERENCES = ("slice", "scan")
# Bounds that keep a hostile bundle from asking for endless passes or a giant network.
# Optional keys (absent: the behaviour of bundles that predate them, see cascade.py).
INFERENCE_RANGES = {"min_component_fraction": (0, 1), "lesion_dilation_mm": (0, 100),
                    "sw_overlap": (0, 0.95), "region_min_volume_ml": (0, 1000),
                    "coarse_component_fraction": (0, 1), "coarse_organ_threshold": (0, 1),
                    "lesion_probability_threshold": (0, 1),
                    "lesion_min_area_mm2": (0, 10000), "max_component_gap_mm": (0, 1000)}
MAX_TTA_FLIPS = 8
MAX_MC_DROPOUT_SAMPLES = 64
MAX_NETWORK_LEVELS = 8
LABEL_VALUES = (0, 1, 2)
SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                      torch.float64: "F64", torch.int64: "I64", torch.int32: "I32",
                      torch.uint8: "U8", torch.bool: "BOOL"}
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


def _short(value: Any, limit: int = 60) -> str:
    """``repr`` cut to ``limit`` characters: hostile metadata may hold megabyte-long values."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    # Metadata is parsed with non-finite floats refused, so any float here is finite.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_rgb(value: Any) -> bool:
    return (isinstance(value, list) and len(value) == 3
            and all(_is_int(c) and 0 <= c <= 255 for c in value))


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


def _check_network(where: str, config: Any, path: Path) -> None:
    """Stricter than ``validate_network_config``: the engine feeds one CT channel and reads one
    output per label, and a hostile config must not be able to request a giant network."""
    _require(isinstance(config, dict), path, f"{where} must be an object")
    try:
        validate_network_config(config)
    except (ValueError, TypeError) as exc:
        raise _fail(path, f"{where}: {exc}") from None
    _require(_is_int(config["spatial_dims"]), path, f"{where}.spatial_dims must be 2 or 3")
    _require(_is_int(config["in_channels"]) and config["in_channels"] == 1, path,
             f"{where}.in_channels must be 1 (one CT channel)")
    _require(_is_int(config["out_channels"]) and config["out_channels"] == len(LABEL_VALUES),
             path, f"{where}.out_channels must be {len(LABEL_VALUES)} (one per label)")
    channels, strides = config["channels"], config["strides"]
    _require(isinstance(channels, list) and len(channels) <= MAX_NETWORK_LEVELS, path,
             f"{where}.channels must be a list of at most {MAX_NETWORK_LEVELS} levels")
    _require(isinstance(strides, list) and all(_is_int(s) and 1 <= s <= 4 for s in strides),
             path, f"{where}.strides must be a list of integers in 1..4")
    dropout = config.get("dropout", 0.0)
    _require(dropout is None or (_is_number(dropout) and 0 <= dropout < 1), path,
             f"{where}.dropout must be a number in [0, 1)")
    heads = config.get("heads", [])
    _require(isinstance(heads, list) and all(isinstance(h, str) for h in heads), path,
             f"{where}.heads must be a list of head names")
    projection_dim = config.get("projection_dim", 64)
    _require(_is_int(projection_dim) and 1 <= projection_dim <= 1024, path,
             f"{where}.projection_dim must be an integer in 1..1024")


def _check_stage(name: str, spec: Any, path: Path) -> None:
    _require(isinstance(spec, dict), path, f"stages.{name} must be an object")
    _check_network(f"stages.{name}.network", spec.get("network"), path)
    dims = spec["network"]["spatial_dims"]
    spacing, patch = spec.get("spacing_mm"), spec.get("patch_size")
    _require(isinstance(spacing, list) and len(spacing) == 3
             and all(_is_number(s) and 0.1 <= s <= 20 for s in spacing),
             path, f"stages.{name}.spacing_mm must be 3 numbers in 0.1..20 mm")
    _require(isinstance(patch, list) and len(patch) == dims
             and all(_is_int(p) and 8 <= p <= 512 for p in patch),
             path, f"stages.{name}.patch_size must be {dims} integers in 8..512")
    if name == "fine":
        margin = spec.get("margin_mm")
        _require(_is_number(margin) and 0 <= margin <= 200, path,
                 "stages.fine.margin_mm must be a number in 0..200")


def _check_scales(inference: dict, path: Path) -> None:
    scales = inference.get("tta_scales", [1.0])
    _require(isinstance(scales, list) and 1 <= len(scales) <= MAX_TTA_FLIPS
             and all(_is_number(s) and 0.5 <= s <= 2.0 for s in scales), path,
             f"inference.tta_scales must be 1..{MAX_TTA_FLIPS} numbers in 0.5..2")


def _is_flip(axes: Any) -> bool:
    return (isinstance(axes, list) and all(_is_int(a) and 0 <= a <= 2 for a in axes)
            and len(set(axes)) == len(axes))


def _check_inference(inference: Any, path: Path) -> None:
    _require(isinstance(inference, dict), path, "inference must be an object")
    missing = [key for key in REQUIRED_INFERENCE_KEYS if key not in inference]
    _require(not missing, path, f"inference lacks {missing}")
    flips = inference["tta_flips"]
    _require(isinstance(flips, list) and 1 <= len(flips) <= MAX_TTA_FLIPS
             and all(_is_flip(axes) for axes in flips), path,
             f"inference.tta_flips must be 1..{MAX_TTA_FLIPS} lists of distinct array axes 0..2")
    _check_scales(inference, path)
    samples = inference["mc_dropout_samples"]
    _require(_is_int(samples) and 0 <= samples <= MAX_MC_DROPOUT_SAMPLES, path,
             f"inference.mc_dropout_samples must be an integer in 0..{MAX_MC_DROPOUT_SAMPLES}")
    threshold = inference["uncertainty_threshold"]
    _require(_is_number(threshold) and 0 < threshold < 1, path,
             "inference.uncertainty_threshold must be a number in (0, 1)")
    for key, (low, high) in INFERENCE_RANGES.items():
        if key in inference:
            _require(_is_number(inference[key]) and low <= inference[key] <= high, path,
                     f"inference.{key} must be a number in {low}..{high}")
    _check_quality(inference.get("quality", {}), path)


def _check_quality(quality: Any, path: Path) -> None:
    """``inference.quality``: the verdict's thresholds (``quality.DEFAULT_QUALITY`` names them)."""
    from .quality import DEFAULT_QUALITY

    _require(isinstance(quality, dict), path, "inference.quality must be an object")
    unknown = sorted(set(quality) - set(DEFAULT_QUALITY))
    _require(not unknown, path, f"inference.quality has unknown keys {unknown}; known: "
             f"{sorted(DEFAULT_QUALITY)}")
    for key, value in quality.items():
        _require(_is_number(value) and math.isfinite(value), path,
                 f"inference.quality.{key} must be a finite number")
    merged = {**DEFAULT_QUALITY, **quality}
    _require(0 <= merged["check_score"] <= merged["ok_score"] <= 1, path,
             "inference.quality needs 0 <= check_score <= ok_score <= 1")


def validate_metadata(metadata: Any, path: Path) -> None:
    """Raise ``BundleError`` naming the first way ``metadata`` breaks format version 1."""
    _require(isinstance(metadata, dict), path, "metadata.json must hold a JSON object")
    missing = [key for key in REQUIRED_KEYS if key not in metadata]
    _require(not missing, path, f"metadata.json lacks {missing}")
    _require(metadata["format"] == FORMAT_NAME, path, f"format must be {FORMAT_NAME!r}")
    _require(_is_int(metadata["format_version"]) and metadata["format_version"] == FORMAT_VERSION,
             path, f"format_version {_short(metadata['format_version'])} is not supported "
             f"(this engine reads {FORMAT_VERSION})")
    for key in ("name", "version", "license"):
        _require(isinstance(metadata[key], str) and metadata[key], path, f"{key} must be a string")
    _require(isinstance(metadata.get("description", ""), str), path,
             "description must be a string")
    for key in ("provenance", "metrics"):
        _require(isinstance(metadata[key], dict), path, f"{key} must be an object")
    labels = metadata["labels"]
    values = [lbl.get("value") if isinstance(lbl, dict) else None for lbl in labels] \
        if isinstance(labels, list) else None
    _require(values == list(LABEL_VALUES) and all(_is_int(v) for v in values),
             path, "labels must list values 0 (background), 1 (pancreas), 2 (lesion) in order")
    for label in labels[1:]:
        _check_segment_entry(label, path, f"label {label['value']}")
    _check_segment_entry(metadata["uncertain_region"], path, "uncertain_region")
    window = metadata["intensity"].get("hu_window") if isinstance(metadata["intensity"],
                                                                  dict) else None
    _require(isinstance(window, list) and len(window) == 2
             and all(_is_number(v) for v in window) and window[0] < window[1],
             path, "intensity.hu_window must be [low, high] HU with low < high")
    _require(metadata["intensity"].get("reference", "scan") in INTENSITY_REFERENCES, path,
             f"intensity.reference must be one of {list(INTENSITY_REFERENCES)}")
    stages = metadata["stages"]
    _require(isinstance(stages, dict) and set(stages) == set(STAGES), path,
             f"stages must be exactly {list(STAGES)}")
    for name in STAGES:
        _check_stage(name, stages[name], path)
    _check_inference(metadata["inference"], path)
    weights = metadata["weights"]
    _require(isinstance(weights, dict) and weights.get("file") == WEIGHTS_FILE
             and isinstance(weights.get("sha256"), str) and len(weights["sha256"]) == 64,
             path, f"weights must be {{'file': '{WEIGHTS_FILE}', 'sha256': <64 hex digits>}}")


def _read_bounded(file_path: Path, limit: int, path: Path) -> bytes:
    """The file's bytes, refused from its size BEFORE reading (a 1 GB file is never read in), and
    read at most ``limit + 1`` bytes in case it grew meanwhile."""
    try:
        size = file_path.stat().st_size
        _require(size <= limit, path,
                 f"{file_path.name} is {size} bytes; at most {limit} are accepted")
        with open(file_path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise _fail(path, f"{file_path.name} cannot be read ({exc.strerror})") from None
    _require(len(data) <= limit, path, f"{file_path.name} is over {limit} bytes")
    return data


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON value")


def _parse_json(data: bytes) -> Any:
    """Strict JSON: no NaN/Infinity, no overflowing numbers, no unpaired surrogates."""
    value = json.loads(data.decode("utf-8"), parse_float=_finite_float,
                       parse_constant=_refuse_constant)
    # A "\ud800" escape parses to a string no file, report or Slicer node can hold.
    json.dumps(value, ensure_ascii=False).encode("utf-8")
    return value


def _read_metadata(path: Path) -> dict[str, Any]:
    data = _read_bounded(path / METADATA_FILE, MAX_METADATA_BYTES, path)
    try:
        return _parse_json(data)
    except (UnicodeError, ValueError, RecursionError) as exc:
        raise _fail(path, f"{METADATA_FILE} is not valid JSON ({_short(str(exc), 120)})") from None


def _expected_tensors(metadata: dict[str, Any], path: Path) -> dict[str, tuple[tuple, str]]:
    """``{"<stage>.<key>": (shape, safetensors dtype)}`` of the networks the metadata describes.

    From the config alone (``networks.state_shapes``): no network is built, so a config
    describing a giant network costs nothing before it is refused, and checking a bundle
    (``info``, ``models``) does not import MONAI. Every parameter is float32.
    """
    expected: dict[str, tuple[tuple, str]] = {}
    for stage in STAGES:
        try:
            shapes = state_shapes(metadata["stages"][stage]["network"])
        except (ValueError, TypeError, RuntimeError) as exc:
            raise _fail(path, f"stages.{stage}.network cannot be built ({exc})") from None
        expected.update({f"{stage}.{key}": (shape, SAFETENSORS_DTYPES[torch.float32])
                         for key, shape in shapes.items()})
    total_bytes = sum(math.prod(shape) * 4 for shape, _ in expected.values())
    _require(total_bytes <= MAX_WEIGHTS_BYTES, path,
             f"the networks described need {total_bytes >> 20} MB of weights; at most "
             f"{MAX_WEIGHTS_BYTES >> 20} MB are accepted")
    return expected


def _declared_tensors(data: bytes, path: Path) -> dict[str, tuple[tuple, str]]:
    """``{name: (shape, dtype)}`` from the safetensors header, before any tensor is read.

    Layout: 8-byte little-endian header length, JSON header, tensor bytes.
    """
    _require(len(data) >= 8, path,
             f"{WEIGHTS_FILE} is {len(data)} bytes, too short for safetensors")
    (header_bytes,) = struct.unpack("<Q", data[:8])
    _require(header_bytes <= len(data) - 8, path,
             f"{WEIGHTS_FILE} header declares {header_bytes} bytes; the file has {len(data)}")
    try:
        header = _parse_json(data[8:8 + header_bytes])
    except (UnicodeError, ValueError, RecursionError) as exc:
        raise _fail(path, f"{WEIGHTS_FILE} header is not valid JSON ({_short(str(exc), 120)})") \
            from None
    _require(isinstance(header, dict), path, f"{WEIGHTS_FILE} header must be a JSON object")
    header.pop("__metadata__", None)
    declared = {}
    for name, entry in header.items():
        shape = entry.get("shape") if isinstance(entry, dict) else None
        _require(isinstance(shape, list) and all(_is_int(n) and n >= 0 for n in shape)
                 and isinstance(entry.get("dtype"), str), path,
                 f"{WEIGHTS_FILE}: tensor {_short(name)} lacks a valid dtype and shape")
        declared[name] = (tuple(shape), entry["dtype"])
    return declared


def _check_declared_tensors(declared: dict[str, tuple[tuple, str]],
                            expected: dict[str, tuple[tuple, str]], path: Path) -> None:
    for stage in STAGES:
        prefix = f"{stage}."
        missing = sorted(k for k in expected if k.startswith(prefix) and k not in declared)
        unexpected = sorted(k for k in declared if k.startswith(prefix) and k not in expected)
        _require(not missing, path, f"{WEIGHTS_FILE} lacks {stage} tensors, e.g. {missing[:3]}")
        _require(not unexpected, path, f"{WEIGHTS_FILE} has {stage} tensors the network does "
                 f"not, e.g. {[_short(k) for k in unexpected[:3]]}")
    stray = [k for k in declared if not k.startswith(tuple(f"{s}." for s in STAGES))]
    _require(not stray, path,
             f"{WEIGHTS_FILE} has tensors of no stage, e.g. {[_short(k) for k in stray[:3]]}")
    for key, (shape, dtype) in declared.items():
        want_shape, want_dtype = expected[key]
        _require(shape == want_shape, path, f"{WEIGHTS_FILE}: {key} has shape {_short(shape)}, "
                 f"the network needs {want_shape}")
        _require(dtype == want_dtype or (want_dtype, dtype) == ("F32", "F16"), path,
                 f"{WEIGHTS_FILE}: {key} has dtype {_short(dtype)}, expected {want_dtype}"
                 + (" or F16" if want_dtype == "F32" else ""))


def _load_weights(path: Path, metadata: dict[str, Any]) -> dict[str, dict[str, torch.Tensor]]:
    """Hash, header check and parse all use the same bytes: the file cannot change in between."""
    expected = _expected_tensors(metadata, path)
    data = _read_bounded(path / WEIGHTS_FILE, MAX_WEIGHTS_BYTES, path)
    digest = hashlib.sha256(data).hexdigest()
    _require(digest == metadata["weights"]["sha256"], path,
             f"{WEIGHTS_FILE} SHA-256 {digest[:12]}… does not match the metadata's "
             f"{metadata['weights']['sha256'][:12]}… (changed or corrupted weights)")
    _check_declared_tensors(_declared_tensors(data, path), expected, path)
    try:
        tensors = load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise _fail(path, f"{WEIGHTS_FILE} is not a valid safetensors file "
                    f"({_short(str(exc), 120)})") from None
    # Half-precision weights (half the file) are computed with in float32 like all others.
    return {stage: {k[len(stage) + 1:]: v.float() if v.dtype == torch.float16 else v
                    for k, v in tensors.items() if k.startswith(f"{stage}.")}
            for stage in STAGES}


def load_bundle(path: str | os.PathLike | None = None) -> ModelBundle:
    """Load and validate a bundle folder (``None``: the default bundle)."""
    path = Path(path) if path is not None else default_bundle_path()
    _require(path.is_dir(), path, "not a folder (a bundle is a folder with "
             f"{', '.join(sorted(BUNDLE_FILES))})")
    try:
        entries = {entry.name: entry for entry in path.iterdir()}
    except OSError as exc:
        raise _fail(path, f"folder cannot be listed ({exc.strerror})") from None
    extra = sorted(set(entries) - BUNDLE_FILES)
    _require(not extra, path, f"unexpected files {[_short(e) for e in extra[:5]]}; a bundle "
             f"holds only {sorted(BUNDLE_FILES)} (pickles and code are never loaded)")
    missing = sorted(BUNDLE_FILES - set(entries))
    _require(not missing, path, f"missing {missing}")
    for name, entry in entries.items():
        # A link could point anywhere (../../, /dev/zero); a FIFO would block the read.
        _require(entry.is_file() and not entry.is_symlink(), path,
                 f"{name} must be a regular file, not a link or folder")
    metadata = _read_metadata(path)
    validate_metadata(metadata, path)
    return ModelBundle(path=path, metadata=metadata, stage_weights=_load_weights(path, metadata))


def save_bundle(out_dir: str | os.PathLike, metadata: dict[str, Any],
                stage_state_dicts: dict[str, dict[str, torch.Tensor]], model_card: str,
                half_precision: bool = False) -> Path:
    """Write a bundle atomically (temporary folder, then rename) and return its path.

    ``metadata`` needs every key but ``weights``, which is filled in here. The written bundle is
    loaded back once, so a bundle that this engine would refuse is never left behind.
    ``half_precision`` stores float32 tensors as float16 (half the file; loaded as float32).
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"{out_dir} exists; remove it or choose another folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        tensors = {f"{stage}.{key}": value.detach().cpu().contiguous()
                   for stage in STAGES for key, value in stage_state_dicts[stage].items()}
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
