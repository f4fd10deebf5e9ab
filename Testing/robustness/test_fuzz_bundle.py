"""Fuzzing the bundle loader (issue 6, item 2): random and mutated ``metadata.json`` (random JSON,
wrong types, missing keys, huge numbers, unicode, raw bytes) and mutated safetensors headers.
Property: ``load_bundle`` returns a ``ModelBundle`` or raises ``BundleError``; never another
exception, never a hang. Iterations are fixed and derandomized (``EXAMPLES`` per test).
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pancreas_ssl_seg.bundle import ModelBundle, load_bundle
from pancreas_ssl_seg.errors import BundleError
from pancreas_ssl_seg.hashing import sha256_of

EXAMPLES = 150
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=3000, database=None,
                         derandomize=True, suppress_health_check=[HealthCheck.too_slow])

HUGE_NUMBERS = st.sampled_from([10 ** 30, -10 ** 30, 10 ** 4000, 2 ** 63, -1, 0, 1e308, -1e308,
                                5e-324, 1.5])
ODD_TEXT = st.sampled_from(["", "\ud800", "\u202e", "../../etc/passwd", "model.pt", "\x00",
                            "é" * 1000, "🧠"])
JSON_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), HUGE_NUMBERS,
                        st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
                        ODD_TEXT)
JSON_VALUES = st.recursive(JSON_LEAVES, lambda children: st.one_of(
    st.lists(children, max_size=5), st.dictionaries(st.text(max_size=10), children, max_size=5)),
    max_leaves=20)


@pytest.fixture(scope="module")
def valid(random_bundle) -> dict:
    """The valid bundle's metadata and weights bytes, the seeds every mutation starts from."""
    return {"metadata": json.loads((random_bundle / "metadata.json").read_text(encoding="utf-8")),
            "weights": (random_bundle / "model.safetensors").read_bytes()}


@pytest.fixture(scope="module")
def work_bundle(random_bundle, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("fuzz") / "bundle"
    shutil.copytree(random_bundle, path)
    return path


def write(bundle: Path, metadata_bytes: bytes, weights: bytes) -> None:
    (bundle / "metadata.json").write_bytes(metadata_bytes)
    (bundle / "model.safetensors").write_bytes(weights)


def loads_or_refuses(bundle: Path):
    """The property every fuzz test checks."""
    try:
        loaded = load_bundle(bundle)
    except BundleError as error:
        assert str(bundle) in str(error)
        return None
    assert isinstance(loaded, ModelBundle)
    assert set(loaded.stage_weights) == {"coarse", "fine"}
    return loaded


def key_paths(value, prefix=()):
    """Every path of keys/indices into a JSON value, parents before children."""
    paths = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            paths += key_paths(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            paths += key_paths(child, prefix + (index,))
    return paths


def test_the_seed_bundle_loads(valid, work_bundle):
    """Control: unmutated seeds load, so refusals below come from the mutations."""
    write(work_bundle, json.dumps(valid["metadata"]).encode(), valid["weights"])
    assert loads_or_refuses(work_bundle) is not None


@FUZZ_SETTINGS
@given(metadata=JSON_VALUES)
def test_random_json_metadata(valid, work_bundle, metadata):
    write(work_bundle, json.dumps(metadata).encode(), valid["weights"])
    assert loads_or_refuses(work_bundle) is None


@FUZZ_SETTINGS
@given(data=st.data())
def test_mutated_metadata_values(valid, work_bundle, data):
    """Values replaced by random JSON (wrong types, huge numbers, unicode) or keys removed."""
    metadata = json.loads(json.dumps(valid["metadata"]))
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        paths = [p for p in key_paths(metadata) if p]
        if not paths:
            break
        path = data.draw(st.sampled_from(paths), label="path")
        parent = metadata
        for key in path[:-1]:
            parent = parent[key]
        if data.draw(st.booleans(), label="remove"):
            del parent[path[-1]]
        else:
            parent[path[-1]] = data.draw(JSON_VALUES, label="value")
    write(work_bundle, json.dumps(metadata).encode(), valid["weights"])
    loads_or_refuses(work_bundle)


@FUZZ_SETTINGS
@given(data=st.data())
def test_mutated_metadata_bytes(valid, work_bundle, data):
    """Raw byte edits of the JSON text: broken syntax, invalid UTF-8, NaN, deep nesting."""
    content = bytearray(json.dumps(valid["metadata"]).encode())
    for _ in range(data.draw(st.integers(1, 4), label="edits")):
        position = data.draw(st.integers(0, len(content) - 1), label="position")
        chunk = data.draw(st.one_of(st.binary(min_size=1, max_size=6), st.sampled_from(
            [b"NaN", b"-Infinity", b"1e999", b"9" * 5000, b"[" * 5000, b"\\ud800", b"\xff"])),
            label="bytes")
        content[position:position + data.draw(st.integers(0, 6), label="replaced")] = chunk
    write(work_bundle, bytes(content), valid["weights"])
    loads_or_refuses(work_bundle)


def _split_safetensors(weights: bytes) -> tuple[dict, bytes]:
    (length,) = struct.unpack("<Q", weights[:8])
    return json.loads(weights[8:8 + length]), weights[8 + length:]


@FUZZ_SETTINGS
@given(data=st.data())
def test_mutated_safetensors_headers(valid, work_bundle, data):
    """Header entries (dtype, shape, offsets, names) replaced by random JSON, or raw header
    bytes edited; the metadata's hash is updated so the parser, not the hash, must refuse."""
    header, payload = _split_safetensors(valid["weights"])
    if data.draw(st.booleans(), label="structured"):
        name = data.draw(st.sampled_from(sorted(header)), label="tensor")
        field = data.draw(st.sampled_from(["dtype", "shape", "data_offsets", None]),
                          label="field")
        value = data.draw(st.one_of(JSON_VALUES, st.lists(HUGE_NUMBERS, max_size=4)),
                          label="value")
        if field is None:
            header[data.draw(st.text(max_size=12), label="new name")] = header.pop(name)
        elif isinstance(header[name], dict):
            header[name][field] = value
        encoded = json.dumps(header).encode()
        length = len(encoded)
    else:
        encoded = bytearray(json.dumps(header).encode())
        position = data.draw(st.integers(0, len(encoded) - 1), label="position")
        encoded[position:position + 4] = data.draw(st.binary(min_size=1, max_size=4),
                                                   label="bytes")
        length = data.draw(st.one_of(st.just(len(encoded)), st.integers(0, 2 ** 64 - 1)),
                           label="declared length")
    weights = struct.pack("<Q", length) + bytes(encoded) + payload
    metadata = json.loads(json.dumps(valid["metadata"]))
    (work_bundle / "model.safetensors").write_bytes(weights)
    metadata["weights"]["sha256"] = sha256_of(work_bundle / "model.safetensors")
    write(work_bundle, json.dumps(metadata).encode(), weights)
    loads_or_refuses(work_bundle)
