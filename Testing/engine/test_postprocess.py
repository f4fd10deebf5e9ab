"""Label clean-up: largest pancreas component kept, lesions away from the pancreas removed."""

import numpy as np

from pancreas_ssl_seg.postprocess import clean_labels, largest_component, major_components


def test_keeps_largest_component_and_large_enough_others():
    labels = np.zeros((20, 40, 40), np.uint8)
    labels[2:12, 2:20, 2:20] = 1      # 3240 voxels: largest
    labels[15:19, 30:38, 30:38] = 1   # 256 voxels: >= 5 % of the largest → kept
    labels[0, 39, 0:3] = 1            # 3 voxels: dropped
    out = clean_labels(labels, (1.0, 1.0, 1.0), min_component_fraction=0.05, lesion_dilation_mm=5)
    assert np.all(out[2:12, 2:20, 2:20] == 1) and np.all(out[15:19, 30:38, 30:38] == 1)
    assert out[0, 39].sum() == 0
    out = clean_labels(labels, (1.0, 1.0, 1.0), min_component_fraction=0.1, lesion_dilation_mm=5)
    assert out[15:19, 30:38, 30:38].sum() == 0 and out.sum() == 3240


def test_lesions_kept_only_near_the_pancreas_in_mm():
    labels = np.zeros((30, 30, 60), np.uint8)
    labels[10:20, 10:20, 5:25] = 1
    labels[12:15, 12:15, 20:24] = 2     # inside the pancreas: kept
    labels[12:15, 12:15, 29:31] = 2     # 5 voxels (x) from the pancreas: 5 mm at 1 mm → kept
    labels[24:26, 12:15, 10:12] = 2     # 5 voxels (z) away: 15 mm at 3 mm → removed
    labels[12:14, 12:14, 50:55] = 2     # far away: removed
    out = clean_labels(labels, (1.0, 1.0, 3.0), min_component_fraction=0.1, lesion_dilation_mm=5.0)
    assert np.all(out[12:15, 12:15, 20:24] == 2)
    assert np.all(out[12:15, 12:15, 29:31] == 2)
    assert out[24:26, 12:15, 10:12].sum() == 0 and out[12:14, 12:14, 50:55].sum() == 0
    assert out.dtype == np.uint8


def test_empty_input_and_largest_component():
    assert clean_labels(np.zeros((3, 4, 5), np.uint8), (1, 1, 1), 0.1, 5).sum() == 0
    mask = np.zeros((5, 5, 9), bool)
    mask[0, 0, 0:2] = True
    mask[3, 3, 4:9] = True
    assert largest_component(mask).sum() == 5 and largest_component(mask)[3, 3, 8]
    assert not largest_component(np.zeros((2, 2, 2), bool)).any()


def test_components_levels_away_from_the_largest_are_dropped_in_plane_ones_kept():
    """The axial gap rule: a same-level piece far across the slice (head and tail) stays, a
    piece 8 levels (24 mm) above the largest goes when the gap limit is 10 mm."""
    mask = np.zeros((40, 60, 60), bool)
    mask[10:20, 5:25, 5:25] = True     # largest: levels 10..19
    mask[12:16, 40:55, 40:55] = True   # same levels, 15+ voxels away in the plane
    mask[28:32, 5:20, 5:20] = True     # levels 28..31: 8 levels = 24 mm above level 19
    kept = major_components(mask, 0.1, max_gap_mm=10.0, spacing_mm=(1.0, 1.0, 3.0))
    assert kept[12:16, 40:55, 40:55].all() and not kept[28:32].any()
    assert kept[10:20, 5:25, 5:25].all()
    assert major_components(mask, 0.1, max_gap_mm=30.0, spacing_mm=(1.0, 1.0, 3.0))[28:32].any()
    assert major_components(mask, 0.1)[28:32].any()  # no limit: every large enough piece
    labels = mask.astype(np.uint8)
    cleaned = clean_labels(labels, (1.0, 1.0, 3.0), 0.1, 5.0, max_gap_mm=10.0)
    assert not cleaned[28:32].any() and cleaned[12:16, 40:55, 40:55].all()
