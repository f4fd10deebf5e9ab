"""run_evaluation: a checkpoint or bundle on real NIH slices and a real CT volume; files and
rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from conftest import TINY_2D
from pancreas_ssl_seg.errors import BundleError
from pancreas_ssl_seg.networks import build_network
from pancreas_ssl_training.checkpoint import save_checkpoint
from pancreas_ssl_training.config import resolve_config
from pancreas_ssl_training.evaluation import run_evaluation
from pancreas_ssl_seg import segment
from pancreas_ssl_training.data.slices import load_nih_8bit_slices
from pancreas_ssl_training.evaluation.evaluate import load_model, predict
from pancreas_ssl_training.evaluation.tables import read_csv


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A coarse-stage checkpoint whose network has an SSL head (dropped for inference)."""
    config = resolve_config({"network": TINY_2D, "stages": {
        "coarse": {"spacing_mm": [6.0, 6.0, 6.0], "patch_size": [64, 64]}}})
    torch.manual_seed(0)
    network = build_network({**TINY_2D, "heads": ["sdm"]})
    return save_checkpoint(tmp_path_factory.mktemp("run") / "checkpoint", config=config,
                           progress={"stage": "coarse", "iteration": 1, "completed": ["coarse"]},
                           network_states={"coarse": network.state_dict()})


def test_checkpoint_on_slices_and_a_volume_writes_every_table(tiny_checkpoint, shared_data,
                                                              tmp_path):
    spec = {"nih_8bit": {"path": str(shared_data / "nih-pancreas-slices-8bit"),
                         "patients": ["0010"]},
            "volumes": [{"image": str(shared_data / "ct-abdomen-3mm" / "example_ct.nii.gz"),
                         "label": str(shared_data / "ct-abdomen-3mm" /
                                      "example_seg_fast_force_split.nii.gz"),
                         "label_map": {7: 1}, "source": "ct-3mm", "case": "example"}],
            "evaluation": {"surface_tolerance_mm": 3.0, "tta_flip": False}}
    result = run_evaluation(tiny_checkpoint, spec, tmp_path / "eval",
                            extra_columns={"method": "tiny", "seed": 7})
    files = {p.name for p in (tmp_path / "eval").iterdir()}
    assert files == {"cases.csv", "calibration.csv", "summary.csv", "summary.md", "dice.png",
                     "hd95_mm.png", "evaluation.json"}
    rows = read_csv(tmp_path / "eval" / "cases.csv")
    n_slices = 2  # patient 0010 has two slices
    assert len(rows) == 2 * (n_slices + 1)  # pancreas + lesion per case
    assert {r["source"] for r in rows} == {"nih-8bit", "ct-3mm"}
    assert {r["method"] for r in rows} == {"tiny"} and {r["seed"] for r in rows} == {"7"}
    volume = [r for r in rows if r["case"] == "example" and r["region"] == "pancreas"][0]
    assert int(volume["true_voxels"]) == 695  # the README's pancreas count, on the input grid
    assert all(0.0 <= float(r["dice"]) <= 1.0 for r in rows if r["region"] == "pancreas")
    # no lesion in truth: undefined (NaN) when none is predicted either, else 0
    assert all(r["dice"] in ("", "nan") or float(r["dice"]) == 0.0
               for r in rows if r["region"] == "lesion")
    assert result["cases"] == n_slices + 1 and result["stage"] == "coarse"
    recorded = json.loads((tmp_path / "eval" / "evaluation.json").read_text(encoding="utf-8"))
    assert recorded["surface_tolerance_mm"] == 3.0
    calibration = read_csv(tmp_path / "eval" / "calibration.csv")
    assert all(0.0 <= float(r["ece_pancreas"]) <= 1.0 for r in calibration)


def test_one_stage_checkpoint_probabilities_come_back_on_the_input_grid(tiny_checkpoint):
    model = load_model(tiny_checkpoint)
    assert (model.mode, model.stage) == ("stage", "coarse")
    image = sitk.GetImageFromArray(np.random.default_rng(0).normal(40, 50, (1, 130, 150))
                                   .astype(np.float32))
    image.SetSpacing((0.7, 0.9, 1.0))
    labels, probabilities, diagnostics = predict(model, image, np.zeros((1, 130, 150), np.uint8),
                                                 torch.device("cpu"))
    assert probabilities.shape == (3, 1, 130, 150) and labels.shape == (1, 130, 150)
    assert np.allclose(probabilities.sum(axis=0), 1.0, atol=1e-4)
    assert diagnostics == {}


def test_bundle_is_run_as_the_cascade_and_other_folders_are_refused(random_bundle, tmp_path):
    model = load_model(random_bundle)
    assert (model.mode, model.stage) == ("cascade", "cascade")
    assert model.bundle.inference["uncertainty_threshold"] == 0.5
    with pytest.raises(BundleError, match="expected a model bundle folder"):
        load_model(tmp_path)


def test_cascade_figures_are_those_of_segment_on_the_same_slice(random_bundle, shared_data,
                                                                 tmp_path):
    """One inference path: the evaluation's pancreas Dice of a slice equals the Dice of what
    ``segment()`` returns for that slice given as a 2-D array, computed here by hand."""
    spec = {"nih_8bit": {"path": str(shared_data / "nih-pancreas-slices-8bit"),
                         "patients": ["0017"]}}
    run_evaluation(random_bundle, spec, tmp_path / "eval")
    rows = [r for r in read_csv(tmp_path / "eval" / "cases.csv") if r["region"] == "pancreas"]
    samples = load_nih_8bit_slices(shared_data / "nih-pancreas-slices-8bit", ["0017"])
    assert [r["case"] for r in rows] == [s.case for s in samples]
    for row, sample in zip(rows, samples):
        result = segment(sample.image, model=random_bundle, device="cpu",
                         spacing_mm=(0.8, 0.8))
        predicted, truth = result.labels[0] >= 1, sample.label >= 1
        expected = 2 * (predicted & truth).sum() / (predicted.sum() + truth.sum())
        assert float(row["dice"]) == pytest.approx(expected, abs=1e-6)
        assert int(float(row["pred_voxels"])) == predicted.sum()
        for key in ("coarse_hit", "box_coverage", "fine_box_coverage", "dice_true_box"):
            assert 0.0 <= float(row[key]) <= 1.0, key
        # the fine stage looks at least at the coarse box (grown to its patch)
        assert float(row["fine_box_coverage"]) >= float(row["box_coverage"]) - 1e-9
        seen = 0.0 if result.fine_window is None else (
            truth[None][result.fine_window].sum() / truth.sum())
        assert float(row["fine_box_coverage"]) == pytest.approx(seen, abs=1e-9)


def test_grey_to_hu_maps_8bit_slices_before_the_network(tiny_checkpoint, shared_data, tmp_path):
    slices = {"nih_8bit": {"path": str(shared_data / "nih-pancreas-slices-8bit"),
                           "patients": ["0010"]}}
    raw = run_evaluation(tiny_checkpoint, slices, tmp_path / "raw")
    mapped = run_evaluation(tiny_checkpoint, {**slices, "grey_to_hu": {"data_root": str(
        shared_data)}}, tmp_path / "mapped")
    assert {r["units"] for r in read_csv(tmp_path / "mapped" / "cases.csv")} == {"8bit-mapped-hu"}
    assert {r["units"] for r in read_csv(tmp_path / "raw" / "cases.csv")} == {"8bit"}
    # the network saw different intensities, so its pancreas prediction differs
    assert raw["summary"][0]["dice_mean"] != mapped["summary"][0]["dice_mean"]
