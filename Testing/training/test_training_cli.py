"""``pancreas-ssl-train``: smoke.yaml (every method on) trains, exports, and the bundle runs."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml

from pancreas_ssl_seg.bundle import load_bundle
from pancreas_ssl_training.cli import main
from conftest import REPO_ROOT

CONFIG_DIR = REPO_ROOT / "training" / "configs"


def config_on_shared_data(name: str, shared_data: Path, out: Path) -> Path:
    """A shipped config with its ``../shared/data`` paths pointed at the fixture's folder."""
    text = (CONFIG_DIR / name).read_text(encoding="utf-8")
    text = text.replace("../shared/data", str(shared_data))
    out.write_text(text, encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def smoke_run(shared_data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("smoke")
    config = config_on_shared_data("smoke.yaml", shared_data, run / "smoke.yaml")
    assert main(["fit", "--config", str(config), "--out", str(run / "run"), "--quiet"]) == 0
    assert main(["export", "--checkpoint", str(run / "run" / "checkpoint"),
                 "--out", str(run / "bundle")]) == 0
    return run


def test_smoke_logs_one_column_per_term_of_every_enabled_method(smoke_run):
    with open(smoke_run / "run" / "train_log.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    methods = [m for m, s in yaml.safe_load((CONFIG_DIR / "smoke.yaml").read_text(encoding="utf-8"))
               ["methods"].items() if s["enabled"]]
    terms = [c for c in rows[0] if c.startswith("loss_") and c != "loss_total"]
    assert "loss_seg" in terms and len(terms) >= len(methods)
    assert len(rows) == 2 * 6 and all(float(r["loss_total"]) == float(r["loss_total"])
                                      for r in rows)  # no NaN


def test_smoke_bundle_loads_and_its_networks_run(smoke_run):
    bundle = load_bundle(smoke_run / "bundle")
    assert bundle.name == "smoke" and bundle.metadata["provenance"]["config_name"] == "smoke"
    assert set(bundle.metadata["provenance"]["methods"]) >= {"supervised", "dual_task"}
    for stage in ("coarse", "fine"):
        network = bundle.load_network(stage)
        patch = bundle.stage(stage).patch_size
        assert network(torch.zeros(1, 1, *patch)).shape == (1, 3, *patch)


def test_resume_of_a_finished_run_changes_nothing(smoke_run, shared_data):
    before = load_bundle(smoke_run / "bundle").stage_weights["fine"]
    config = smoke_run / "smoke.yaml"
    assert main(["fit", "--config", str(config), "--out", str(smoke_run / "run"), "--resume",
                 "--quiet"]) == 0
    out = smoke_run / "bundle_again"
    assert main(["export", "--checkpoint", str(smoke_run / "run" / "checkpoint"),
                 "--out", str(out)]) == 0
    after = load_bundle(out).stage_weights["fine"]
    assert all(torch.equal(v, after[k]) for k, v in before.items())


def test_bad_inputs_exit_2_with_one_line_naming_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages: {middle: {}}\n", encoding="utf-8")
    assert main(["fit", "--config", str(bad), "--out", str(tmp_path / "run")]) == 2
    assert "bad.yaml" in capsys.readouterr().err
    baseline = CONFIG_DIR / "baseline.yaml"
    assert main(["pretrain", "--config", str(baseline), "--out", str(tmp_path / "run")]) == 2
    assert "polycl" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(tmp_path / "none"), "--out",
                 str(tmp_path / "b")]) == 2
    assert "none" in capsys.readouterr().err


def test_stage_option_trains_only_that_stage(shared_data, tmp_path):
    config = config_on_shared_data("smoke.yaml", shared_data, tmp_path / "smoke.yaml")
    assert main(["fit", "--config", str(config), "--stage", "fine", "--out", str(tmp_path / "run"),
                 "--quiet"]) == 0
    from pancreas_ssl_training.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoint")
    assert checkpoint.progress["completed"] == ["fine"]
    assert set(checkpoint.network_states) == {"fine"}

