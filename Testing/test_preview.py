"""The preview PNG: four panels with overlays, also when nothing was found, with the outlines on
the anatomy they outline."""

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image
from scipy import ndimage

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
    return _as_result(image, labels, uncertainty)


def _as_result(image: sitk.Image, labels: np.ndarray, uncertainty: np.ndarray) -> SegmentationResult:
    ct = sitk.GetArrayFromImage(image)
    report = build_report(image=image, labels=labels, uncertainty=uncertainty, regions=[],
                          metadata={"name": "demo", "version": "1", "labels": LABELS,
                                    "uncertain_region": {"name": "u"}},
                          engine_version="0", device="cpu", mode="accurate", threshold=0.5,
                          uncertainty_definition="d", regions_score="s",
                          quality={"score": 1.0, "status": "ok", "reasons": [], "signals": {}},
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
