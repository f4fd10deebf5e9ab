"""Volume readers (Decathlon, NIH Pancreas-CT, images/labels folders) and the corrections folder,
on tiny datasets built from the real 3 mm CT and the real DICOM series."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from pancreas_ssl_seg.errors import InputError
from pancreas_ssl_seg.corrections import read_correction_record, write_correction_case
from pancreas_ssl_training.data.slice_datasets import build_slice_sources
from pancreas_ssl_training.data.volumes import (read_corrections, read_decathlon,
                                                read_image_label_folders, read_nih_pancreas_ct,
                                                read_volume_source, slices_from_case)


@pytest.fixture(scope="module")
def small_case(pancreas_crop):
    """The crop of the 3 mm CT around its pancreas; labels 7 → 1, plus one lesion voxel (2)."""
    image, reference = pancreas_crop
    labels = sitk.GetArrayFromImage(reference)
    project = (labels == 7).astype(np.uint8)
    lesion_voxel = np.argwhere(project == 1)[0]
    project[tuple(lesion_voxel)] = 2
    project_image = sitk.GetImageFromArray(project)
    project_image.CopyInformation(image)
    return image, reference, project_image


def _write(image: sitk.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def _pancreas_voxels(cases) -> int:
    return sum(int((s.label == 1).sum()) for case in cases for s in slices_from_case(case))


def test_decathlon_layout_maps_labels_by_name(small_case, tmp_path):
    image, _, project = small_case
    root = tmp_path / "Task07_Pancreas"
    _write(image, root / "imagesTr" / "pancreas_001.nii.gz")
    _write(project, root / "labelsTr" / "pancreas_001.nii.gz")
    (root / "dataset.json").write_text(json.dumps({
        "labels": {"0": "background", "1": "pancreas", "2": "cancer"},
        "training": [{"image": "./imagesTr/pancreas_001.nii.gz",
                      "label": "./labelsTr/pancreas_001.nii.gz"}]}), encoding="utf-8")
    cases = read_decathlon(root)
    assert [c.case for c in cases] == ["pancreas_001"] and cases[0].label_map == {1: 1, 2: 2}
    slices = slices_from_case(cases[0])
    assert len(slices) == 24 and slices[0].spacing_mm == pytest.approx((3.0, 3.0))
    expected = sitk.GetArrayFromImage(sitk.DICOMOrient(project, "LPS"))
    np.testing.assert_array_equal(np.stack([s.label for s in slices]), expected)
    assert sum(int((s.label == 2).sum()) for s in slices) == 1

    (root / "dataset.json").write_text(json.dumps({"labels": {"1": "liver"}, "training": []}),
                                       encoding="utf-8")
    with pytest.raises(InputError, match="pancreas"):
        read_decathlon(root)


def test_nnunet_v2_conversion_of_task07_is_read_too(small_case, tmp_path):
    image, _, project = small_case
    _write(image, tmp_path / "imagesTr" / "pancreas_004_0000.nii.gz")
    _write(project, tmp_path / "labelsTr" / "pancreas_004.nii.gz")
    (tmp_path / "dataset.json").write_text(json.dumps({
        "labels": {"background": 0, "pancreas": 1, "tumour": 2}, "file_ending": ".nii.gz"}),
        encoding="utf-8")
    cases = read_decathlon(tmp_path)
    assert [(c.case, c.label_path.name) for c in cases] == [("pancreas_004", "pancreas_004.nii.gz")]
    assert cases[0].label_map == {1: 1, 2: 2}
    assert sum(int((s.label == 2).sum()) for s in slices_from_case(cases[0])) == 1


def test_nih_layout_reads_the_dicom_series_and_its_label(shared_data, tmp_path):
    series = shared_data / "ct-dicom-series"
    patient = tmp_path / "Pancreas-CT" / "PANCREAS_0007" / "study" / "series"
    patient.parent.mkdir(parents=True)
    patient.symlink_to(series, target_is_directory=True)
    (tmp_path / "Pancreas-CT" / "PANCREAS_0008").mkdir()  # no label: skipped
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series)))
    dicom = reader.Execute()
    label = sitk.Image(dicom.GetSize(), sitk.sitkUInt8)
    label.CopyInformation(dicom)
    label[200:260, 220:300, 5:9] = 1
    _write(label, tmp_path / "labels" / "label0007.nii.gz")

    cases = read_nih_pancreas_ct(tmp_path / "Pancreas-CT", tmp_path / "labels")
    assert [c.case for c in cases] == ["PANCREAS_0007"]
    assert cases[0].image_path.name == "series" and cases[0].label_map == {1: 1}
    slices = slices_from_case(cases[0])
    assert len(slices) == 20 and slices[0].image.shape == (512, 512)
    assert sum(int(s.label.sum()) for s in slices) == 60 * 80 * 4
    assert slices[0].spacing_mm == pytest.approx(dicom.GetSpacing()[:2])
    with pytest.raises(InputError, match="label00XX"):
        read_nih_pancreas_ct(tmp_path / "Pancreas-CT", tmp_path / "Pancreas-CT")


def test_generic_folders_use_the_label_map(small_case, tmp_path):
    image, reference, _ = small_case
    _write(image, tmp_path / "images" / "a.nii.gz")
    _write(reference, tmp_path / "labels" / "a.nii.gz")
    cases = read_image_label_folders(tmp_path, {7: 1}, "ct-abdomen-3mm")
    assert [c.case for c in cases] == ["a"]
    reference_voxels = int((sitk.GetArrayViewFromImage(reference) == 7).sum())
    assert reference_voxels > 100 and _pancreas_voxels(cases) == reference_voxels
    _write(image, tmp_path / "images" / "b.nii.gz")
    with pytest.raises(InputError, match="b.nii.gz"):
        read_image_label_folders(tmp_path, {7: 1}, "x")


def test_corrections_round_trip(small_case, tmp_path):
    image, _, project = small_case
    date = datetime.datetime(2026, 11, 25, 1, 2, 3, tzinfo=datetime.timezone.utc)
    folder = write_correction_case(tmp_path, "case-01", image, project, "pancreas-ssl", "1.0.0",
                                   ["pancreas", "lesion"], date=date)
    assert sorted(p.name for p in folder.iterdir()) == ["correction.json", "image.nii.gz",
                                                        "labels.nii.gz"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left
    record = read_correction_record(folder)
    assert record == {"case": "case-01", "model": {"name": "pancreas-ssl", "version": "1.0.0"},
                      "edited_segments": ["pancreas", "lesion"], "date": date.isoformat(),
                      "source": "corrections"}
    cases = read_corrections(tmp_path)
    assert [(c.case, c.source) for c in cases] == [("case-01", "corrections")]
    slices = slices_from_case(cases[0])
    expected = sitk.GetArrayFromImage(sitk.DICOMOrient(project, "LPS"))
    np.testing.assert_array_equal(np.stack([s.label for s in slices]), expected)
    # Replacing a case keeps one folder with the new content.
    write_correction_case(tmp_path, "case-01", image, project, "pancreas-ssl", "1.0.1", [])
    assert read_correction_record(folder)["model"]["version"] == "1.0.1"


def test_corrections_reject_bad_input(small_case, tmp_path):
    image, reference, project = small_case
    with pytest.raises(InputError, match="folder name"):
        write_correction_case(tmp_path, "../escape", image, project, "m", "1", [])
    with pytest.raises(InputError, match=r"expected only 0 \(background\), 1 \(pancreas\)"):
        write_correction_case(tmp_path, "c", image, sitk.Cast(reference, sitk.sitkUInt8),
                              "m", "1", [])
    shifted = sitk.Image(project)
    shifted.SetOrigin([o + 5 for o in project.GetOrigin()])
    with pytest.raises(InputError, match="grid"):
        write_correction_case(tmp_path, "c", image, shifted, "m", "1", [])
    folder = write_correction_case(tmp_path, "c", image, project, "m", "1", [])
    (folder / "correction.json").write_text(json.dumps({"case": "c"}), encoding="utf-8")
    with pytest.raises(InputError, match="correction.json"):
        read_corrections(tmp_path)


def test_config_volume_sources(small_case, tmp_path):
    image, reference, project = small_case
    _write(image, tmp_path / "folder" / "images" / "a.nii.gz")
    _write(reference, tmp_path / "folder" / "labels" / "a.nii.gz")
    write_correction_case(tmp_path / "corr", "c1", image, project, "m", "1", ["lesion"])
    samples = build_slice_sources({"volumes": [
        {"format": "folder", "path": str(tmp_path / "folder"), "label_map": {"7": 1},
         "source": "ct-abdomen-3mm"},
        {"format": "corrections", "path": str(tmp_path / "corr")}]})
    assert len(samples) == 48
    assert {s.source for s in samples} == {"ct-abdomen-3mm", "corrections"}
    assert {s.patient for s in samples} == {"a", "c1"}
    with pytest.raises(InputError, match="format"):
        read_volume_source({"format": "zip", "path": "x"})


def test_volume_without_label_gives_unlabelled_slices(shared_data):
    from pancreas_ssl_training.data.slice_datasets import SliceDataset

    samples = build_slice_sources({"volumes": [
        {"image": str(shared_data / "ct-dicom-series"), "source": "ct-dicom-series",
         "case": "dicom"}]})
    assert len(samples) == 20 and all(s.label is None for s in samples)
    item = SliceDataset(samples, (64, 64), spacing_mm=(4.0, 4.0))[3]
    assert item["has_label"] is False and int(item["label"].sum()) == 0
    with pytest.raises(InputError, match="label_map"):
        build_slice_sources({"volumes": [{"image": "x.nii.gz", "label": "y.nii.gz",
                                          "source": "s"}]})
