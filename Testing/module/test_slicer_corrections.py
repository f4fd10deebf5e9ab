"""Export of a corrected case from the scene, in the layout the training package reads, by the
engine's one writer (``pancreas_ssl_seg.corrections``) with or without the training package."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from slicer_harness import SlicerTestScene, install_module_stubs

install_module_stubs()
import slicer  # noqa: E402

from pancreas_ssl_seg.errors import InputError  # noqa: E402
from PancreasSSLSegLib import corrections_export  # noqa: E402
from pancreas_ssl_training.data.volumes import read_corrections  # noqa: E402


@pytest.fixture
def case(example_ct, shared_data):
    """The real CT and a segmentation made from the reference label map (pancreas = label 7),
    with a made-up lesion, as a user's corrected result would be."""
    scene = SlicerTestScene()
    volume = scene.load_volume(example_ct, "example ct")
    reference = sitk.GetArrayFromImage(sitk.ReadImage(
        str(shared_data / "ct-abdomen-3mm" / "example_seg_fast_force_split.nii.gz")))
    pancreas = reference == 7
    lesion = np.zeros_like(pancreas)
    k, j, i = np.argwhere(pancreas)[len(np.argwhere(pancreas)) // 2]
    lesion[k - 1:k + 2, j - 1:j + 2, i - 1:i + 2] = True
    node = scene.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
    ids = {}
    for value, name, mask in ((1, "Pancreas", pancreas & ~lesion),
                              (2, "Pancreatic lesion", lesion)):
        ids[value] = node.GetSegmentation().AddEmptySegment(name, name, [1, 0, 0])
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask.astype(np.uint8), node, ids[value],
                                                         volume)
    expected = np.where(lesion, 2, np.where(pancreas, 1, 0)).astype(np.uint8)
    return scene, volume, node, ids, expected


@pytest.mark.parametrize("with_training_package", [True, False])
def test_export_writes_the_training_layout(case, example_ct, tmp_path, monkeypatch,
                                           with_training_package):
    _, volume, node, ids, expected = case
    if not with_training_package:  # a stock Slicer: the training package cannot be imported
        for name in [n for n in sys.modules if n.startswith("pancreas_ssl_training")]:
            monkeypatch.setitem(sys.modules, name, None)
        monkeypatch.setitem(sys.modules, "pancreas_ssl_training", None)
    folder = corrections_export.export_case(tmp_path, "example ct", volume, node, ids,
                                            "tiny-random", "0.0.1", {"Pancreas"})
    assert folder == tmp_path / "example_ct"
    labels = sitk.ReadImage(str(folder / "labels.nii.gz"))
    image = sitk.ReadImage(str(folder / "image.nii.gz"))
    original = sitk.ReadImage(str(example_ct))
    assert np.array_equal(sitk.GetArrayFromImage(labels), expected)
    assert np.array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(original))
    for written in (image, labels):
        assert np.allclose(written.GetOrigin(), original.GetOrigin(), atol=1e-3)
        assert np.allclose(written.GetDirection(), original.GetDirection(), atol=1e-5)
        assert np.allclose(written.GetSpacing(), original.GetSpacing())
    record = json.loads((folder / "correction.json").read_text(encoding="utf-8"))
    assert record["model"] == {"name": "tiny-random", "version": "0.0.1"}
    assert record["edited_segments"] == ["Pancreas"] and record["source"] == "corrections"
    monkeypatch.undo()
    cases = read_corrections(tmp_path)  # the training package reads what either writer wrote
    assert [c.case for c in cases] == ["example_ct"]


def test_export_replaces_a_case_atomically_and_refuses_a_foreign_grid(case, tmp_path, monkeypatch):
    """Exporting again replaces the case in one step; labels that do not lie on the CT grid (a
    volume node moved after segmenting) are refused naming the case folder, the old case kept."""
    _, volume, node, ids, expected = case
    for name in [n for n in sys.modules if n.startswith("pancreas_ssl_training")]:
        monkeypatch.setitem(sys.modules, name, None)
    first = corrections_export.export_case(tmp_path, "ct", volume, node, ids, "m", "1", set())
    before = {p.name: p.read_bytes() for p in first.iterdir()}
    real = corrections_export.sitk_from_array

    def on_another_grid(array, volume_node):
        image = real(array, volume_node)
        image.SetOrigin([o + 10.0 for o in image.GetOrigin()])
        return image

    monkeypatch.setattr(corrections_export, "sitk_from_array", on_another_grid)
    with pytest.raises(InputError, match=f"^{tmp_path / 'ct'}: labels are not on the image grid"):
        corrections_export.export_case(tmp_path, "ct", volume, node, ids, "m", "2", set())
    assert {p.name: p.read_bytes() for p in first.iterdir()} == before
    monkeypatch.setattr(corrections_export, "sitk_from_array", real)
    again = corrections_export.export_case(tmp_path, "ct", volume, node, ids, "m", "2", set())
    assert again == first and sorted(p.name for p in tmp_path.iterdir()) == ["ct"]
    assert json.loads((again / "correction.json").read_text(encoding="utf-8"))["model"]["version"] \
        == "2"
    written = sitk.ReadImage(str(again / "labels.nii.gz"))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), expected)
