"""Report volumes, lesion diameters and RAS positions on synthetic label maps."""

import numpy as np
import pytest
import SimpleITK as sitk

from pancreas_ssl_seg.geometry import index_to_ras_mm, max_feret_diameter_mm
from pancreas_ssl_seg.report import build_report

METADATA = {"name": "m", "version": "1", "labels": [{"value": 0, "name": "bg"}],
            "uncertain_region": {"name": "u"}}


def _image(size_xyz, spacing, origin=(0.0, 0.0, 0.0), direction=None):
    image = sitk.Image(list(size_xyz), sitk.sitkFloat32)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    if direction is not None:
        image.SetDirection(direction)
    return image


def _report(image, labels, uncertainty=None, regions=()):
    return build_report(image=image, labels=labels, uncertainty=uncertainty, regions=list(regions),
                        metadata=METADATA, engine_version="0", device="cpu", mode="accurate",
                        threshold=0.5, uncertainty_definition="d", regions_score="s",
                        quality={"score": 1.0, "status": "ok", "reasons": [], "signals": {}},
                        warnings=["w"], timings_s={"total": 1.0}, peak_memory_mb=1.0)


def test_volumes_exact_from_voxel_counts():
    image = _image((40, 30, 20), (0.5, 0.8, 2.0))      # voxel 0.8 mm^3 = 0.0008 mL
    labels = np.zeros((20, 30, 40), np.uint8)
    labels[2:10, 5:25, 5:35] = 1                       # 4800 voxels
    labels[3:5, 6:10, 6:9] = 2                         # 24 voxels (inside the pancreas)
    labels[15:17, 2:3, 2:7] = 2                        # 10 voxels
    uncertainty = np.zeros(labels.shape, np.float32)
    uncertainty[2:10, 5:25, 5:35] = 0.25
    uncertainty[0, 0, 0:100] = 0.75                    # 40 voxels above the threshold
    report = _report(image, labels, uncertainty)
    assert report["pancreas"] == pytest.approx(
        {"found": True, "volume_ml": 4810 * 0.0008, "definition": report["pancreas"]["definition"]})
    lesions = report["lesions"]
    assert lesions["count"] == 2
    assert [item["volume_ml"] for item in lesions["items"]] == pytest.approx([0.0192, 0.008])
    assert lesions["total_volume_ml"] == pytest.approx(0.0272)
    assert report["uncertainty"]["mean_in_pancreas"] == pytest.approx(0.25 * 4800 / 4810)
    assert report["uncertainty"]["high_uncertainty_volume_ml"] == pytest.approx(40 * 0.0008)
    assert report["input"]["size"] == [40, 30, 20]
    assert report["input"]["spacing_mm"] == [0.5, 0.8, 2.0]


def test_lesion_diameter_is_max_feret_in_mm():
    image = _image((30, 30, 30), (0.7, 1.0, 3.0))
    labels = np.zeros((30, 30, 30), np.uint8)
    labels[5, 5, 2:12] = 2                             # a line of 10 voxels along x
    labels[10:14, 20, 20] = 2                          # 4 voxels along z
    items = _report(image, labels)["lesions"]["items"]
    assert items[0]["diameter_mm"] == pytest.approx(9 * 0.7)
    assert items[1]["diameter_mm"] == pytest.approx(3 * 3.0)
    cube = np.array([[x, y, z] for x in (0, 4) for y in (0, 3) for z in (0, 12)], float)
    assert max_feret_diameter_mm(np.vstack([cube, cube.mean(axis=0)])) == pytest.approx(13.0)


def test_centroid_in_ras_mm_and_empty_case():
    image = _image((10, 10, 10), (2.0, 2.0, 2.0), origin=(10.0, 20.0, 30.0))
    assert index_to_ras_mm(image, (1, 2, 3)) == pytest.approx([-16.0, -24.0, 32.0])
    flipped = _image((10, 10, 10), (1.0, 1.0, 1.0), direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1))
    assert index_to_ras_mm(flipped, (0, 0, 5)) == pytest.approx([5.0, 0.0, 0.0])
    labels = np.zeros((10, 10, 10), np.uint8)
    labels[4:7, 1:3, 3] = 2
    item = _report(image, labels)["lesions"]["items"][0]
    assert item["centroid_ras_mm"] == pytest.approx(index_to_ras_mm(image, (5, 1.5, 3)))
    empty = _report(image, np.zeros((10, 10, 10), np.uint8), np.zeros((10, 10, 10), np.float32))
    assert empty["pancreas"]["found"] is False and empty["lesions"]["count"] == 0
    assert empty["lesions"]["largest_diameter_mm"] is None
    assert empty["uncertainty"]["mean_in_pancreas"] is None
