"""Model catalogue (issue 14, item 5): ``pancreas-ssl-seg models``, ``--model NAME``, the user's
models folder, and the Slicer model list showing the same bundles."""

from __future__ import annotations

import json
import shutil
import types
from pathlib import Path

import pytest
from conftest import REPO_ROOT, write_random_bundle
from test_cli import fake_segment_fixture, run  # noqa: F401 (fixture)

from pancreas_ssl_seg import catalogue

SHIPPED = REPO_ROOT / "Resources" / "Models" / "pancreas-demo"


def set_version(bundle: Path, version: str) -> None:
    """Another version of a bundle: only metadata changes (the weights' hash stays valid)."""
    metadata = json.loads((bundle / "metadata.json").read_text(encoding="utf-8"))
    metadata["version"] = version
    (bundle / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")


@pytest.fixture(scope="module")
def user_models(tmp_path_factory, random_bundle) -> Path:
    """A user models folder: tiny-a 0.0.1 and 0.0.2, tiny-b, and an unreadable folder."""
    root = tmp_path_factory.mktemp("user-models")
    shutil.copytree(random_bundle, root / "a-old")
    set_version(root / "a-old", "0.0.1")
    shutil.copytree(random_bundle, root / "a-new")
    set_version(root / "a-new", "0.0.2")
    for folder in ("a-old", "a-new"):
        metadata = json.loads((root / folder / "metadata.json").read_text(encoding="utf-8"))
        metadata["name"] = "tiny-a"
        (root / folder / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
    write_random_bundle(root / "b", seed=1, name="tiny-b")
    (root / "broken").mkdir()
    (root / "broken" / "metadata.json").write_text('{"name": NaN}', encoding="utf-8")
    (root / "not-a-bundle").mkdir()  # no metadata.json: not listed
    return root


@pytest.fixture
def models_env(monkeypatch, user_models) -> Path:
    monkeypatch.setenv(catalogue.MODELS_ENV, str(user_models))
    return user_models


def test_models_lists_user_folder_then_shipped_with_their_metadata(capsys, models_env):
    code, out, err = run(capsys, "models", "--json")
    listed = json.loads(out)
    assert code == 2  # one unreadable bundle in the folder
    assert [(e["name"], e["version"], e["source"]) for e in listed] == [
        ("tiny-a", "0.0.2", "user"), ("tiny-a", "0.0.1", "user"), ("tiny-b", "0.0.1", "user"),
        ("broken", "", "user"), ("pancreas-demo", json.loads(
            (SHIPPED / "metadata.json").read_text(encoding="utf-8"))["version"], "shipped")]
    assert "NaN is not valid JSON" in listed[3]["problem"]
    assert str(models_env / "broken" / "metadata.json") in listed[3]["problem"]
    shipped = json.loads((SHIPPED / "metadata.json").read_text(encoding="utf-8"))
    entry = listed[-1]
    assert Path(entry["path"]).resolve() == SHIPPED.resolve()
    assert entry["license"] == shipped["license"] and entry["metrics"] == shipped["metrics"]
    assert entry["stages"] == {
        name: {"spatial_dims": spec["network"]["spatial_dims"], "spacing_mm": spec["spacing_mm"],
               "patch_size": spec["patch_size"]} for name, spec in shipped["stages"].items()}

    code, out, err = run(capsys, "models")
    assert code == 2
    dice = shipped["metrics"]["held_out_nih_0041_0050"]["pancreas_dice_per_slice_mean"]
    assert f"held_out_nih_0041_0050.pancreas_dice_per_slice_mean: {dice}" in out
    assert f"pancreas-demo {shipped['version']}  (shipped)" in out
    assert "tiny-a 0.0.2  (user)" in out and "broken  (unreadable, user)" in out


def test_validate_loads_each_bundle_and_names_a_tampered_one(capsys, tmp_path, monkeypatch,
                                                             random_bundle):
    shutil.copytree(random_bundle, tmp_path / "good")
    shutil.copytree(random_bundle, tmp_path / "bad")
    set_version(tmp_path / "bad", "9.9.9")
    weights = tmp_path / "bad" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    monkeypatch.setenv(catalogue.MODELS_ENV, str(tmp_path))
    code, out, err = run(capsys, "models", "--json", "--validate")
    checks = {(e["name"], e["version"]): e["validation"] for e in json.loads(out)}
    assert code == 2
    assert checks[("tiny-random", "0.0.1")] == "ok" and checks[("pancreas-demo", json.loads(
        (SHIPPED / "metadata.json").read_text(encoding="utf-8"))["version"])] == "ok"
    assert "bad" in checks[("tiny-random", "9.9.9")] and "SHA-256" in checks[
        ("tiny-random", "9.9.9")]


def test_model_by_name_and_by_name_at_version(capsys, tmp_path, example_ct, models_env,
                                              fake_segment):
    code, out, err = run(capsys, "segment", example_ct, "-o", tmp_path / "b", "--model", "tiny-b",
                         "--progress", "none")
    assert (code, err) == (0, "")
    report = json.loads((tmp_path / "b" / "example_ct_report.json").read_text(encoding="utf-8"))
    assert report["model"] == {"name": "tiny-b", "version": "0.0.1"}

    code, out, err = run(capsys, "info", "--model", "tiny-a")  # first listed: 0.0.2
    assert code == 0 and "model:    tiny-a 0.0.2" in out and str(models_env / "a-new") in out
    code, out, err = run(capsys, "info", "--model", "tiny-a@0.0.1")
    assert code == 0 and "model:    tiny-a 0.0.1" in out and str(models_env / "a-old") in out


def test_unknown_name_exit_2_lists_installed(capsys, tmp_path, example_ct, models_env,
                                             fake_segment):
    code, out, err = run(capsys, "segment", example_ct, "-o", tmp_path, "--model", "nope",
                         "--progress", "none")
    assert code == 2 and fake_segment.calls == []
    assert err.splitlines() == [err.strip()] and err.startswith("error: nope: no such bundle")
    assert "tiny-a 0.0.2, tiny-a 0.0.1, tiny-b 0.0.1, pancreas-demo" in err
    assert str(models_env) in err
    # A path-like value stays a path: the bundle loader names the missing folder.
    code, out, err = run(capsys, "info", "--model", str(tmp_path / "tiny-b"))
    assert code == 2 and str(tmp_path / "tiny-b") in err


def test_default_user_folder_is_in_the_home(capsys, tmp_path, monkeypatch, random_bundle):
    monkeypatch.delenv(catalogue.MODELS_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    shutil.copytree(random_bundle, tmp_path / ".pancreas-ssl-seg" / "models" / "mine")
    code, out, err = run(capsys, "models", "--json")
    listed = json.loads(out)
    assert code == 0
    assert (listed[0]["name"], listed[0]["source"], listed[0]["path"]) == (
        "tiny-random", "user", str(tmp_path / ".pancreas-ssl-seg" / "models" / "mine"))


class _Signal:
    def __init__(self):
        self.slots = []

    def connect(self, slot):
        self.slots.append(slot)


class _Combo:
    def __init__(self):
        self.items, self.currentIndex, self.currentIndexChanged = [], -1, _Signal()

    def clear(self):
        self.items = []

    def addItem(self, text):
        self.items.append(text)


class _PathEdit:
    def __init__(self):
        self.enabled, self.currentPath = True, ""

    def setEnabled(self, enabled):
        self.enabled = enabled


def test_slicer_model_list_is_the_catalogue(capsys, models_env):
    """The panel's model list (its real methods, on stand-in Qt widgets) shows the bundles the
    CLI lists, readable ones only, then "Bundle folder..."; choosing one passes its path."""
    from slicer_harness import install_module_stubs

    install_module_stubs()
    import PancreasSSLSeg as module
    from PancreasSSLSegLib.widget import PancreasSSLSegPanel

    code, out, err = run(capsys, "models", "--json")
    readable = [e for e in json.loads(out) if e["problem"] is None]
    checked = types.SimpleNamespace(checked=False)
    panel = types.SimpleNamespace(logic=module.PancreasSSLSegLogic(), ui=types.SimpleNamespace(
        modelComboBox=_Combo(), modelPathLineEdit=_PathEdit(), deviceComboBox=_Combo(),
        fastCheckBox=checked, uncertaintyCheckBox=checked,
        uncertaintyThresholdSlider=types.SimpleNamespace(value=None)))
    panel.ui.deviceComboBox.currentIndex = 0
    for name in ("populateModels", "onModelChoice", "readParameters"):
        setattr(panel, name, getattr(PancreasSSLSegPanel, name).__get__(panel))
    panel.populateModels()
    combo = panel.ui.modelComboBox
    assert combo.items == [f"{e['name']} {e['version']} ({e['source']})" for e in readable] + [
        "Bundle folder..."]
    # the shipped model is selected first; the path field only serves "Bundle folder..."
    assert combo.items[combo.currentIndex].startswith("pancreas-demo ")
    assert not panel.ui.modelPathLineEdit.enabled
    assert Path(panel.readParameters().model).resolve() == SHIPPED.resolve()
    # the slider starts at the shipped bundle's threshold, not a constant
    shipped_threshold = json.loads((SHIPPED / "metadata.json").read_text(encoding="utf-8"))[
        "inference"]["uncertainty_threshold"]
    assert panel.ui.uncertaintyThresholdSlider.value == shipped_threshold
    combo.currentIndex = 2
    assert panel.readParameters().model == readable[2]["path"]
    combo.currentIndex = len(combo.items) - 1
    combo.currentIndexChanged.slots[0](combo.currentIndex)
    panel.ui.modelPathLineEdit.currentPath = "/some/bundle"
    assert panel.ui.modelPathLineEdit.enabled
    assert panel.readParameters().model == "/some/bundle"
