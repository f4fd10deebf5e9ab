"""The training loop: it learns, logs one column per loss term, checkpoints and resumes exactly."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from safetensors.torch import load_file
from torch.utils.data import Dataset

from pancreas_ssl_training.checkpoint import load_checkpoint
from pancreas_ssl_training.config import resolve_config
from pancreas_ssl_training.distributed import DistributedContext
from pancreas_ssl_training.trainer import batches, fit, learning_rate, weighted_terms

CPU = DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


class BlobSlices(Dataset):
    """Generated 2-D slices: a bright disc (label 1) of random size and place on noise."""

    def __init__(self, size: int = 32, count: int = 16):
        self.size, self.count = size, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng(index)
        yy, xx = np.mgrid[:self.size, :self.size]
        cy, cx = rng.integers(8, self.size - 8, size=2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < rng.integers(3, 7) ** 2
        image = (disc * 2.0 + rng.normal(0, 0.5, disc.shape)).astype(np.float32)
        return {"image": torch.from_numpy(image)[None], "label": torch.from_numpy(
            disc.astype(np.int64))[None], "has_label": True, "source": "blobs",
            "case": f"blob{index}"}


class CrashAfter(Dataset):
    """Wraps a dataset; raises once ``items`` items were drawn (a crash mid-run)."""

    def __init__(self, dataset, items: int):
        self.dataset, self.items, self.calls = dataset, items, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        self.calls += 1
        if self.calls > self.items:
            raise RuntimeError("simulated crash")
        return self.dataset[index]

    def set_random_state(self, seed: int) -> None:  # passed on when the dataset augments
        if hasattr(self.dataset, "set_random_state"):
            self.dataset.set_random_state(seed=seed)


def tiny_config(iterations: int = 6, **train) -> dict:
    return resolve_config({
        "network": {"channels": [8, 16], "strides": [2], "dropout": 0.1},
        "methods": {"supervised": {"enabled": True, "weight": 1.0}},
        "optim": {"lr": 3e-3},
        "train": {"iterations": iterations, "batch_size": 2, "checkpoint_every": 2,
                  "amp": True, **train},
        "stages": {"coarse": {"patch_size": [32, 32]}, "fine": {"patch_size": [32, 32]}}})


def run(config, out_dir, dataset=None, resume=False):
    return fit(config, out_dir, resume=resume, context=CPU, show_progress=False,
               dataset_factory=lambda name, stage, seed: dataset or BlobSlices())


def read_log(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_fit_lowers_the_loss_and_logs_every_iteration_of_every_stage(tmp_path):
    run(tiny_config(iterations=30), tmp_path)
    rows = read_log(tmp_path / "train_log.csv")
    assert [(r["stage"], int(r["iteration"])) for r in rows] == \
        [(s, i) for s in ("coarse", "fine") for i in range(1, 31)]
    assert set(rows[0]) == {"stage", "iteration", "loss_total", "lr", "loss_seg"}
    coarse = [float(r["loss_seg"]) for r in rows if r["stage"] == "coarse"]
    assert np.mean(coarse[-5:]) < 0.8 * np.mean(coarse[:5])
    assert (tmp_path / "tensorboard").is_dir() and (tmp_path / "config.yaml").is_file()
    checkpoint = load_checkpoint(tmp_path / "checkpoint")
    assert checkpoint.progress == {"stage": "fine", "iteration": 30,
                                   "completed": ["coarse", "fine"]}


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    first = run(tiny_config(iterations=2), tmp_path / "a").final_state()
    again = run(tiny_config(iterations=2), tmp_path / "b").final_state()
    other = run(tiny_config(iterations=2, seed=1), tmp_path / "c").final_state()
    key = "seg_head.weight"
    assert torch.equal(first["fine"][key], again["fine"][key])
    assert not torch.equal(first["fine"][key], other["fine"][key])


@pytest.mark.parametrize("crash_after_items", [6, 18])  # in the coarse stage / in the fine stage
def test_resume_after_a_crash_gives_the_uninterrupted_weights(tmp_path, crash_after_items):
    config = tiny_config(iterations=6)
    reference = run(config, tmp_path / "straight").final_state()
    # batch size 2: the crash hits the 4th batch (coarse) or the 3rd fine batch; the last
    # checkpoint is at coarse iteration 2 / fine iteration 2.
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(config, tmp_path / "crashed", CrashAfter(BlobSlices(), crash_after_items))
    saved = load_checkpoint(tmp_path / "crashed" / "checkpoint").progress
    assert saved["iteration"] == 2
    assert saved["stage"] == ("coarse" if crash_after_items == 6 else "fine")
    resumed = run(config, tmp_path / "crashed", resume=True).final_state()
    for stage in ("coarse", "fine"):
        for key, value in reference[stage].items():
            assert torch.equal(value, resumed[stage][key]), (stage, key)
    rows = read_log(tmp_path / "crashed" / "train_log.csv")
    assert [int(r["iteration"]) for r in rows] == [*range(1, 7), *range(1, 7)]


def test_batches_depend_only_on_seed_and_iteration():
    dataset = BlobSlices()
    from_start = batches(dataset, 3, seed=5, rank=0, stage_name="fine", start=0)
    for _ in range(3):
        expected = next(from_start)
    later = next(batches(dataset, 3, seed=5, rank=0, stage_name="fine", start=2))
    assert torch.equal(expected["image"], later["image"])
    other_rank = next(batches(dataset, 3, seed=5, rank=1, stage_name="fine", start=2))
    assert not torch.equal(expected["image"], other_rank["image"])


def test_learning_rate_warms_up_then_decays_to_zero():
    optim = {"lr": 1.0, "schedule": "cosine", "warmup_iterations": 4}
    rates = [learning_rate(optim, i, 20) for i in range(21)]
    assert rates[:4] == [0.25, 0.5, 0.75, 1.0] and rates[4] == 1.0
    assert all(a >= b for a, b in zip(rates[4:], rates[5:])) and rates[20] == pytest.approx(0)
    assert learning_rate({**optim, "schedule": "constant"}, 15, 20) == 1.0


def test_methods_terms_are_weighted_as_the_config_says():
    from pancreas_ssl_training.methods import build_methods

    supervised = build_methods({"supervised": {"enabled": True, "weight": 0.25}})[0]
    terms = {"loss_seg": torch.tensor(2.0), "loss_other": torch.tensor(4.0)}
    weighted = weighted_terms(supervised.weights, terms)
    assert float(weighted["loss_seg"]) == 0.5 and float(weighted["loss_other"]) == 4.0


def test_resume_is_exact_with_the_real_slice_dataset_and_augmentation(tmp_path, shared_data):
    from pancreas_ssl_training.data.stage_data import default_dataset_factory

    config = resolve_config({
        "network": {"channels": [8, 16], "strides": [2], "dropout": 0.1},
        "methods": {"supervised": {"enabled": True}},
        "data": {"sources": {"nih_hu": str(shared_data / "nih-pancreas-slices-hu")},
                 "lesion_probability": 1.0},
        "train": {"iterations": 4, "batch_size": 2, "checkpoint_every": 2},
        "stages": {"fine": {"spacing_mm": [3.0, 3.0, 3.0], "patch_size": [32, 32]}}})

    def crashing_factory(name, stage, seed):  # the real dataset, failing on the 3rd batch
        return CrashAfter(default_dataset_factory(name, stage, seed), items=5)

    straight = fit(config, tmp_path / "a", context=CPU, show_progress=False).final_state()
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(config, tmp_path / "b", context=CPU, show_progress=False,
            dataset_factory=crashing_factory)
    resumed = fit(config, tmp_path / "b", resume=True, context=CPU,
                  show_progress=False).final_state()
    for key, value in straight["fine"].items():
        assert torch.equal(value, resumed["fine"][key]), key


def test_init_weights_and_init_encoder_load_an_earlier_run(tmp_path):
    from pancreas_ssl_seg.networks import build_network
    from pancreas_ssl_training.config import ConfigError
    from pancreas_ssl_training.trainer import load_encoder, load_stage_weights

    earlier = run(tiny_config(iterations=2), tmp_path / "earlier").final_state()
    config = tiny_config()["stages"]["fine"]["network"]
    network = build_network({**config, "heads": ["sdm"]})  # a head the earlier run lacked
    load_stage_weights(network, "fine", tmp_path / "earlier" / "checkpoint")
    assert torch.equal(network.state_dict()["seg_head.weight"], earlier["fine"]["seg_head.weight"])
    fresh = build_network(config)
    load_encoder(fresh, tmp_path / "earlier" / "checkpoint")
    state = fresh.state_dict()
    assert torch.equal(state["stem.conv.unit0.conv.weight"],
                       earlier["coarse"]["stem.conv.unit0.conv.weight"])
    assert not torch.equal(state["seg_head.weight"], earlier["coarse"]["seg_head.weight"])
    with pytest.raises(ConfigError, match="differs"):
        load_stage_weights(build_network({**config, "channels": [4, 8]}), "fine",
                           tmp_path / "earlier" / "checkpoint")


def test_3d_stages_train_on_volume_patches_of_the_configured_sources(tmp_path, shared_data):
    from pancreas_ssl_training.data.stage_data import default_dataset_factory

    ct = shared_data / "ct-abdomen-3mm"
    config = resolve_config({
        "data": {"hu_window": [-200.0, 300.0], "sources": {"volumes": [
            {"image": str(ct / "example_ct.nii.gz"),
             "label": str(ct / "example_seg_fast_force_split.nii.gz"),
             "label_map": {7: 1}, "source": "ct-abdomen-3mm", "case": "example_ct"}]}},
        "network": {"spatial_dims": 3, "channels": [4, 8], "strides": [2], "dropout": 0.0},
        "methods": {"supervised": {"enabled": True, "weight": 1.0}},
        "optim": {"lr": 3e-3},
        "train": {"iterations": 2, "batch_size": 1, "checkpoint_every": 2, "amp": False},
        "stages": {"coarse": {"spacing_mm": [6.0, 6.0, 6.0], "patch_size": [16, 32, 32]},
                   "fine": {"spacing_mm": [3.0, 3.0, 3.0], "patch_size": [16, 16, 16],
                            "margin_mm": 9.0}}})
    fine = default_dataset_factory("fine", config["stages"]["fine"], seed=0)
    item = fine[0]
    assert item["image"].shape == (1, 16, 16, 16) and item["label"].shape == (1, 16, 16, 16)
    # The fine stage keeps only the pancreas box grown by 9 mm: no patch far from the organ.
    hu, label = fine._load(0)[:2]
    whole_zyx = (112, 101, 122)  # example_ct at 3 mm
    assert label.max() == 1 and all(np.less(label.shape[1:], whole_zyx))
    fit(config, tmp_path / "run", context=CPU, show_progress=False)
    log = read_log(tmp_path / "run" / "train_log.csv")
    assert [(row["stage"], row["iteration"]) for row in log] == [
        ("coarse", "1"), ("coarse", "2"), ("fine", "1"), ("fine", "2")]


def test_snapshots_hold_each_stages_weights_at_their_iteration(tmp_path):
    trainer = run(tiny_config(iterations=4, snapshot_every=2), tmp_path / "run")
    snapshots = sorted(p.name for p in (tmp_path / "run" / "snapshots").iterdir())
    assert snapshots == [f"{stage}-{i:06d}.safetensors" for stage in ("coarse", "fine")
                         for i in (2, 4)]
    final = trainer.final_state()
    for stage in ("coarse", "fine"):
        last = load_file(str(tmp_path / "run" / "snapshots" / f"{stage}-000004.safetensors"))
        assert all(torch.equal(v, final[stage][k]) for k, v in last.items())
        earlier = load_file(str(tmp_path / "run" / "snapshots" / f"{stage}-000002.safetensors"))
        assert any(not torch.equal(v, final[stage][k]) for k, v in earlier.items())


def test_foreground_slices_only_keeps_the_slices_that_show_pancreas(shared_data):
    from pancreas_ssl_training.data.stage_data import default_dataset_factory

    label_path = shared_data / "ct-abdomen-3mm" / "example_seg_fast_force_split.nii.gz"
    volume = {"image": str(shared_data / "ct-abdomen-3mm" / "example_ct.nii.gz"),
              "label": str(label_path), "label_map": {7: 1}, "source": "ct", "case": "ct"}
    stage = {"data": {"sources": {"volumes": [volume]}, "hu_window": [-200, 300],
                      "foreground_slices_only": True},
             "patch_size": [64, 64], "spacing_mm": [3.0, 3.0, 3.0],
             "network": {"spatial_dims": 2}}
    dataset = default_dataset_factory("fine", stage, 0)
    # axial levels of the label map (array axis 0 once in LPS) that hold pancreas (label 7)
    labels = sitk.GetArrayFromImage(sitk.DICOMOrient(sitk.ReadImage(str(label_path)), "LPS"))
    assert len(dataset) == int((labels == 7).any(axis=(1, 2)).sum()) > 0
    assert all(s.label.any() for s in dataset.samples)

