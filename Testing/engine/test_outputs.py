"""Case outputs: six files on the input grid, written all or nothing."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from pancreas_ssl_seg import outputs
from pancreas_ssl_seg.labels import LABELS, UNCERTAIN_REGION
from pancreas_ssl_seg.case_files import case_is_complete, output_paths
from pancreas_ssl_seg.outputs import write_case_outputs


def report_segments() -> tuple[list[dict], dict]:
    return [dict(label) for label in LABELS], dict(UNCERTAIN_REGION)


@dataclass
class FakeResult:
    """What ``segment`` returns, built by hand: arrays on an oblique, anisotropic input grid."""

    image: sitk.Image
    labels: np.ndarray
    uncertainty: np.ndarray
    regions: np.ndarray
    report: dict = field(default_factory=dict)

    def to_sitk(self, array: np.ndarray) -> sitk.Image:
        image = sitk.GetImageFromArray(array)
        image.CopyInformation(self.image)
        return image


def fake_result(shape=(6, 10, 12)) -> FakeResult:
    image = sitk.GetImageFromArray(np.zeros(shape, np.float32))
    image.SetSpacing((0.8, 0.7, 2.5))
    image.SetOrigin((-10.0, 20.0, 30.0))
    image.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    labels = np.zeros(shape, np.uint8)
    labels[2:4, 3:7, 4:9] = 1
    labels[3, 4:6, 5:7] = 2
    uncertainty = np.zeros(shape, np.float32)
    uncertainty[2:4, 3:5, 4:9] = 0.75
    regions = (uncertainty > 0.5).astype(np.int32)
    segments, uncertain_region = report_segments()
    report = {"case": "c1", "segments": segments, "uncertain_region": uncertain_region,
              "pancreas": {"found": True, "volume_ml": np.float32(0.0448)}}
    return FakeResult(image, labels, uncertainty, regions, report)


def write_fake_preview(result, path: Path) -> None:
    import matplotlib.pyplot as plt
    plt.imsave(path, result.labels[result.labels.shape[0] // 2])


@pytest.fixture
def fake_preview(monkeypatch):
    """Stands in for ``preview.write_preview`` (another module, tested on its own)."""
    monkeypatch.setattr(outputs, "_write_preview", write_fake_preview)


def same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (a.GetSize() == b.GetSize() and np.allclose(a.GetSpacing(), b.GetSpacing())
            and np.allclose(a.GetOrigin(), b.GetOrigin())
            and np.allclose(a.GetDirection(), b.GetDirection()))


def test_writes_six_files_on_the_input_grid(tmp_path: Path, fake_preview):
    result = fake_result()
    paths = write_case_outputs(result, tmp_path / "out", "c1")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        ["c1_labels.nii.gz", "c1_uncertainty.nii.gz", "c1_regions.nii.gz", "c1.seg.nrrd",
         "c1_report.json", "c1_preview.png"])
    for key, pixel_type, array in [("labels", sitk.sitkUInt8, result.labels),
                                   ("uncertainty", sitk.sitkFloat32, result.uncertainty),
                                   ("regions", sitk.sitkInt32, result.regions)]:
        written = sitk.ReadImage(str(paths[key]))
        assert written.GetPixelID() == pixel_type, key
        assert same_grid(written, result.image), key
        np.testing.assert_array_equal(sitk.GetArrayFromImage(written), array)
    report = json.loads(paths["report"].read_text(encoding="utf-8"))
    assert report["pancreas"]["volume_ml"] == pytest.approx(0.0448)
    assert case_is_complete(tmp_path / "out", "c1")


def test_failure_leaves_nothing_of_the_case(tmp_path: Path, monkeypatch):
    def broken_preview(result, path):
        Path(path).write_bytes(b"half a png")
        raise OSError("disk full")

    monkeypatch.setattr(outputs, "_write_preview", broken_preview)
    (tmp_path / "other_report.json").write_text("{}", encoding="utf-8")
    with pytest.raises(OSError, match="disk full"):
        write_case_outputs(fake_result(), tmp_path, "c1")
    assert [p.name for p in tmp_path.iterdir()] == ["other_report.json"]
    assert not case_is_complete(tmp_path, "c1")


def test_failure_in_rename_removes_already_renamed_files(tmp_path: Path, fake_preview, monkeypatch):
    real_replace = outputs.os.replace
    calls = []

    def failing_replace(src, dst):
        calls.append(dst)
        if len(calls) == 3:
            raise OSError("rename failed")
        real_replace(src, dst)

    monkeypatch.setattr(outputs.os, "replace", failing_replace)
    with pytest.raises(OSError, match="rename failed"):
        write_case_outputs(fake_result(), tmp_path, "c1")
    assert list(tmp_path.iterdir()) == []


def test_completeness_and_overwrite(tmp_path: Path, fake_preview):
    assert not case_is_complete(tmp_path, "c1")
    (tmp_path / ".partial-0badf00d-c1_labels.nii.gz").write_bytes(b"left by a killed run")
    write_case_outputs(fake_result(), tmp_path, "c1")
    second = fake_result()
    second.labels[:] = 0
    paths = write_case_outputs(second, tmp_path, "c1")
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(paths["labels"]))).max() == 0
    assert len(list(tmp_path.iterdir())) == 6
    paths["preview"].unlink()
    assert not case_is_complete(tmp_path, "c1")
    assert output_paths(tmp_path, "c1")["report"] == tmp_path / "c1_report.json"
