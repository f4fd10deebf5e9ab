"""The cascade's documented behaviour: box margin, largest coarse component, per-slice intensity
reference, the lesion operating point, and single-slice input for 2-D bundles."""

import copy
import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from pancreas_ssl_seg import InputError, cascade, segment
from pancreas_ssl_seg.bundle import load_bundle
from pancreas_ssl_seg.cascade import (box_around, grown_to_patch, lesion_operating_point,
                                       run_coarse, slice_references)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _bundle(random_bundle, **intensity):
    bundle = load_bundle(random_bundle)
    metadata = copy.deepcopy(bundle.metadata)
    metadata["intensity"].update(intensity)
    return dataclasses.replace(bundle, metadata=metadata)


def _image(array, spacing=(2.0, 2.0, 6.0), origin=(0.0, 0.0, 0.0)):
    image = sitk.GetImageFromArray(np.asarray(array, np.float32))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def test_box_is_the_mask_extent_plus_the_margin_in_each_axis():
    canonical = _image(np.zeros((20, 100, 100)), spacing=(1.0, 1.0, 2.0))
    coarse = _image(np.zeros((10, 25, 25)), spacing=(4.0, 4.0, 4.0), origin=(1.5, 1.5, 1.0))
    mask = np.zeros((10, 25, 25), bool)
    mask[4:6, 10:13, 5:9] = True  # coarse voxels x 5..8, y 10..12, z 4..5
    lo, hi = box_around(coarse, mask, canonical, margin_mm=6.0)
    # Coarse voxel i covers [origin + 4i - 2, origin + 4i + 2) mm; canonical voxel j is at j mm
    # (x, y) and 2j mm (z). x: 1.5 + 20 - 2 = 19.5 ... 1.5 + 32 + 2 = 35.5 mm, then 6 mm margin.
    assert lo == [int(np.floor(19.5 - 6)), int(np.floor(39.5 - 6)), int(np.floor((15 - 6) / 2))]
    assert hi == [int(np.ceil(35.5 + 6)) + 1, int(np.ceil(51.5 + 6)) + 1,
                  int(np.ceil((23 + 6) / 2)) + 1]
    assert box_around(coarse, np.zeros_like(mask), canonical, 6.0) is None


def test_small_box_grows_to_the_patch_within_the_image(random_bundle):
    spec = load_bundle(random_bundle).stage("fine")  # 64 px at 1.5 mm = 96 mm in x and y
    canonical = _image(np.zeros((30, 200, 120)), spacing=(1.0, 1.0, 3.0))
    lo, hi = grown_to_patch(([50, 90, 10], [60, 100, 12]), canonical, spec)
    # z is not slid over by a 2-D stage
    assert [top - low for low, top in zip(lo, hi)] == [96, 96, 2]
    assert lo[0] <= 50 and hi[0] >= 60 and lo[1] <= 90 and hi[1] >= 100
    lo, hi = grown_to_patch(([0, 0, 0], [10, 10, 1]), canonical, spec)  # at the corner
    assert lo[:2] == [0, 0] and hi[:2] == [96, 96]
    lo, hi = grown_to_patch(([0, 0, 0], [120, 200, 30]), canonical, spec)  # already larger
    assert (lo, hi) == ([0, 0, 0], [120, 200, 30])


def test_reference_is_each_slices_soft_tissue_median_or_the_scans():
    rng = np.random.default_rng(0)
    hu = np.stack([rng.normal(level, 10, (40, 40)) for level in (20.0, 60.0, 100.0)])
    hu[:, :5] = -1000.0  # air: outside the soft-tissue range, never in the median
    per_slice = slice_references(hu, "slice")
    expected = [np.median(s[(s > -100) & (s < 200)]) for s in hu]
    np.testing.assert_allclose(per_slice, expected, rtol=1e-6)
    scan = slice_references(hu, "scan")
    np.testing.assert_allclose(scan, np.median(hu[(hu > -100) & (hu < 200)]), rtol=1e-6)


@pytest.mark.parametrize("mode", ["slice", "scan"])
def test_coarse_stage_normalises_with_the_bundles_reference(monkeypatch, random_bundle, mode):
    seen = {}

    def recording_stage(bundle, stage_name, volume, device, **kwargs):
        seen[stage_name] = volume
        return np.stack([np.ones_like(volume), np.zeros_like(volume), np.zeros_like(volume)])

    monkeypatch.setattr(cascade, "predict_stage", recording_stage)
    levels = np.array([0.0, 40.0, 80.0, 120.0])
    hu = np.broadcast_to(levels[:, None, None], (4, 30, 30)).copy()
    run_coarse(_image(hu, spacing=(6.0, 6.0, 6.0)), _bundle(random_bundle, reference=mode),
               torch.device("cpu"), overlap=0.25)
    reference = levels if mode == "slice" else np.full(4, np.median(levels))
    expected = (hu - reference[:, None, None]) / 100.0
    np.testing.assert_allclose(seen["coarse"], expected, atol=1e-5)


def test_coarse_keeps_its_largest_component_and_those_the_bundle_asks_for(monkeypatch,
                                                                          random_bundle):
    def two_blobs(bundle, stage_name, volume, device, **kwargs):
        organ = np.zeros(volume.shape, np.float32)
        organ[1:3, 2:4, 2:4] = 1.0      # 8 voxels
        organ[1:4, 10:15, 10:15] = 1.0  # 75 voxels: the one kept
        return np.stack([1 - organ, organ, np.zeros_like(organ)])

    monkeypatch.setattr(cascade, "predict_stage", two_blobs)
    image = _image(np.zeros((5, 20, 20)), spacing=(6.0, 6.0, 6.0))
    coarse = run_coarse(image, load_bundle(random_bundle), torch.device("cpu"), overlap=0.25)
    assert coarse.foreground.sum() == 75 and coarse.foreground[1:4, 10:15, 10:15].all()
    # with coarse_component_fraction, components of at least that share of the largest stay
    for fraction, expected in ((0.1, 83), (0.2, 75)):  # 8 / 75 = 0.107
        bundle = load_bundle(random_bundle)
        metadata = copy.deepcopy(bundle.metadata)
        metadata["inference"]["coarse_component_fraction"] = fraction
        coarse = run_coarse(image, dataclasses.replace(bundle, metadata=metadata),
                            torch.device("cpu"), overlap=0.25)
        assert coarse.foreground.sum() == expected, fraction


def test_lesion_operating_point_threshold_and_minimum_area():
    labels = np.zeros((2, 40, 40), np.uint8)
    labels[:, 5:35, 5:35] = 1
    probability = np.zeros(labels.shape, np.float32)
    probability[0, 10:20, 10:20] = 0.6   # 100 px = 100 mm2 at 1 mm: kept at threshold 0.5
    probability[1, 25:28, 25:28] = 0.9   # 9 px = 9 mm2: below a 20 mm2 minimum
    probability[0, 30:33, 8:11] = 0.4    # under the threshold
    out = lesion_operating_point(labels, probability, (1.0, 1.0, 3.0), 0.5, 20.0)
    assert (out == 2).sum() == 100 and (out[0, 10:20, 10:20] == 2).all()
    assert (out[labels == 1] >= 1).all() and (out[labels == 0] == 0).all()
    # no threshold: the argmax's own lesion label; no minimum: every lesion voxel stays
    argmax = labels.copy()
    argmax[1, 25:28, 25:28] = 2
    assert (lesion_operating_point(argmax, probability, (1.0, 1.0, 3.0), None, 0.0) == 2).sum() == 9
    # lesion probability outside the organ never makes a lesion
    probability[:, 0:5, 0:5] = 1.0
    assert (lesion_operating_point(labels, probability, (1.0, 1.0, 3.0), 0.5, 0.0)[:, 0:5, 0:5]
            == 0).all()


def _slice_hu():
    """A body-like slice: air around a soft-tissue disc with a bright structure inside."""
    y, x = np.mgrid[0:96, 0:110]
    hu = np.where((y - 48) ** 2 + (x - 55) ** 2 < 40 ** 2, 40.0, -1000.0).astype(np.float32)
    hu[40:50, 50:62] = 250.0
    return hu


def test_a_single_axial_slice_runs_the_whole_cascade(random_bundle):
    hu = _slice_hu()
    from_array = segment(hu, model=random_bundle, device="cpu", spacing_mm=(0.8, 0.7))
    assert from_array.labels.shape == (1, 96, 110)
    assert from_array.image.GetSpacing()[:2] == (0.8, 0.7)
    image_2d = sitk.GetImageFromArray(hu)
    image_2d.SetSpacing((0.8, 0.7))
    from_image = segment(image_2d, model=random_bundle, device="cpu")
    thin_volume = sitk.JoinSeries(image_2d)
    from_volume = segment(thin_volume, model=random_bundle, device="cpu")
    for result in (from_image, from_volume):
        np.testing.assert_array_equal(result.labels, from_array.labels)
        np.testing.assert_allclose(result.uncertainty, from_array.uncertainty, atol=1e-6)
    assert "timings_s" in from_array.report and from_array.report["input"]["size"] == [110, 96, 1]


def test_a_single_slice_is_refused_by_a_bundle_with_3d_stages(tmp_path):
    from conftest import write_random_bundle

    bundle = write_random_bundle(tmp_path / "three-d", coarse_dims=3, fine_dims=3)
    with pytest.raises(InputError, match="2 dimensions .* expected a 3-D"):
        segment(_slice_hu(), model=bundle, device="cpu", spacing_mm=(0.8, 0.7))
    sagittal = sitk.GetImageFromArray(np.zeros((30, 40, 1), np.float32))  # one x column
    with pytest.raises(InputError, match="single slice"):
        segment(sagittal, model=bundle, device="cpu")


def test_cli_segments_a_2d_file_into_one_slice_outputs(tmp_path, random_bundle):
    from pancreas_ssl_seg import cli

    image = sitk.GetImageFromArray(_slice_hu())
    image.SetSpacing((0.8, 0.7))
    sitk.WriteImage(image, str(tmp_path / "slice.nrrd"))
    code = cli.main(["segment", str(tmp_path / "slice.nrrd"), "-o", str(tmp_path / "out"),
                     "--model", str(random_bundle), "--device", "cpu", "--progress", "none"])
    assert code == 0
    labels = sitk.ReadImage(str(tmp_path / "out" / "slice_labels.nii.gz"))
    assert labels.GetSize() == (110, 96, 1)
    assert labels.GetSpacing()[:2] == pytest.approx((0.8, 0.7))
    assert (tmp_path / "out" / "slice_preview.png").is_file()


def test_coarse_organ_by_argmax_or_by_an_organ_probability_threshold():
    probabilities = np.zeros((3, 1, 1, 4), np.float32)
    probabilities[:, 0, 0] = [[0.5, 0.7, 0.9, 0.2], [0.4, 0.2, 0.05, 0.3], [0.1, 0.1, 0.05, 0.5]]
    organ = cascade.coarse_organ
    assert organ(probabilities, {}).ravel().tolist() == [False, False, False, True]
    assert organ(probabilities, {"coarse_organ_threshold": 0.3}).ravel().tolist() == \
        [True, True, False, True]



def test_accurate_mode_averages_rescaled_copies_on_the_fine_grid(monkeypatch, random_bundle):
    shapes = []

    def bright_stage(bundle, stage_name, volume, device, **kwargs):
        shapes.append(volume.shape)
        organ = (volume > 1.5).astype(np.float32)
        return np.stack([1 - organ, organ, np.zeros_like(organ)])

    monkeypatch.setattr(cascade, "predict_stage", bright_stage)
    bundle = load_bundle(random_bundle)
    metadata = copy.deepcopy(bundle.metadata)
    metadata["inference"].update(tta_flips=[[]], tta_scales=[0.8, 1.0, 1.25])
    bundle = dataclasses.replace(bundle, metadata=metadata)
    hu = np.full((4, 120, 120), 40.0, np.float32)
    hu[:, 40:80, 30:90] = 300.0
    image = _image(hu, spacing=(1.0, 1.0, 3.0))
    coarse = cascade.CoarseResult(image, None, None, np.full(4, 40.0, np.float32))
    tta = cascade.TtaSettings.of(bundle, fast=False)
    assert tta.scales == (0.8, 1.0, 1.25) and tta.passes == 3
    fine = cascade.run_fine(image, ([0, 0, 0], [120, 120, 4]), bundle, torch.device("cpu"),
                            coarse, tta, overlap=0.25)
    # fine spacing 1.5 mm: 80 px across at scale 1, 100 at 0.8 (1.2 mm), 64 at 1.25 (1.875 mm)
    assert sorted(s[1] for s in shapes) == [64, 80, 100]
    assert fine.probabilities.shape[2:] == (80, 80)
    np.testing.assert_allclose(fine.probabilities.sum(axis=0), 1.0, atol=1e-5)
    inside = fine.probabilities[1][:, 30:50, 25:55]  # well inside the bright block at every scale
    assert inside.min() > 0.99 and fine.probabilities[1][:, :15, :15].max() < 0.01
    assert cascade.TtaSettings.of(bundle, fast=True).passes == 1


@pytest.mark.parametrize("scales", [[], [0.2], [1.0, "a"], [1.0] * 9])
def test_bundle_refuses_unreasonable_tta_scales(random_bundle, tmp_path, scales):
    import json
    import shutil

    from pancreas_ssl_seg import BundleError

    folder = tmp_path / "bundle"
    shutil.copytree(random_bundle, folder)
    metadata = json.loads((folder / "metadata.json").read_text(encoding="utf-8"))
    metadata["inference"]["tta_scales"] = scales
    (folder / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
    with pytest.raises(BundleError, match="tta_scales"):
        load_bundle(folder)


def test_organ_components_away_from_the_coarse_organ_are_dropped():
    """Two organ pieces on the fine grid; the coarse organ (3x coarser, offset origin) covers
    only the left one: the right one goes, lesion voxels of the kept piece stay."""
    from pancreas_ssl_seg.cascade import CoarseResult, FineResult, coarse_organ_on, fine_labels

    fine_grid = _image(np.zeros((4, 30, 60)), spacing=(1.0, 1.0, 1.0))
    coarse_mask = np.zeros((2, 10, 20), bool)
    coarse_mask[:, 3:6, 2:5] = True                      # x 6-15 mm, y 9-18 mm on the fine grid
    coarse_grid = _image(coarse_mask.astype(np.float32), spacing=(3.0, 3.0, 3.0),
                         origin=(0.0, 0.0, 0.0))
    coarse = CoarseResult(coarse_grid, None, coarse_mask, np.zeros(2, np.float32))
    on_fine = coarse_organ_on(fine_grid, coarse)
    assert on_fine[1, 12, 10] and not on_fine[1, 12, 40]

    probabilities = np.zeros((3, 4, 30, 60), np.float32)
    probabilities[0] = 1.0
    left, right = (slice(None), slice(10, 16), slice(8, 14)), (slice(None), slice(10, 20),
                                                                slice(35, 50))
    for where in (left, right):                          # the right piece is the larger
        probabilities[:, where[0], where[1], where[2]] = np.array([0, 1, 0])[:, None, None, None]
    probabilities[:, 1:3, 12:14, 10:12] = np.array([0, 0.2, 0.8])[:, None, None, None]
    bundle = _settings_only_bundle({"organ_touches_coarse": True, "min_component_fraction": 0.0})
    labels = fine_labels(FineResult(fine_grid, probabilities), bundle, coarse)
    assert labels[2, 12, 9] == 1 and labels[1, 12, 10] == 2 and labels[:, :, 30:].max() == 0
    without = fine_labels(FineResult(fine_grid, probabilities), _settings_only_bundle(
        {"min_component_fraction": 0.0}), coarse)
    assert without[2, 15, 40] == 1                      # the setting is what removed it


def _settings_only_bundle(inference):
    """The attributes ``fine_labels`` reads of a bundle."""
    import types

    return types.SimpleNamespace(inference={"lesion_dilation_mm": 5.0, **inference})


@pytest.mark.parametrize("key, value", [("organ_touches_coarse", 1), ("box_growth_mm", -5.0),
                                        ("box_growth_mm", 500.0), ("box_growth_rounds", 1.5),
                                        ("box_growth_rounds", 9)])
def test_bundle_refuses_unreasonable_cascade_settings(random_bundle, tmp_path, key, value):
    import json
    import shutil

    from pancreas_ssl_seg.errors import BundleError

    path = tmp_path / "bundle"
    shutil.copytree(random_bundle, path)
    metadata = json.loads((path / "metadata.json").read_text(encoding="utf-8"))
    metadata["inference"][key] = value
    (path / "metadata.json").write_text(json.dumps(metadata), encoding="utf-8")
    with pytest.raises(BundleError, match=key):
        load_bundle(path)


def test_box_side_the_organ_reaches_moves_out_within_the_image():
    from pancreas_ssl_seg.cascade import grown_where_organ_reaches

    canonical = _image(np.zeros((10, 100, 100)), spacing=(1.0, 1.0, 3.0))
    box = ([40, 20, 2], [80, 60, 6])
    organ = np.zeros((8, 40, 40), bool)  # the box resampled onto some grid (z, y, x)
    organ[3:, 10:20, 0:5] = True          # reaches the low-x side and the high-z side
    assert grown_where_organ_reaches(box, organ, canonical, 10.0) == (
        [30, 20, 2], [80, 60, 10])        # z: ceil(10 / 3) = 4 slices, clamped at 10
    organ[:] = False
    organ[2:5, 5:30, 5:30] = True         # inside: nothing moves
    assert grown_where_organ_reaches(box, organ, canonical, 10.0) is None
    at_edge = ([0, 20, 2], [80, 60, 6])
    organ[2:5, 10:20, 0] = True           # reaches a side that is the image's own edge
    assert grown_where_organ_reaches(at_edge, organ, canonical, 10.0) is None


def _bar_case(random_bundle, growth_mm: float, rounds: int | None = None):
    """A CT with a bright 240 mm bar across x; the fake coarse stage sees only its middle
    (+-18 mm), the fake fine stage all of it: the box must grow to hold the bar."""
    hu = np.full((6, 200, 320), 40.0, np.float32)
    hu[:, 90:110, 40:280] = 300.0
    image = _image(hu, spacing=(1.0, 1.0, 3.0))

    def stage(bundle, stage_name, volume, device, **kwargs):
        organ = (volume > 1.5).astype(np.float32)
        if stage_name == "coarse":
            middle = volume.shape[-1] // 2
            organ[..., :middle - 3] = 0.0
            organ[..., middle + 3:] = 0.0
        return np.stack([1 - organ, organ, np.zeros_like(organ)])

    bundle = load_bundle(random_bundle)
    metadata = copy.deepcopy(bundle.metadata)
    metadata["inference"].update(box_growth_mm=growth_mm, min_component_fraction=0.0)
    if rounds is not None:
        metadata["inference"]["box_growth_rounds"] = rounds
    return image, stage, dataclasses.replace(bundle, metadata=metadata)


@pytest.mark.parametrize("growth_mm, rounds, holds_bar", [(0.0, None, False), (50.0, 1, False),
                                                          (50.0, None, True)])
def test_fine_box_grows_where_the_organ_reaches_its_sides(monkeypatch, random_bundle,
                                                          growth_mm, rounds, holds_bar):
    image, stage, bundle = _bar_case(random_bundle, growth_mm, rounds)
    monkeypatch.setattr(cascade, "predict_stage", stage)
    result = segment(image, model=bundle, device="cpu", fast=True)
    columns = np.flatnonzero(result.labels.any(axis=(0, 1)))  # x of the labelled voxels
    x_window = result.fine_window[2]
    # the coarse piece is 36 mm, +-15 mm margin, grown to the 96 mm patch; two rounds of 50 mm
    # on both sides reach x 12..308 mm, one round 62..258 mm
    whole_bar = columns.min() <= 41 and columns.max() >= 278 and columns.size >= 236
    assert whole_bar == holds_bar
    assert (x_window.start <= 40 and x_window.stop >= 280) == holds_bar
    assert not result.labels[:, :85].any() and not result.labels[:, 115:].any()
