"""`pancreas-ssl-train ensemble`: bundles joined into one whose stages average their networks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import REPO_ROOT, write_random_bundle
from pancreas_ssl_seg.bundle import load_bundle, save_bundle
from pancreas_ssl_seg.errors import BundleError
from pancreas_ssl_seg.inference import predict_stage
from pancreas_ssl_seg.pipeline import segment
from pancreas_ssl_training.cli import main as train_main
from pancreas_ssl_training.ensemble import ensemble_bundle

CPU = torch.device("cpu")
SMOKE_CONFIG = REPO_ROOT / "training" / "configs" / "smoke.yaml"


@pytest.fixture(scope="module")
def two_bundles(tmp_path_factory):
    folder = tmp_path_factory.mktemp("members")
    return write_random_bundle(folder / "a", seed=1), write_random_bundle(folder / "b", seed=2)


@pytest.fixture(scope="module")
def joined(two_bundles, tmp_path_factory):
    out = tmp_path_factory.mktemp("ensemble") / "joined"
    assert train_main(["ensemble", "--bundle", str(two_bundles[0]), "--bundle",
                       str(two_bundles[1]), "--out", str(out)]) == 0
    return out


def test_ensemble_holds_every_member_in_order(two_bundles, joined):
    a, b, ensemble = (load_bundle(p) for p in (*two_bundles, joined))
    for stage in ("coarse", "fine"):
        assert ensemble.members(stage) == 2
        assert ensemble.metadata["stages"][stage]["members"] == 2
        for member, source in enumerate((a, b)):
            got = ensemble.load_network(stage, member=member).state_dict()
            want = source.load_network(stage).state_dict()
            assert all(torch.equal(got[k], want[k]) for k in want)
    recorded = ensemble.metadata["provenance"]["ensemble_of"]
    assert [m["weights_sha256"] for m in recorded] == [a.metadata["weights"]["sha256"],
                                                       b.metadata["weights"]["sha256"]]


def test_stage_prediction_is_the_mean_of_the_members(two_bundles, joined):
    volume = np.random.default_rng(0).normal(size=(3, 40, 40)).astype(np.float32)
    a, b, ensemble = (load_bundle(p) for p in (*two_bundles, joined))
    want = (predict_stage(a, "fine", volume, CPU) + predict_stage(b, "fine", volume, CPU)) / 2
    got = predict_stage(ensemble, "fine", volume, CPU, members=2)
    np.testing.assert_allclose(got, want, atol=1e-5)
    first_only = predict_stage(ensemble, "fine", volume, CPU)
    np.testing.assert_allclose(first_only, predict_stage(a, "fine", volume, CPU), atol=1e-6)
    assert np.abs(got - first_only).max() > 1e-3  # the second member changed the result


def test_fast_mode_runs_the_first_bundle_and_accurate_all_members(two_bundles, joined,
                                                                  pancreas_crop):
    image = pancreas_crop[0]
    first = segment(image, model=two_bundles[0], device="cpu", fast=True,
                    keep_probabilities=True)
    fast = segment(image, model=joined, device="cpu", fast=True, keep_probabilities=True)
    np.testing.assert_array_equal(fast.labels, first.labels)
    accurate = segment(image, model=joined, device="cpu", keep_probabilities=True)
    assert "2 networks" in accurate.report["uncertainty"]["definition"]
    assert "2 networks" not in fast.report["uncertainty"]["definition"]


def test_export_settings_of_a_config_name_the_ensemble(two_bundles, tmp_path):
    config = tmp_path / "ensemble.yaml"
    config.write_text("extends: " + json.dumps(str(SMOKE_CONFIG)) + "\n"
                      "export: {name: joined-model, version: 2.0.0, fine_margin_mm: 12.5,\n"
                      "         inference: {uncertainty_threshold: 0.3}}\n", encoding="utf-8")
    out = tmp_path / "joined"
    assert train_main(["ensemble", "--bundle", str(two_bundles[0]), "--bundle",
                       str(two_bundles[1]), "--config", str(config), "--out", str(out)]) == 0
    bundle = load_bundle(out)
    assert (bundle.name, bundle.version) == ("joined-model", "2.0.0")
    assert bundle.stage("fine").margin_mm == 12.5
    assert bundle.inference["uncertainty_threshold"] == 0.3
    assert "# joined-model 2.0.0" in (out / "MODEL_CARD.md").read_text(encoding="utf-8")


def test_bundles_with_other_inputs_are_refused(two_bundles, tmp_path, capsys):
    source = load_bundle(two_bundles[1])
    metadata = {k: v for k, v in source.metadata.items() if k != "weights"}
    metadata["stages"]["fine"]["spacing_mm"] = [1.0, 1.0, 1.0]
    odd = save_bundle(tmp_path / "odd", metadata, source.stage_weights, "# odd\n")
    out = tmp_path / "never"
    assert train_main(["ensemble", "--bundle", str(two_bundles[0]), "--bundle", str(odd),
                       "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert str(odd) in error and "stages.fine.spacing_mm" in error
    assert not out.exists()
    with pytest.raises(BundleError, match="at least two"):
        ensemble_bundle([two_bundles[0]], tmp_path / "alone")


def test_only_the_named_stages_are_joined(two_bundles, tmp_path):
    out = tmp_path / "fine-only"
    assert train_main(["ensemble", "--bundle", str(two_bundles[0]), "--bundle",
                       str(two_bundles[1]), "--stage", "fine", "--out", str(out)]) == 0
    a, ensemble = load_bundle(two_bundles[0]), load_bundle(out)
    assert (ensemble.members("coarse"), ensemble.members("fine")) == (1, 2)
    got, want = ensemble.load_network("coarse").state_dict(), a.load_network("coarse").state_dict()
    assert all(torch.equal(got[k], want[k]) for k in want)
