"""pancreas-ssl-train finetune: a bundle + corrected cases -> a new bundle that records both."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from pancreas_ssl_seg.bundle import load_bundle
from pancreas_ssl_seg.corrections import LABELS_FILE, write_correction_case
from pancreas_ssl_training.cli import main as train_main
from pancreas_ssl_training.finetune import finetune


@pytest.fixture(scope="module")
def corrections(shared_data, tmp_path_factory):
    """Three corrected cases cut from the 3 mm CT around its pancreas (TotalSegmentator label 7),
    as the module's Export corrected case writes them."""
    folder = shared_data / "ct-abdomen-3mm"
    image = sitk.ReadImage(str(folder / "example_ct.nii.gz"), sitk.sitkFloat32)
    seg = sitk.GetArrayFromImage(
        sitk.ReadImage(str(folder / "example_seg_fast_force_split.nii.gz")))
    labels = sitk.GetImageFromArray((seg == 7).astype(np.uint8))
    labels.CopyInformation(image)
    z, y, x = np.nonzero(seg == 7)
    root = tmp_path_factory.mktemp("corrections")
    centre = [int(np.median(x)), int(np.median(y))]
    for number, start in enumerate(range(int(z.min()), int(z.min()) + 9, 3)):
        box = dict(index=[centre[0] - 30, centre[1] - 30, start], size=[60, 60, 3])
        write_correction_case(root, f"case{number}", sitk.RegionOfInterest(image, **box),
                              sitk.RegionOfInterest(labels, **box), "tiny-random", "0.0.1",
                              ["Pancreas"])
    return root


def test_finetune_trains_the_fine_stage_and_records_parent_and_corrections(
        corrections, random_bundle, tmp_path):
    out = tmp_path / "child"
    record = finetune(random_bundle, corrections, out, iterations=3, batch_size=2,
                      validation_fraction=0.34, show_progress=False)
    parent, child = load_bundle(random_bundle), load_bundle(out)

    assert child.version == "0.0.1+ft2"
    provenance = child.metadata["provenance"]["finetune"]
    assert provenance == json.loads(json.dumps(record))
    assert provenance["parent"] == {"name": "tiny-random", "version": "0.0.1",
                                    "weights_sha256": parent.metadata["weights"]["sha256"]}
    # every third case (sorted by name) validates: case2; the others trained
    assert provenance["validation_cases"] == ["case2"]
    assert provenance["corrections"] == [
        {"case": name, "labels_sha256": hashlib.sha256(
            (corrections / name / LABELS_FILE).read_bytes()).hexdigest()}
        for name in ("case0", "case1")]
    for key in ("validation_dice_parent", "validation_dice_finetuned"):
        assert 0.0 <= provenance[key] <= 1.0

    coarse_same = all(torch.equal(parent.stage_weights["coarse"][k], v)
                      for k, v in child.stage_weights["coarse"].items())
    fine_changed = any(not torch.equal(parent.stage_weights["fine"][k], v)
                       for k, v in child.stage_weights["fine"].items())
    assert coarse_same and fine_changed
    assert "Fine-tuned from tiny-random 0.0.1 on 2 corrected case(s)" in (
        out / "MODEL_CARD.md").read_text(encoding="utf-8")


def test_cli_refuses_an_existing_output_and_an_empty_corrections_folder(
        capsys, corrections, random_bundle, tmp_path):
    code = train_main(["finetune", "--model", str(random_bundle), "--data", str(corrections),
                       "--out", str(random_bundle)])
    assert code == 2 and f"{random_bundle} exists" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    code = train_main(["finetune", "--model", str(random_bundle), "--data",
                       str(tmp_path / "empty"), "--out", str(tmp_path / "new")])
    assert code == 2 and "no corrected case to learn from" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_replay_lists_the_corrections_often_enough_to_make_about_half_the_slices(
        shared_data, corrections, random_bundle):
    from pancreas_ssl_training.data.volumes import read_corrections
    from pancreas_ssl_training.finetune import finetune_data

    folder = shared_data / "ct-abdomen-3mm"
    ct = {"image": str(folder / "example_ct.nii.gz"),
          "label": str(folder / "example_seg_fast_force_split.nii.gz"), "label_map": {7: 1},
          "source": "ct-abdomen-3mm", "case": "example_ct"}
    replay = {"data": {"hu_window": [-200.0, 300.0], "sources": {"volumes": [ct]}}}
    cases = read_corrections(corrections)
    data, repeat = finetune_data(load_bundle(random_bundle), cases, replay)
    # slices with pancreas: the CT's own, and those of the three 3-slice crops
    seg = sitk.GetArrayFromImage(sitk.ReadImage(ct["label"]))
    replayed = int((seg == 7).any(axis=(1, 2)).sum())
    corrected = sum(int((sitk.GetArrayFromImage(sitk.ReadImage(str(c.label_path))) > 0)
                        .any(axis=(1, 2)).sum()) for c in cases)
    assert repeat == round(replayed / corrected) and repeat > 1
    volumes = data["sources"]["volumes"]
    assert volumes[0] == ct and len(volumes) == 1 + repeat * len(cases)
    alone, once = finetune_data(load_bundle(random_bundle), cases, None)
    assert once == 1 and len(alone["sources"]["volumes"]) == len(cases)
