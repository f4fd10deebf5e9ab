"""Safe reading of a bundle's files: bounded reads, strict JSON, and weights that are never
unpickled.

Each file's size is checked before it is read; JSON refuses NaN, Infinity, overflowing numbers and
unpaired surrogates; the weights' SHA-256 must match the metadata's, and the safetensors header
must declare exactly the tensors (names, shapes, dtypes) of the networks the stage configs build
before ``safetensors`` parses a byte of them.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors

from .bundle_format import (MAX_WEIGHTS_BYTES, WEIGHTS_FILE, bundle_error, is_int, require,
                            short, weight_keys)
from .networks import state_shapes

SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
                      torch.float64: "F64", torch.int64: "I64", torch.int32: "I32",
                      torch.uint8: "U8", torch.bool: "BOOL"}


def read_bounded(file_path: Path, limit: int, path: Path) -> bytes:
    """The file's bytes, refused from its size BEFORE reading (a 1 GB file is never read in), and
    read at most ``limit + 1`` bytes in case it grew meanwhile. ``path``: the bundle folder."""
    try:
        size = file_path.stat().st_size
        require(size <= limit, path,
                f"{file_path.name} is {size} bytes; at most {limit} are accepted")
        with open(file_path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise bundle_error(path, f"{file_path.name} cannot be read ({exc.strerror})") from None
    require(len(data) <= limit, path, f"{file_path.name} is over {limit} bytes")
    return data


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON value")


def parse_json(data: bytes) -> Any:
    """Strict JSON: no NaN/Infinity, no overflowing numbers, no unpaired surrogates."""
    value = json.loads(data.decode("utf-8"), parse_float=_finite_float,
                       parse_constant=_refuse_constant)
    # A "\ud800" escape parses to a string no file, report or Slicer node can hold.
    json.dumps(value, ensure_ascii=False).encode("utf-8")
    return value


def _expected_tensors(metadata: dict[str, Any], path: Path) -> dict[str, tuple[tuple, str]]:
    """``{"<member key>.<key>": (shape, safetensors dtype)}`` of the networks the metadata
    describes (``bundle_format.member_key``: one per ensemble member of each stage).

    From the config alone (``networks.state_shapes``): no network is built, so a config
    describing a giant network costs nothing before it is refused, and checking a bundle
    (``info``, ``models``) does not import MONAI. Every parameter is float32.
    """
    expected: dict[str, tuple[tuple, str]] = {}
    for stage, group in weight_keys(metadata):
        try:
            shapes = state_shapes(metadata["stages"][stage]["network"])
        except (ValueError, TypeError, RuntimeError) as exc:
            raise bundle_error(path, f"stages.{stage}.network cannot be built ({exc})") from None
        expected.update({f"{group}.{key}": (shape, SAFETENSORS_DTYPES[torch.float32])
                         for key, shape in shapes.items()})
    total_bytes = sum(math.prod(shape) * 4 for shape, _ in expected.values())
    require(total_bytes <= MAX_WEIGHTS_BYTES, path,
            f"the networks described need {total_bytes >> 20} MB of weights; at most "
            f"{MAX_WEIGHTS_BYTES >> 20} MB are accepted")
    return expected


def _declared_tensors(data: bytes, path: Path) -> dict[str, tuple[tuple, str]]:
    """``{name: (shape, dtype)}`` from the safetensors header, before any tensor is read.

    Layout: 8-byte little-endian header length, JSON header, tensor bytes.
    """
    require(len(data) >= 8, path,
            f"{WEIGHTS_FILE} is {len(data)} bytes, too short for safetensors")
    (header_bytes,) = struct.unpack("<Q", data[:8])
    require(header_bytes <= len(data) - 8, path,
            f"{WEIGHTS_FILE} header declares {header_bytes} bytes; the file has {len(data)}")
    try:
        header = parse_json(data[8:8 + header_bytes])
    except (UnicodeError, ValueError, RecursionError) as exc:
        raise bundle_error(path, f"{WEIGHTS_FILE} header is not valid JSON "
                           f"({short(str(exc), 120)})") from None
    require(isinstance(header, dict), path, f"{WEIGHTS_FILE} header must be a JSON object")
    header.pop("__metadata__", None)
    declared = {}
    for name, entry in header.items():
        shape = entry.get("shape") if isinstance(entry, dict) else None
        require(isinstance(shape, list) and all(is_int(n) and n >= 0 for n in shape)
                and isinstance(entry.get("dtype"), str), path,
                f"{WEIGHTS_FILE}: tensor {short(name)} lacks a valid dtype and shape")
        declared[name] = (tuple(shape), entry["dtype"])
    return declared


def _check_declared_tensors(declared: dict[str, tuple[tuple, str]],
                            expected: dict[str, tuple[tuple, str]], groups: list[str],
                            path: Path) -> None:
    for group in groups:
        prefix = f"{group}."
        missing = sorted(k for k in expected if k.startswith(prefix) and k not in declared)
        unexpected = sorted(k for k in declared if k.startswith(prefix) and k not in expected)
        require(not missing, path, f"{WEIGHTS_FILE} lacks {group} tensors, e.g. {missing[:3]}")
        require(not unexpected, path, f"{WEIGHTS_FILE} has {group} tensors the network does "
                f"not, e.g. {[short(k) for k in unexpected[:3]]}")
    stray = [k for k in declared if not k.startswith(tuple(f"{g}." for g in groups))]
    require(not stray, path, f"{WEIGHTS_FILE} has tensors of no network the metadata "
            f"describes, e.g. {[short(k) for k in stray[:3]]}")
    for key, (shape, dtype) in declared.items():
        want_shape, want_dtype = expected[key]
        require(shape == want_shape, path, f"{WEIGHTS_FILE}: {key} has shape {short(shape)}, "
                f"the network needs {want_shape}")
        require(dtype == want_dtype or (want_dtype, dtype) == ("F32", "F16"), path,
                f"{WEIGHTS_FILE}: {key} has dtype {short(dtype)}, expected {want_dtype}"
                + (" or F16" if want_dtype == "F32" else ""))


def load_weights(path: Path, metadata: dict[str, Any]) -> dict[str, dict[str, torch.Tensor]]:
    """``{member key: state dict}`` of a bundle folder whose metadata validated: ``"coarse"`` and
    ``"fine"``, and ``"fine1"``… for further ensemble members (``bundle_format.member_key``).

    Hash, header check and parse all use the same bytes: the file cannot change in between."""
    expected = _expected_tensors(metadata, path)
    data = read_bounded(path / WEIGHTS_FILE, MAX_WEIGHTS_BYTES, path)
    digest = hashlib.sha256(data).hexdigest()
    require(digest == metadata["weights"]["sha256"], path,
            f"{WEIGHTS_FILE} SHA-256 {digest[:12]}… does not match the metadata's "
            f"{metadata['weights']['sha256'][:12]}… (changed or corrupted weights)")
    groups = [group for _, group in weight_keys(metadata)]
    _check_declared_tensors(_declared_tensors(data, path), expected, groups, path)
    try:
        tensors = load_safetensors(data)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise bundle_error(path, f"{WEIGHTS_FILE} is not a valid safetensors file "
                           f"({short(str(exc), 120)})") from None
    # Half-precision weights (half the file) are computed with in float32 like all others.
    return {group: {k[len(group) + 1:]: v.float() if v.dtype == torch.float16 else v
                    for k, v in tensors.items() if k.startswith(f"{group}.")}
            for group in groups}
