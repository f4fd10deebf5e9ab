"""The Slicer segmentation file: the bundle's segments with their terminology and colours, the
review region, the input grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import slicerio
from test_outputs import fake_result

from pancreas_ssl_seg.seg_nrrd import write_seg_nrrd


def test_bundle_segments_terminology_and_review_region(tmp_path: Path):
    result = fake_result()
    write_seg_nrrd(result, tmp_path / "c1.seg.nrrd")
    segmentation = slicerio.read_segmentation(str(tmp_path / "c1.seg.nrrd"))
    # Column i of the voxel → LPS matrix: where SimpleITK puts index e_i, less the origin.
    origin = np.array(result.image.TransformIndexToPhysicalPoint((0, 0, 0)))
    expected = np.eye(4)
    for axis, index in enumerate([(1, 0, 0), (0, 1, 0), (0, 0, 1)]):
        expected[:3, axis] = np.array(result.image.TransformIndexToPhysicalPoint(index)) - origin
    expected[:3, 3] = origin
    np.testing.assert_allclose(segmentation["ijkToLPS"], expected)
    by_name = {s["name"]: s for s in segmentation["segments"]}
    assert set(by_name) == {"Pancreas", "Pancreatic lesion", "High-uncertainty region"}
    pancreas, lesion = by_name["Pancreas"], by_name["Pancreatic lesion"]
    assert (pancreas["labelValue"], lesion["labelValue"]) == (1, 2)
    np.testing.assert_allclose(pancreas["color"], np.array([249, 180, 111]) / 255, atol=1e-5)
    assert pancreas["terminology"]["type"] == ["SCT", "15776009", "Pancreas"]
    assert lesion["terminology"]["category"] == ["SCT", "49755003",
                                                 "Morphologically Altered Structure"]
    # Each segment's voxels equal the result's masks, the review region included (it overlaps
    # the pancreas, so it lives in its own layer).
    for segment, expected in [(pancreas, result.labels == 1), (lesion, result.labels == 2),
                              (by_name["High-uncertainty region"], result.regions > 0)]:
        mask = slicerio.segment_mask(segmentation, segment)  # (i, j, k) order
        np.testing.assert_array_equal(mask.transpose(), expected, err_msg=segment["name"])


def test_review_region_apart_from_the_labels_shares_their_layer(tmp_path: Path):
    result = fake_result()
    result.regions[...] = 0
    result.regions[0, 0, :2] = 1  # a corner far from every label
    labels_before = result.labels.copy()
    write_seg_nrrd(result, tmp_path / "c1.seg.nrrd")
    segmentation = slicerio.read_segmentation(str(tmp_path / "c1.seg.nrrd"))
    np.testing.assert_array_equal(result.labels, labels_before)  # the result is not modified
    review = {s["name"]: s for s in segmentation["segments"]}["High-uncertainty region"]
    assert (review["layer"], review["labelValue"]) == (0, 3)
    assert review["extent"] == [0, 1, 0, 0, 0, 0]
    np.testing.assert_array_equal(slicerio.segment_mask(segmentation, review).transpose(),
                                  result.regions > 0)


def test_nothing_segmented_gives_empty_segments(tmp_path: Path):
    result = fake_result()
    result.labels[...] = 0
    result.regions[...] = 0
    write_seg_nrrd(result, tmp_path / "c1.seg.nrrd")
    segmentation = slicerio.read_segmentation(str(tmp_path / "c1.seg.nrrd"))
    assert len(segmentation["segments"]) == 3
    for segment in segmentation["segments"]:
        assert segment["extent"] == [0, -1, 0, -1, 0, -1], segment["name"]
        assert not slicerio.segment_mask(segmentation, segment).any(), segment["name"]
