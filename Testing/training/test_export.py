"""Export: a checkpoint becomes a bundle the engine loads, without SSL heads, with provenance."""

from __future__ import annotations

import json

import pytest
import torch

from pancreas_ssl_seg.bundle import load_bundle
from pancreas_ssl_seg.errors import BundleError
from pancreas_ssl_seg.networks import build_network
from pancreas_ssl_training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from pancreas_ssl_training.config import resolve_config
from pancreas_ssl_training.export import export_bundle

HEADS = ["projection", "restoration", "sdm"]


def write_checkpoint(path, completed=("coarse", "fine")):
    config = resolve_config({
        "name": "export-test",
        "network": {"channels": [8, 16], "strides": [2], "heads": HEADS, "projection_dim": 8},
        "stages": {"coarse": {"spacing_mm": [4.0, 4.0, 4.0], "patch_size": [32, 32]},
                   "fine": {"patch_size": [48, 48], "margin_mm": 12.0}},
        "train": {"iterations": 7},
        "export": {"name": "exported", "version": "1.2.3", "card_text": "## Data\nGenerated."}})
    torch.manual_seed(0)
    states = {stage: build_network(config["stages"][stage]["network"]).state_dict()
              for stage in completed}
    save_checkpoint(path, config=config, network_states=states,
                    progress={"stage": completed[-1], "iteration": 7, "completed": list(completed)},
                    extra={"train_seconds": 12.5, "world_size": 1})
    return states


def test_export_writes_a_loadable_bundle_without_ssl_heads(tmp_path):
    states = write_checkpoint(tmp_path / "ckpt")
    bundle = load_bundle(export_bundle(tmp_path / "ckpt", tmp_path / "bundle",
                                       metrics={"fine_dice": 0.5}))
    assert bundle.name == "exported" and bundle.version == "1.2.3"
    fine = bundle.metadata["stages"]["fine"]
    assert fine["network"]["heads"] == [] and fine["margin_mm"] == 12.0
    assert fine["patch_size"] == [48, 48] and bundle.stage("coarse").spacing_mm == (4.0, 4.0, 4.0)
    for stage in ("coarse", "fine"):
        weights = bundle.stage_weights[stage]
        assert not any(k.startswith(("sdm_head", "projection_head", "restoration_head"))
                       for k in weights)
        assert all(torch.equal(v, states[stage][k]) for k, v in weights.items())
    network = bundle.load_network("fine")
    assert network(torch.zeros(1, 1, 48, 48)).shape == (1, 3, 48, 48)


def test_export_records_provenance_and_metrics_in_metadata_and_card(tmp_path):
    write_checkpoint(tmp_path / "ckpt")
    path = export_bundle(tmp_path / "ckpt", tmp_path / "bundle", metrics={"fine_dice": 0.5})
    metadata = json.loads((path / "metadata.json").read_text(encoding="utf-8"))
    provenance = metadata["provenance"]
    assert provenance["config_name"] == "export-test"
    assert provenance["iterations"] == {"coarse": 7, "fine": 7}
    assert provenance["train_seconds"] == 12.5 and provenance["config"]["train"]["iterations"] == 7
    assert provenance["git_commit"] is None or len(provenance["git_commit"]) == 40
    assert metadata["metrics"] == {"fine_dice": 0.5}
    card = (path / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert card.startswith("# exported 1.2.3") and "## Data\nGenerated." in card
    assert '"fine_dice": 0.5' in card and "12.5 s" in card


def test_export_refuses_a_checkpoint_without_both_stages(tmp_path):
    write_checkpoint(tmp_path / "ckpt", completed=("coarse",))
    with pytest.raises(BundleError, match=r"stages \['fine'\] are not trained"):
        export_bundle(tmp_path / "ckpt", tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


def test_export_refuses_missing_checkpoint_and_existing_bundle_folder(tmp_path):
    with pytest.raises(CheckpointError, match="missing"):
        export_bundle(tmp_path / "nothing", tmp_path / "bundle")
    write_checkpoint(tmp_path / "ckpt")
    (tmp_path / "bundle").mkdir()
    with pytest.raises(FileExistsError):
        export_bundle(tmp_path / "ckpt", tmp_path / "bundle")


def test_export_joins_stages_trained_by_two_runs(tmp_path):
    """``fit --stage coarse`` and ``fit --stage fine`` as two processes, one bundle."""
    coarse = write_checkpoint(tmp_path / "coarse", completed=("coarse",))
    torch.manual_seed(1)  # other weights than the coarse run's
    fine = write_checkpoint(tmp_path / "fine", completed=("fine",))
    path = export_bundle([tmp_path / "coarse", tmp_path / "fine"], tmp_path / "bundle")
    bundle = load_bundle(path)
    for stage, states in (("coarse", coarse), ("fine", fine)):
        assert all(torch.equal(v, states[stage][k]) for k, v in bundle.stage_weights[stage].items())
    runs = bundle.metadata["provenance"]["runs"]
    assert [r["stages"] for r in runs] == [["coarse"], ["fine"]]
    assert bundle.metadata["provenance"]["train_seconds"] == 25.0  # both runs' 12.5 s
    assert bundle.intensity_reference == "slice"  # 2-D stages learn per-slice references


def test_export_refuses_stages_of_mixed_dimensions(tmp_path):
    config = resolve_config({
        "network": {"channels": [8, 16], "strides": [2]},
        "stages": {"coarse": {"spacing_mm": [4.0, 4.0, 4.0], "patch_size": [32, 32]},
                   "fine": {"patch_size": [16, 16, 16], "network": {"spatial_dims": 3}}}})
    states = {s: build_network(config["stages"][s]["network"]).state_dict()
              for s in ("coarse", "fine")}
    save_checkpoint(tmp_path / "ckpt", config=config, network_states=states,
                    progress={"stage": "fine", "iteration": 1, "completed": ["coarse", "fine"]})
    with pytest.raises(BundleError, match="all be 2-D or all 3-D"):
        export_bundle(tmp_path / "ckpt", tmp_path / "bundle")


def test_half_precision_export_halves_the_file_and_loads_as_float32(tmp_path):
    states = write_checkpoint(tmp_path / "ckpt")
    full = export_bundle(tmp_path / "ckpt", tmp_path / "full")
    checkpoint = load_checkpoint(tmp_path / "ckpt")
    checkpoint.config["export"]["weights_dtype"] = "float16"
    save_checkpoint(tmp_path / "ckpt16", config=checkpoint.config,
                    network_states=checkpoint.network_states, progress=checkpoint.progress)
    half = export_bundle(tmp_path / "ckpt16", tmp_path / "half")
    size = lambda p: (p / "model.safetensors").stat().st_size  # noqa: E731
    assert size(half) < 0.6 * size(full)
    bundle = load_bundle(half)
    assert bundle.metadata["weights"]["dtype"] == "float16"
    for stage in ("coarse", "fine"):
        for key, value in bundle.stage_weights[stage].items():
            assert value.dtype == torch.float32
            assert torch.equal(value, states[stage][key].half().float())



def test_export_settings_chosen_after_training_replace_the_runs(tmp_path):
    """Inference settings are chosen on held-back data after a run: ``export --config`` takes
    the export section from the current config, not the one the checkpoint was trained with."""
    write_checkpoint(tmp_path / "ckpt")
    settings = {"name": "released", "version": "2.0.0", "license": "Apache-2.0",
                "fine_margin_mm": 33.0,
                "inference": {"tta_flips": [[]], "lesion_probability_threshold": 0.3}}
    bundle = load_bundle(export_bundle(tmp_path / "ckpt", tmp_path / "bundle",
                                       export_settings=settings))
    assert (bundle.name, bundle.version) == ("released", "2.0.0")
    assert bundle.inference["tta_flips"] == [[]]
    assert bundle.inference["lesion_probability_threshold"] == 0.3
    assert bundle.stage("fine").margin_mm == 33.0


def test_a_stage_can_come_from_a_bundle(tmp_path):
    """A retrained fine stage behind an existing bundle's coarse stage: the coarse weights are
    the bundle's, the fine ones the checkpoint's, and the time counts the run of each once."""
    write_checkpoint(tmp_path / "first")
    first = load_bundle(export_bundle(tmp_path / "first", tmp_path / "first_bundle"))
    # other weights than the bundle's fine stage: built first after the same seed
    new_states = write_checkpoint(tmp_path / "retrained", completed=("fine",))
    path = export_bundle([tmp_path / "retrained", tmp_path / "first_bundle"], tmp_path / "mixed")
    mixed = load_bundle(path)
    assert all(torch.equal(v, first.stage_weights["coarse"][k])
               for k, v in mixed.stage_weights["coarse"].items())
    assert all(torch.equal(v, new_states["fine"][k])
               for k, v in mixed.stage_weights["fine"].items())
    assert not all(torch.equal(v, first.stage_weights["fine"][k])
                   for k, v in mixed.stage_weights["fine"].items())
    runs = {r["checkpoint"]: r for r in mixed.metadata["provenance"]["runs"]}
    assert runs[str(tmp_path / "first_bundle")]["stages"] == ["coarse"]
    assert runs[str(tmp_path / "first_bundle")]["train_seconds"] == 12.5
    assert mixed.metadata["provenance"]["train_seconds"] == 25.0
