"""Training configs: defaults, validation errors that name the problem, the shipped YAML files."""

from __future__ import annotations


import pytest

from pancreas_ssl_training.config import ConfigError, deep_merge, load_config, resolve_config
from pancreas_ssl_training.evaluation.evaluate import labelled_cases, read_data_spec
from conftest import REPO_ROOT

CONFIG_DIR = REPO_ROOT / "training" / "configs"
MINIMAL = {"stages": {"fine": {"patch_size": [64, 64]}}}


def test_defaults_fill_every_section_and_stage_inherits_network_and_data():
    config = resolve_config({**MINIMAL, "data": {"hu_window": [-100, 250], "sources": ["x"]}})
    fine = config["stages"]["fine"]
    assert fine["network"]["channels"] == [16, 32, 64, 128]
    assert fine["data"] == {"hu_window": [-100, 250], "sources": ["x"]}
    assert fine["margin_mm"] == 20.0
    assert config["train"]["iterations"] > 0 and config["methods"]["supervised"]["enabled"]


def test_stage_overrides_win_over_top_level_sections():
    config = resolve_config({"network": {"channels": [8, 16], "strides": [2]},
                             "stages": {"coarse": {"patch_size": [32, 32],
                                                   "network": {"channels": [4, 8]},
                                                   "data": {"lesion_probability": 0.0},
                                                   "train": {"iterations": 5}}}})
    coarse = config["stages"]["coarse"]
    assert coarse["train"]["iterations"] == 5 and coarse["train"]["batch_size"] == 4
    assert coarse["network"]["channels"] == [4, 8] and coarse["network"]["strides"] == [2]
    assert coarse["data"]["lesion_probability"] == 0.0


def test_config_methods_replace_the_default_method_set():
    config = resolve_config({**MINIMAL, "methods": {"polycl": {"enabled": True}}})
    assert set(config["methods"]) == {"polycl"}


def test_deep_merge_does_not_modify_its_inputs():
    base = {"a": {"b": 1, "c": [1]}}
    merged = deep_merge(base, {"a": {"b": 2}})
    merged["a"]["c"].append(2)
    assert base == {"a": {"b": 1, "c": [1]}} and merged["a"]["b"] == 2


@pytest.mark.parametrize("raw, fragment", [
    ({"stages": {}}, "stages must name"),
    ({"stages": {"middle": {}}}, "unknown stages ['middle']"),
    ({**MINIMAL, "trian": {}}, "unknown sections ['trian']"),
    ({"stages": {"fine": {"patch_size": [60, 60]}}}, "divisible by 8"),
    ({"stages": {"fine": {"patch_size": [64]}}}, "must list 2 sizes"),
    ({**MINIMAL, "network": {"channels": [8, 16], "strides": [2, 2]}}, "len(strides)"),
    ({**MINIMAL, "train": {"iterations": 0}}, "train.iterations"),
    ({"stages": {"fine": {"patch_size": [64, 64], "train": {"batch_size": -1}}}},
     "train.batch_size"),
    ({**MINIMAL, "methods": {"supervised": {"enabled": False}}}, "at least one method"),
    ({**MINIMAL, "methods": {"dual_task": {"weights": {"loss_sdm": "high"}}}}, "weights"),
    ({**MINIMAL, "optim": {"schedule": "step"}}, "optim.schedule"),
])
def test_bad_configs_are_refused_with_the_reason(raw, fragment):
    with pytest.raises(ConfigError, match="config <dict>") as info:
        resolve_config(raw)
    assert fragment in str(info.value)


def test_unreadable_and_non_mapping_files_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="list.yaml: expected a mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("a: [1, 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "broken.yaml")


def test_every_shipped_config_loads():
    # eval_*.yaml are evaluation data specs (``evaluate --data``), tested below
    paths = sorted(p for p in CONFIG_DIR.glob("*.yaml") if not p.stem.startswith("eval_"))
    names = {p.stem for p in paths}
    assert {"baseline", "dual_task", "view_consistency", "structure_contrastive", "restoration",
            "polycl_pretrain", "dual_ssl", "smoke", "default_model", "task07_3d",
            "nih_3d"} <= names
    for path in paths:
        config = load_config(path)
        assert config["stages"], path


def test_every_shipped_evaluation_spec_yields_labelled_cases(monkeypatch):
    """The specs' relative paths resolve from the repository root, as their commands run."""
    monkeypatch.chdir(CONFIG_DIR.parents[1])
    specs = sorted(CONFIG_DIR.glob("eval_*.yaml"))
    assert {p.stem for p in specs} >= {"eval_heldout_nih", "eval_ct3mm"}
    for path in specs:
        info, image, labels = next(iter(labelled_cases(read_data_spec(path))))
        assert labels.any(), path
        assert labels.shape == tuple(reversed(image.GetSize())), path
