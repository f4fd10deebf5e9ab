"""Protocols: splits by source never leak a test source into training; patient selection."""

from __future__ import annotations

import pytest

from pancreas_ssl_training.data.slices import load_nih_8bit_slices, load_nih_hu_slices
from pancreas_ssl_training.evaluation.protocols import (leave_one_source_out_splits, patient_range,
                                                        select_patients, single_source_splits)


@pytest.fixture(scope="module")
def nih_samples(shared_data):
    hu = load_nih_hu_slices(shared_data / "nih-pancreas-slices-hu")
    grey = load_nih_8bit_slices(shared_data / "nih-pancreas-slices-8bit",
                                patients=patient_range(4, 8))
    return hu + grey


def _ids(samples):
    return {sample.case for sample in samples}


def test_single_source_trains_on_one_and_tests_on_each_other(nih_samples):
    splits = {split.name: split for split in single_source_splits(nih_samples)}
    assert set(splits) == {"train-nih-hu", "train-nih-8bit"}
    hu_split = splits["train-nih-hu"]
    assert hu_split.train_sources == ("nih-hu",)
    assert {s.source for s in hu_split.train} == {"nih-hu"} and len(hu_split.train) == 15
    assert set(hu_split.test) == {"nih-8bit"}
    assert not _ids(hu_split.train) & _ids(hu_split.test["nih-8bit"])
    assert len(hu_split.train) + len(hu_split.test["nih-8bit"]) == len(nih_samples)


def test_leave_one_source_out_holds_out_exactly_one_source(nih_samples):
    three = nih_samples + [type("Record", (), {"source": "other", "case": "x", "patient": "9"})()]
    splits = {split.name: split for split in leave_one_source_out_splits(three)}
    assert set(splits) == {"without-nih-hu", "without-nih-8bit", "without-other"}
    held = splits["without-nih-8bit"]
    assert set(held.test) == {"nih-8bit"}
    assert set(held.train_sources) == {"nih-hu", "other"}
    assert {s.source for s in held.train} == {"nih-hu", "other"}


def test_protocols_need_two_sources(nih_samples):
    only_hu = [s for s in nih_samples if s.source == "nih-hu"]
    with pytest.raises(ValueError, match="at least 2 sources"):
        single_source_splits(only_hu)
    with pytest.raises(ValueError, match="at least 2 sources"):
        leave_one_source_out_splits(only_hu)


def test_patient_selection_keeps_tuning_and_report_patients_apart(nih_samples):
    assert patient_range(4, 6) == ["0004", "0005", "0006"]
    grey = [s for s in nih_samples if s.source == "nih-8bit"]
    tune = select_patients(grey, patient_range(4, 6))
    rest = select_patients(grey, patient_range(7, 8))
    assert {s.patient for s in tune} == {"0004", "0005", "0006"}
    assert not {s.patient for s in tune} & {s.patient for s in rest}
    assert len(tune) + len(rest) == len(grey)
