"""The preview PNG: four panels with overlays, also when nothing was found."""

import numpy as np
import SimpleITK as sitk
from PIL import Image

from PancreasSSLSegLib.preview import write_preview
from PancreasSSLSegLib.report import build_report
from PancreasSSLSegLib.pipeline import SegmentationResult

LABELS = [{"value": 0, "name": "Background", "color": [0, 0, 0]},
          {"value": 1, "name": "Pancreas", "color": [230, 190, 90]},
          {"value": 2, "name": "Lesion", "color": [220, 40, 40]}]


def _result(with_organ: bool) -> SegmentationResult:
    ct = np.full((30, 60, 70), -50.0, np.float32)
    labels = np.zeros(ct.shape, np.uint8)
    uncertainty = np.zeros(ct.shape, np.float32)
    if with_organ:
        labels[10:20, 20:35, 20:50] = 1
        labels[13:16, 25:29, 30:35] = 2
        uncertainty[9:21, 19:36, 19:51] = 0.6
    image = sitk.GetImageFromArray(ct)
    image.SetSpacing((0.8, 0.8, 2.5))
    report = build_report(image=image, labels=labels, uncertainty=uncertainty, regions=[],
                          metadata={"name": "demo", "version": "1", "labels": LABELS,
                                    "uncertain_region": {"name": "u"}},
                          engine_version="0", device="cpu", mode="accurate", threshold=0.5,
                          uncertainty_definition="d", regions_score="s", warnings=[],
                          timings_s={}, peak_memory_mb=0.0)
    return SegmentationResult(labels=labels, uncertainty=uncertainty,
                              regions=np.zeros(ct.shape, np.int32), report=report, image=image)


def _colour_pixels(path, colour) -> int:
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    return int((np.abs(pixels - colour).sum(axis=2) < 40).sum())


def test_preview_shows_the_overlays_and_works_when_nothing_was_found(tmp_path):
    found, empty = tmp_path / "found.png", tmp_path / "empty.png"
    write_preview(_result(True), found)
    write_preview(_result(False), empty)
    pixels = np.asarray(Image.open(empty).convert("RGB")).astype(int)
    assert pixels.shape[0] > 300 and pixels.shape[1] > 1000
    assert pixels.std() > 5  # the CT, legend and title are drawn, not a blank image
    # Contours in the pancreas and lesion colours appear only when there is something to outline
    # (the legend shows both colours in either case).
    for colour in ([230, 190, 90], [220, 40, 40]):
        assert _colour_pixels(found, colour) > _colour_pixels(empty, colour) + 50, colour
