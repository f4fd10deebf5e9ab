import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from pancreas_ssl_seg.bundle import load_bundle
from pancreas_ssl_seg.errors import BundleError
from pancreas_ssl_seg.hashing import sha256_of


def copy_bundle(src, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(src, dst)
    return dst


def rewrite_metadata(path, change):
    metadata = json.loads((path / "metadata.json").read_text(encoding="utf-8"))
    change(metadata)
    (path / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")


def test_valid_bundle_loads_and_builds_networks(random_bundle):
    bundle = load_bundle(random_bundle)
    assert bundle.name == "tiny-random"
    assert [label["value"] for label in bundle.labels] == [0, 1, 2]
    network = bundle.load_network("fine")
    assert not network.training
    logits = network(torch.zeros(1, 1, 64, 64))
    assert logits.shape == (1, 3, 64, 64)


def test_changed_weights_are_refused(random_bundle, tmp_path):
    path = copy_bundle(random_bundle, tmp_path)
    tensors = load_file(str(path / "model.safetensors"))
    key = next(iter(tensors))
    tensors[key] = tensors[key] + 1
    save_file(tensors, str(path / "model.safetensors"))
    with pytest.raises(BundleError, match="SHA-256"):
        load_bundle(path)


def test_wrong_shape_is_refused_even_with_matching_hash(random_bundle, tmp_path):
    path = copy_bundle(random_bundle, tmp_path)
    tensors = load_file(str(path / "model.safetensors"))
    key = next(k for k in tensors if k.startswith("fine.") and k.endswith("weight"))
    tensors[key] = torch.zeros(*tensors[key].shape[:-1], tensors[key].shape[-1] + 1)
    save_file(tensors, str(path / "model.safetensors"))
    digest = sha256_of(path / "model.safetensors")
    rewrite_metadata(path, lambda m: m["weights"].update(sha256=digest))
    with pytest.raises(BundleError, match="shape"):
        load_bundle(path)


@pytest.mark.parametrize("change, message", [
    (lambda m: m.pop("labels"), "lacks"),
    (lambda m: m["stages"].pop("fine"), "stages"),
    (lambda m: m.update(format_version=99), "format_version"),
    (lambda m: m["labels"][1].update(color="orange"), "color"),
    (lambda m: m["stages"]["coarse"]["network"].update(spatial_dims=4), "spatial_dims"),
    (lambda m: m["inference"].update(uncertainty_threshold=2), "uncertainty_threshold"),
])
def test_invalid_metadata_is_refused(random_bundle, tmp_path, change, message):
    path = copy_bundle(random_bundle, tmp_path)
    rewrite_metadata(path, change)
    with pytest.raises(BundleError, match=message):
        load_bundle(path)


def test_extra_file_is_refused(random_bundle, tmp_path):
    path = copy_bundle(random_bundle, tmp_path)
    (path / "extra.pt").write_bytes(b"not loaded")
    with pytest.raises(BundleError, match="unexpected files"):
        load_bundle(path)


def test_missing_folder_is_refused(tmp_path):
    with pytest.raises(BundleError, match="not a folder"):
        load_bundle(tmp_path / "nowhere")


@pytest.mark.parametrize("members", [0, 9, 1.5, True])
def test_member_counts_outside_the_format_are_refused(random_bundle, tmp_path, members):
    path = copy_bundle(random_bundle, tmp_path)
    rewrite_metadata(path, lambda m: m["stages"]["fine"].update(members=members))
    with pytest.raises(BundleError, match="stages.fine.members"):
        load_bundle(path)


def test_members_are_checked_against_the_weights_file(random_bundle, tmp_path):
    """The metadata declares a second fine network: its tensors must be there, with the first's
    shapes; tensors of a member the metadata does not declare are refused too."""
    path = copy_bundle(random_bundle, tmp_path)
    rewrite_metadata(path, lambda m: m["stages"]["fine"].update(members=2))
    with pytest.raises(BundleError, match="lacks fine1 tensors"):
        load_bundle(path)

    tensors = load_file(str(path / "model.safetensors"))
    tensors.update({"fine1." + k[len("fine."):]: v + 1 for k, v in list(tensors.items())
                    if k.startswith("fine.")})
    save_file(tensors, str(path / "model.safetensors"))
    rewrite_metadata(path, lambda m: m["weights"].update(sha256=sha256_of(
        path / "model.safetensors")))
    bundle = load_bundle(path)
    assert bundle.members("fine") == 2 and bundle.members("coarse") == 1
    first, second = (bundle.load_network("fine", member=m).state_dict() for m in (0, 1))
    assert all(torch.equal(second[k], first[k] + 1) for k in first)

    rewrite_metadata(path, lambda m: m["stages"]["fine"].pop("members"))
    with pytest.raises(BundleError, match="tensors of no network"):
        load_bundle(path)
