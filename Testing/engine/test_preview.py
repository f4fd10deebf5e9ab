"""The preview PNG: four panels with overlays, also when nothing was found, with the outlines on
the anatomy they outline, and the quality verdict as a banner in its status colour above them."""

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image
from scipy import ndimage

from pancreas_ssl_seg.preview import verdict_lines, write_preview
from pancreas_ssl_seg.report import build_report
from pancreas_ssl_seg.pipeline import SegmentationResult

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
    return _as_result(image, labels, uncertainty)


def _as_result(image: sitk.Image, labels: np.ndarray, uncertainty: np.ndarray,
               quality: dict | None = None) -> SegmentationResult:
    ct = sitk.GetArrayFromImage(image)
    report = build_report(image=image, labels=labels, uncertainty=uncertainty, regions=[],
                          metadata={"name": "demo", "version": "1", "labels": LABELS,
                                    "uncertain_region": {"name": "u"}},
                          engine_version="0", device="cpu", mode="accurate", threshold=0.5,
                          uncertainty_definition="d", regions_score="s",
                          quality=quality or {"score": 1.0, "status": "ok", "reasons": [],
                                              "signals": {}},
                          warnings=[],
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


# An LPS box of (z, y, x) voxels: z -> superior, y -> posterior, x -> patient left. The structure
# sits superior, anterior and on the patient's left: top-right in both the axial panels
# (radiological display: anterior up, patient left on the right) and the coronal panel (superior
# up). Far from the centre so that a mirrored outline lands in another quadrant.
SHAPE_LPS = (30, 60, 70)
BOX_LPS = (slice(18, 27), slice(6, 18), slice(48, 64))
GREY = round((-50 + 160) / 400 * 255)  # -50 HU in the W 400 / L 40 window
PANCREAS_RGB = [230, 190, 90]


def _panel_boxes(pixels: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(top, bottom, left, right) of each panel, left to right, found as the CT's grey background
    (the rest of the figure is black, white text or legend)."""
    grey = (np.abs(pixels - GREY) < 10).all(axis=2)
    components, _ = ndimage.label(grey)
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    biggest = np.argsort(sizes)[::-1][:4]
    boxes = [ndimage.find_objects((components == k).astype(int))[0] for k in biggest]
    boxes = [(b[0].start, b[0].stop, b[1].start, b[1].stop) for b in boxes]
    return sorted(boxes, key=lambda box: box[2])


def _centre_fraction(mask: np.ndarray) -> np.ndarray:
    """Centroid of ``mask`` as (row, column) fractions of its height and width."""
    rows, cols = np.nonzero(mask)
    assert rows.size > 20, "nothing of that colour in the panel"
    return np.array([(rows.mean() + 0.5) / mask.shape[0], (cols.mean() + 0.5) / mask.shape[1]])


def _box_centre(lo_hi: slice, n: int) -> float:
    return (lo_hi.start + lo_hi.stop) / 2 / n


@pytest.mark.parametrize("stored_as", ["LPS", "RAS"])
def test_preview_outlines_lie_on_the_structure_they_outline(tmp_path, stored_as):
    """A bright structure labelled pancreas, off-centre: in every panel the outline's centre is
    where the geometry puts it, and where the bright CT structure is (not mirrored)."""
    ct = np.full(SHAPE_LPS, -50.0, np.float32)
    ct[BOX_LPS] = 1000.0  # white in the window
    labels = np.zeros(SHAPE_LPS, np.uint8)
    labels[BOX_LPS] = 1
    if stored_as == "RAS":
        # Same anatomy stored with x -> patient right and y -> anterior: the preview must put it
        # back into the canonical display, so the expectation below does not change.
        ct, labels = ct[:, ::-1, ::-1].copy(), labels[:, ::-1, ::-1].copy()
    image = sitk.GetImageFromArray(ct)
    image.SetSpacing((0.8, 0.8, 2.5))
    if stored_as == "RAS":
        image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    path = tmp_path / "preview.png"
    write_preview(_as_result(image, labels, np.zeros(SHAPE_LPS, np.float32)), path)

    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    boxes = _panel_boxes(pixels)
    assert len(boxes) == 4
    nz, ny, nx = SHAPE_LPS
    box_z, box_y, box_x = BOX_LPS
    axial = [_box_centre(box_y, ny), _box_centre(box_x, nx)]  # anterior at row 0
    coronal = [1 - _box_centre(box_z, nz), _box_centre(box_x, nx)]  # superior at the top
    for (top, bottom, left, right), expected in zip(boxes, [axial] * 3 + [coronal]):
        panel = pixels[top:bottom, left:right]
        outline = _centre_fraction((np.abs(panel - PANCREAS_RGB).sum(axis=2) < 40))
        bright = _centre_fraction((panel > 230).all(axis=2))
        # Expected at ~(0.2, 0.8); mirrored top-to-bottom would be ~(0.8, 0.8).
        np.testing.assert_allclose(bright, expected, atol=0.06)
        np.testing.assert_allclose(outline, expected, atol=0.06)


# The banner colours, written out here (not read from preview.py): ok green, check amber,
# failed red, each far from the label colours and the CT's greys.
BANNER_RGB = {"ok": [30, 150, 60], "check": [255, 176, 0], "failed": [204, 0, 0]}
LONG_REASONS = ["the model is unsure of the outline (expected Dice 0.41)",
                "unsure tissue next to the pancreas (0.90 x its volume) may be missed pancreas",
                "the pancreas lies where a pancreas is not expected (at 0.05 left-right, 0.90 "
                "front-back of the body) and this reason goes on for a long while to be cut short",
                "lesions make up 75% of the organ"]


def _preview_with(tmp_path, status: str, score: float, reasons: list[str], single_slice=False):
    if single_slice:
        ct = np.full((1, 60, 70), -50.0, np.float32)
        labels = np.zeros(ct.shape, np.uint8)
        labels[0, 20:35, 20:50] = 1
        image = sitk.GetImageFromArray(ct)
        image.SetSpacing((0.8, 0.8, 1.0))
        result = _as_result(image, labels, np.zeros(ct.shape, np.float32),
                            {"score": score, "status": status, "reasons": reasons, "signals": {}})
    else:
        result = _result(True)
        result.report["quality"] = {"score": score, "status": status, "reasons": reasons,
                                    "signals": {}}
    path = tmp_path / f"{status}-{single_slice}-{len(reasons)}.png"
    write_preview(result, path)
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def _matches(pixels: np.ndarray, colour) -> np.ndarray:
    return np.abs(pixels - colour).sum(axis=2) < 30


@pytest.mark.parametrize("single_slice", [False, True])
@pytest.mark.parametrize("status, score", [("ok", 0.81), ("check", 0.4), ("failed", 0.05)])
def test_verdict_banner_in_its_status_colour_spans_the_top_above_the_panels(
        tmp_path, status, score, single_slice):
    pixels = _preview_with(tmp_path, status, score, LONG_REASONS[:2], single_slice)
    banner = _matches(pixels, BANNER_RGB[status])
    rows = np.flatnonzero(banner.any(axis=1))
    assert rows.size, f"no pixel in the {status} colour"
    # A band from the top edge, at least 0.5 inch (45 px at 90 dpi) tall, the full width (its
    # rows between the lines of text too), and nowhere below it.
    assert rows[0] == 0 and rows[-1] - rows[0] + 1 >= 45 and rows[-1] < pixels.shape[0] / 4
    assert np.all(np.diff(rows) == 1)
    assert banner[rows[0]].mean() > 0.98 and banner[rows[-1]].mean() > 0.98
    top_of_panels = min(top for top, _, _, _ in _panel_boxes(pixels))
    assert rows[-1] < top_of_panels
    for other, colour in BANNER_RGB.items():  # the other statuses' colours do not appear
        if other != status:
            assert _matches(pixels, colour).sum() < 20, other


def test_banner_shows_the_reasons_and_a_clean_ok_says_so(tmp_path):
    """Text pixels (not the banner colour) in the banner band: more with four reasons than with
    none, and the reasons of the four stay within two lines' height of the band."""
    with_reasons = _preview_with(tmp_path, "check", 0.3, LONG_REASONS)
    without = _preview_with(tmp_path, "check", 0.3, [])
    band = np.flatnonzero(_matches(without, BANNER_RGB["check"]).any(axis=1))
    left = int(with_reasons.shape[1] * 0.3)  # right of the headline
    text_with = ~_matches(with_reasons[band][:, left:], BANNER_RGB["check"])
    text_without = ~_matches(without[band][:, left:], BANNER_RGB["check"])
    assert text_with.sum() > text_without.sum() + 300
    assert text_without.sum() < 20  # no reasons, no text there
    # the banner stayed as tall: the wrapped reasons did not push anything out of it
    assert np.array_equal(np.flatnonzero(_matches(with_reasons, BANNER_RGB["check"]).any(axis=1)),
                          band)


def test_reasons_are_shortened_and_wrapped_onto_two_lines():
    headline, lines = verdict_lines({"score": 0.2345, "status": "failed",
                                     "reasons": LONG_REASONS}, width_chars=60)
    assert "FAILED" in headline and "0.23" in headline
    assert 1 <= len(lines) <= 2 and all(len(line) <= 60 for line in lines)
    assert lines[0].startswith("the model is unsure of the outline")
    assert lines[-1].endswith("…")  # more than fits: said so
    # Wide enough for everything: every reason is there, in order, the long one cut at 90.
    _, lines = verdict_lines({"score": 0.2, "status": "check", "reasons": LONG_REASONS}, 400)
    text = " ".join(lines)
    positions = [text.find(reason[:30]) for reason in LONG_REASONS]
    assert all(p >= 0 for p in positions) and positions == sorted(positions)
    assert "cut short" not in text
    assert verdict_lines({"score": 0.9, "status": "ok", "reasons": []}, 80)[1] == [
        "no warning signs"]
