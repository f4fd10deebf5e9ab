"""Untrusted model bundles (issue 6, item 4): each hostile bundle is refused with a reason naming
the bundle and the problem, and no code inside it ever runs."""

from __future__ import annotations

import json
import os
import pathlib
import pickle
import shutil
import struct
import threading
import time

import pytest
import torch

from pancreas_ssl_seg import cli
from pancreas_ssl_seg.bundle import load_bundle
from pancreas_ssl_seg.bundle_format import MAX_METADATA_BYTES, MAX_WEIGHTS_BYTES
from pancreas_ssl_seg.errors import BundleError
from pancreas_ssl_seg.hashing import sha256_of

GIB = 1 << 30


class TouchOnUnpickle:
    """Unpickling this creates ``marker``: the stand-in for code a hostile pickle would run."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


@pytest.fixture
def bundle(random_bundle, tmp_path):
    path = tmp_path / "bundle"
    shutil.copytree(random_bundle, path)
    return path


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "code-ran.marker"


def rewrite_metadata(path, change):
    metadata = json.loads((path / "metadata.json").read_text(encoding="utf-8"))
    change(metadata)
    (path / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")


def record_weights_hash(path):
    """Make the metadata vouch for the current weights file: the attacker controls both."""
    digest = sha256_of(path / "model.safetensors")
    rewrite_metadata(path, lambda m: m["weights"].update(sha256=digest))


def refused(path, *message_parts):
    with pytest.raises(BundleError) as info:
        load_bundle(path)
    message = str(info.value)
    assert str(path) in message, message
    for part in message_parts:
        assert part in message, message
    return message


def test_the_payload_really_runs_code_when_unpickled(tmp_path):
    """Control: without it, an absent marker below would prove nothing."""
    marker = tmp_path / "control.marker"
    pickle.loads(pickle.dumps(TouchOnUnpickle(marker)))
    assert marker.exists()


@pytest.mark.parametrize("file_name", ["model.pt", "model.pth", "weights.pkl", "model.ckpt"])
def test_bundle_with_pickle_checkpoint_is_refused_and_runs_nothing(bundle, marker, file_name):
    torch.save(TouchOnUnpickle(marker), bundle / file_name)
    refused(bundle, "unexpected files", file_name, "pickles and code are never loaded")
    assert not marker.exists()


def test_pickle_in_place_of_the_weights_is_refused_and_runs_nothing(bundle, marker):
    (bundle / "model.safetensors").unlink()
    torch.save(TouchOnUnpickle(marker), bundle / "model.safetensors")
    refused(bundle, "SHA-256")
    record_weights_hash(bundle)        # hash matches now: the parser itself must refuse
    refused(bundle, "model.safetensors")
    assert not marker.exists()


def test_pickle_renamed_from_pt_with_plain_pickle_protocol_runs_nothing(bundle, marker):
    (bundle / "model.safetensors").write_bytes(pickle.dumps(TouchOnUnpickle(marker), protocol=2))
    record_weights_hash(bundle)
    refused(bundle, "model.safetensors")
    assert not marker.exists()


def test_cli_refuses_a_hostile_bundle_in_one_line_with_exit_code_2(bundle, marker, capsys):
    torch.save(TouchOnUnpickle(marker), bundle / "model.pt")
    assert cli.main(["info", "--model", str(bundle)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unexpected files" in err[0] and "Traceback" not in err[0]
    assert not marker.exists()


@pytest.mark.parametrize("file_name, content", [
    ("run.sh", b"#!/bin/sh\ntouch pwned\n"),
    ("__init__.py", b"import os\n"),
    ("hook.py", b"open('pwned', 'w')\n"),
    ("libhook.so", b"\x7fELF\x02\x01\x01"),
])
def test_extra_executable_files_are_refused(bundle, file_name, content):
    extra = bundle / file_name
    extra.write_bytes(content)
    extra.chmod(0o755)
    refused(bundle, "unexpected files", file_name)


def test_weights_file_reference_cannot_leave_the_bundle(bundle, tmp_path):
    outside = tmp_path / "outside.safetensors"
    shutil.copy(bundle / "model.safetensors", outside)
    rewrite_metadata(bundle, lambda m: m["weights"].update(file="../outside.safetensors"))
    refused(bundle, "weights must be")


@pytest.mark.parametrize("file_name", ["..\\..\\evil.py", "..%2f..%2fevil.py", "....", " .."])
def test_traversal_like_file_names_in_the_folder_are_refused(bundle, file_name):
    (bundle / file_name).write_bytes(b"x")
    refused(bundle, "unexpected files")


def test_subfolder_is_refused(bundle):
    (bundle / "nested").mkdir()
    (bundle / "nested" / "model.safetensors").write_bytes(b"x")
    refused(bundle, "unexpected files", "nested")


@pytest.mark.parametrize("name, target", [
    ("model.safetensors", "outside"),         # ../ escape to a valid weights file elsewhere
    ("metadata.json", "/dev/zero"),           # endless stream
    ("MODEL_CARD.md", "/etc/passwd"),
])
def test_links_out_of_the_bundle_are_refused(bundle, tmp_path, name, target):
    if target == "outside":
        target = tmp_path / "outside.safetensors"
        shutil.copy(bundle / name, target)
    (bundle / name).unlink()
    (bundle / name).symlink_to(target)
    refused(bundle, name, "regular file")


def test_fifo_metadata_is_refused_without_blocking(bundle):
    (bundle / "metadata.json").unlink()
    os.mkfifo(bundle / "metadata.json")
    outcome = []
    worker = threading.Thread(target=lambda: outcome.append(_refusal(bundle)), daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert outcome and "regular file" in outcome[0]


def _refusal(path):
    try:
        load_bundle(path)
    except BundleError as error:
        return str(error)
    return "loaded"


@pytest.mark.parametrize("name, limit", [("metadata.json", MAX_METADATA_BYTES),
                                         ("model.safetensors", MAX_WEIGHTS_BYTES)])
def test_a_1_gib_file_is_refused_from_its_size_before_reading(bundle, name, limit):
    with open(bundle / name, "r+b") as handle:       # sparse: no 1 GiB written or read
        handle.truncate(GIB)
    started = time.perf_counter()
    message = refused(bundle, name, f"{GIB} bytes", f"at most {limit}")
    assert time.perf_counter() - started < 2.0, message
    assert os.stat(bundle / name).st_blocks * 512 < 64 << 20  # the test itself stayed small


def test_weights_with_a_different_hash_are_refused(bundle):
    rewrite_metadata(bundle, lambda m: m["weights"].update(sha256="0" * 64))
    refused(bundle, "SHA-256", "does not match")


def _safetensors_bytes(header: dict, payload: bytes = b"") -> bytes:
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + payload


def _real_header(bundle):
    data = (bundle / "model.safetensors").read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8:8 + length]), data[8 + length:]


def test_header_declaring_huge_tensors_is_refused_before_parsing(bundle):
    header, payload = _real_header(bundle)
    key = next(k for k in header if k.startswith("fine.") and k.endswith("weight"))
    header[key]["shape"] = [1 << 20, 1 << 20, 1 << 20]      # 4 EiB of float32
    (bundle / "model.safetensors").write_bytes(_safetensors_bytes(header, payload))
    record_weights_hash(bundle)
    refused(bundle, key, "has shape", "the network needs")


def test_header_length_beyond_the_file_is_refused(bundle):
    data = (bundle / "model.safetensors").read_bytes()
    (bundle / "model.safetensors").write_bytes(struct.pack("<Q", 1 << 62) + data[8:])
    record_weights_hash(bundle)
    refused(bundle, "header declares", str(1 << 62))


def test_consistent_header_with_offsets_past_the_data_is_refused(bundle):
    header, payload = _real_header(bundle)
    key = next(iter(k for k in header if k != "__metadata__"))
    header[key]["data_offsets"] = [0, 1 << 40]
    (bundle / "model.safetensors").write_bytes(_safetensors_bytes(header, payload))
    record_weights_hash(bundle)
    refused(bundle, "not a valid safetensors file")


@pytest.mark.parametrize("change, message", [
    (lambda m: m["stages"]["fine"]["network"].update(channels=[1024] * 8, strides=[1] * 7),
     "MB of weights"),
    (lambda m: m["stages"]["coarse"]["network"].update(channels=[8] * 40, strides=[1] * 39),
     "at most 8 levels"),
    (lambda m: m["stages"]["fine"]["network"].update(out_channels=10 ** 9), "out_channels"),
    (lambda m: m["stages"]["fine"]["network"].update(projection_dim=10 ** 9), "projection_dim"),
    (lambda m: m["inference"].update(mc_dropout_samples=10 ** 9), "mc_dropout_samples"),
    (lambda m: m["inference"].update(tta_flips=[[0]] * 1000), "tta_flips"),
])
def test_metadata_asking_for_unbounded_work_is_refused(bundle, change, message):
    rewrite_metadata(bundle, change)
    refused(bundle, message)
