"""DICOM SEG output (``<case>_seg.dcm``) for DICOM series input, read back with pydicom/highdicom.

The pipeline is replaced by a stand-in that labels an asymmetric pattern (so a flipped or
transposed frame fails); the SEG is decoded here frame by frame from its per-frame references,
independently of the writer, and compared with ``<case>_labels.nii.gz`` voxel for voxel.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_series import phantom_hu, read_headers, write_ct_series
from test_outputs import FakeResult, report_segments, write_fake_preview

from pancreas_ssl_seg import case_files, cli, cli_segment, outputs
from pancreas_ssl_seg.dicom_seg import DicomSegUnavailable, source_frames
from pancreas_ssl_seg.image_io import as_image

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
SHAPE = (6, 24, 32)  # z, y, x


def pattern_labels(shape) -> np.ndarray:
    """Pancreas in an off-centre block on slices 1-4, a lesion on slices 2-3 only (slice 0 and 5
    empty: those frames are left out of the SEG)."""
    labels = np.zeros(shape, np.uint8)
    labels[1:5, 3:11, 5:20] = 1
    labels[2:4, 4:7, 6:9] = 2
    return labels


class PatternSegment:
    def __init__(self):
        self.bundle = None

    def __call__(self, path, *, model, progress, **options):
        image = as_image(path)
        self.bundle = model
        labels = pattern_labels(image.GetSize()[::-1])
        report = {"case": None, "input": {},
                  "model": {"name": model.name, "version": model.version},
                  "segments": model.labels, "uncertain_region": model.metadata["uncertain_region"],
                  "warnings": []}
        return FakeResult(image, labels, labels * np.float32(0.3), np.zeros_like(labels, np.int32),
                          report)


@pytest.fixture
def pattern_segment(monkeypatch) -> PatternSegment:
    fake = PatternSegment()
    monkeypatch.setattr(cli_segment, "_segment", fake)
    monkeypatch.setattr(outputs, "_write_preview", write_fake_preview)
    return fake


def run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def decode_frames(seg: pydicom.Dataset, uid_to_slice: dict[str, int], shape) -> np.ndarray:
    """Label volume (z, y, x) rebuilt from the SEG's frames: each frame's referenced source
    instance gives its slice, its segment number the value."""
    pixels = seg.pixel_array.reshape(-1, *shape[1:])  # (frames, rows, columns), 0/1
    volume = np.zeros(shape, np.uint8)
    for frame, group in zip(pixels, seg.PerFrameFunctionalGroupsSequence):
        source = group.DerivationImageSequence[0].SourceImageSequence[0]
        k = uid_to_slice[source.ReferencedSOPInstanceUID]
        number = group.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        assert not np.any(volume[k][frame > 0]), "two segments claim one voxel"
        volume[k][frame > 0] = number
    return volume


def test_seg_of_a_dicom_series_references_it_and_equals_the_labels(capsys, tmp_path,
                                                                   random_bundle,
                                                                   pattern_segment):
    # Rotated in-plane axes and shuffled file names: only geometry can order the frames.
    files = write_ct_series(tmp_path / "series", phantom_hu(SHAPE), row_dir=(0.0, 1.0, 0.0),
                            col_dir=(-1.0, 0.0, 0.0))
    code, out, err = run(capsys, "segment", tmp_path / "series", "-o", tmp_path / "out",
                         "--model", random_bundle, "--progress", "json")
    assert (code, err) == (0, "")
    seg_path = tmp_path / "out" / "series_seg.dcm"
    seg = pydicom.dcmread(seg_path)
    sources = read_headers(files)  # in slice order (position along the normal)
    assert seg.SOPClassUID == SEGMENTATION_STORAGE and seg.Modality == "SEG"
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert seg.PatientID == "P1" and seg.SeriesInstanceUID != sources[0].SeriesInstanceUID
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert {i.ReferencedSOPInstanceUID for i in referenced.ReferencedInstanceSequence} == {
        s.SOPInstanceUID for s in sources}
    assert "not for clinical use" in seg.SeriesDescription
    assert seg.ContentQualification == "RESEARCH"

    # Segments: the bundle's labels, codes, colours and the model's identification.
    metadata = json.loads((random_bundle / "metadata.json").read_text(encoding="utf-8"))
    expected = [label for label in metadata["labels"] if label["value"] != 0]
    assert [s.SegmentNumber for s in seg.SegmentSequence] == [1, 2]
    for item, label in zip(seg.SegmentSequence, expected):
        assert item.SegmentLabel == label["name"]
        for attribute, field in (("SegmentedPropertyCategoryCodeSequence", "category"),
                                 ("SegmentedPropertyTypeCodeSequence", "type")):
            code_item = getattr(item, attribute)[0]
            assert (code_item.CodingSchemeDesignator, code_item.CodeValue,
                    code_item.CodeMeaning) == tuple(label["terminology"][field][k]
                                                    for k in ("scheme", "code", "meaning"))
        algorithm = item.SegmentationAlgorithmIdentificationSequence[0]
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == (metadata["name"],
                                                                         metadata["version"])
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        rgb = hd.color.CIELabColor.from_dicom_value(item.RecommendedDisplayCIELabValue).to_rgb()
        assert np.allclose(np.array(rgb, float), label["color"], atol=2)

    # Every frame is a source slice at that slice's position; decoded masks = labels file.
    uid_to_slice = {s.SOPInstanceUID: k for k, s in enumerate(sources)}
    for group in seg.PerFrameFunctionalGroupsSequence:
        uid = group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        position = group.PlanePositionSequence[0].ImagePositionPatient
        assert np.allclose([float(v) for v in position],
                           [float(v) for v in sources[uid_to_slice[uid]].ImagePositionPatient])
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "series_labels.nii.gz")))
    assert np.array_equal(labels, pattern_labels(SHAPE))  # the stand-in's labels, on this grid
    assert np.array_equal(decode_frames(seg, uid_to_slice, SHAPE), labels)
    # empty slices 0 and 5 left out: 4 pancreas frames + 2 lesion frames
    assert seg.NumberOfFrames == 6
    # highdicom's own reader agrees and finds the same source instances
    uids = hd.seg.segread(seg_path).get_source_image_uids()  # (study, series, instance)
    assert {u[1] for u in uids} == {sources[0].SeriesInstanceUID}
    assert {u[2] for u in uids} == set(uid_to_slice)

    # Listed in the report (with its SHA-256) and in the run's done line.
    report = json.loads((tmp_path / "out" / "series_report.json").read_text(encoding="utf-8"))
    assert report["outputs"]["dicom_seg"] == {
        "file": "series_seg.dcm", "sha256": hashlib.sha256(seg_path.read_bytes()).hexdigest()}
    done = json.loads(out.splitlines()[-1])
    assert done["cases"][0]["outputs"]["dicom_seg"] == str(seg_path)
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_seg_of_an_enhanced_ct_references_its_frames(capsys, tmp_path, random_bundle,
                                                    pattern_segment):
    """One multi-frame (Legacy Converted Enhanced) CT, frames head to feet: the SEG references
    that instance's frames, each SEG frame at its source frame's position."""
    from highdicom.legacy import LegacyConvertedEnhancedCTImage

    classic = [pydicom.dcmread(f) for f in write_ct_series(tmp_path / "classic", phantom_hu(SHAPE))]
    frames = classic[::-1]  # classic is in slice order (feet to head): frame 1 is the top slice
    enhanced = LegacyConvertedEnhancedCTImage(frames, series_instance_uid=hd.UID(),
                                              series_number=4, sop_instance_uid=hd.UID(),
                                              instance_number=1)
    (tmp_path / "enhanced").mkdir()
    enhanced.save_as(tmp_path / "enhanced" / "ct.dcm")
    code, _, err = run(capsys, "segment", tmp_path / "enhanced", "-o", tmp_path / "out",
                       "--model", random_bundle)
    assert (code, err) == (0, "")
    seg = pydicom.dcmread(tmp_path / "out" / "enhanced_seg.dcm")
    assert seg.StudyInstanceUID == classic[0].StudyInstanceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == enhanced.SeriesInstanceUID
    # Decoded by each frame's referenced source frame number: the labels in the grid the
    # enhanced CT was read on (its frame order).
    labels_path = tmp_path / "out" / "enhanced_labels.nii.gz"
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(labels_path)))
    pixels = seg.pixel_array.reshape(-1, *SHAPE[1:])
    volume = np.zeros(SHAPE, np.uint8)
    for frame, group in zip(pixels, seg.PerFrameFunctionalGroupsSequence):
        source = group.DerivationImageSequence[0].SourceImageSequence[0]
        assert source.ReferencedSOPInstanceUID == enhanced.SOPInstanceUID
        f = int(source.ReferencedFrameNumber) - 1
        assert np.allclose([float(v) for v in group.PlanePositionSequence[0].ImagePositionPatient],
                           [float(v) for v in frames[f].ImagePositionPatient])
        volume[f][frame > 0] = group.SegmentIdentificationSequence[0].ReferencedSegmentNumber
    assert labels.any() and np.array_equal(volume, labels)
    # A grid one slice short of the frames: the image is not referenced frame by frame (a frame
    # off the grid would otherwise have indexed the labels with None).
    image = as_image(tmp_path / "enhanced")
    with pytest.raises(DicomSegUnavailable, match="no DICOM slice matches"):
        source_frames(tmp_path / "enhanced", image[:, :, :-1])


def test_anonymised_real_series_warns_and_writes_the_other_outputs(capsys, tmp_path, shared_data,
                                                                   random_bundle,
                                                                   pattern_segment):
    """The real series has blank Study/Series/SOP Instance UIDs (anonymised): no SEG, a warning
    on stderr and in the report, the six other outputs, exit 0."""
    code, out, err = run(capsys, "segment", shared_data / "ct-dicom-series", "-o", tmp_path,
                         "--model", random_bundle, "--progress", "none")
    assert code == 0
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "warning: ct-dicom-series: DICOM SEG not written: ct-dicom-series: the DICOM series lacks")
    assert "StudyInstanceUID" in lines[0] and "SOPInstanceUID" in lines[0]
    assert not (tmp_path / "ct-dicom-series_seg.dcm").exists()
    report = json.loads((tmp_path / "ct-dicom-series_report.json").read_text(encoding="utf-8"))
    assert report["warnings"] == [lines[0].split(": ", 2)[2]]
    assert "dicom_seg" not in report["outputs"] and len(report["outputs"]) == 5
    assert case_files.case_is_complete(tmp_path, "ct-dicom-series")


def _result_on(folder: Path) -> FakeResult:
    image = as_image(folder)
    labels = pattern_labels(image.GetSize()[::-1])
    segments, uncertain = report_segments()
    report = {"segments": segments, "uncertain_region": uncertain, "warnings": [],
              "model": {"name": "m", "version": "1"}}
    return FakeResult(image, labels, np.zeros(labels.shape, np.float32),
                      np.zeros(labels.shape, np.int32), report)


def test_resume_needs_the_seg_and_a_later_run_without_one_removes_the_old(tmp_path, monkeypatch):
    monkeypatch.setattr(outputs, "_write_preview", write_fake_preview)
    write_ct_series(tmp_path / "a", phantom_hu(SHAPE))
    out = tmp_path / "out"
    paths = outputs.write_case_outputs(_result_on(tmp_path / "a"), out, "c",
                                       dicom_folder=tmp_path / "a")
    assert paths["dicom_seg"] == out / "c_seg.dcm" and paths["dicom_seg"].is_file()
    assert case_files.case_is_complete(out, "c")
    paths["dicom_seg"].unlink()  # the report lists it: the case is no longer finished
    assert not case_files.case_is_complete(out, "c")

    outputs.write_case_outputs(_result_on(tmp_path / "a"), out, "c", dicom_folder=tmp_path / "a")
    assert case_files.case_is_complete(out, "c")
    # Same grid, but the Study Instance UID blanked: no SEG can be made; the old one must go.
    write_ct_series(tmp_path / "b", phantom_hu(SHAPE), blank=("StudyInstanceUID",))
    result = _result_on(tmp_path / "b")
    paths = outputs.write_case_outputs(result, out, "c", dicom_folder=tmp_path / "b")
    assert "dicom_seg" not in paths and not (out / "c_seg.dcm").exists()
    assert result.report["warnings"] == [
        "DICOM SEG not written: b: the DICOM series lacks StudyInstanceUID (blank or missing, as "
        "in many anonymised exports); a SEG must reference them"]
    assert case_files.case_is_complete(out, "c")


def test_without_highdicom_the_case_is_written_with_a_warning(tmp_path, monkeypatch):
    """A Python without highdicom (a Slicer set up before it was required): the other outputs
    and a warning, not a failed case."""
    monkeypatch.setattr(outputs, "_write_preview", write_fake_preview)
    write_ct_series(tmp_path / "a", phantom_hu(SHAPE))
    result = _result_on(tmp_path / "a")
    monkeypatch.setitem(sys.modules, "highdicom", None)  # "import highdicom" raises ImportError
    paths = outputs.write_case_outputs(result, tmp_path / "out", "c", dicom_folder=tmp_path / "a")
    assert "dicom_seg" not in paths and not (tmp_path / "out" / "c_seg.dcm").exists()
    assert len(result.report["warnings"]) == 1
    assert result.report["warnings"][0].startswith(
        "DICOM SEG not written: highdicom is not installed")
    assert case_files.case_is_complete(tmp_path / "out", "c")


def test_a_failed_write_leaves_no_seg(tmp_path, monkeypatch):
    def broken_preview(result, path):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs, "_write_preview", broken_preview)
    write_ct_series(tmp_path / "a", phantom_hu(SHAPE))
    with pytest.raises(OSError):
        outputs.write_case_outputs(_result_on(tmp_path / "a"), tmp_path / "out", "c",
                                   dicom_folder=tmp_path / "a")
    assert list((tmp_path / "out").iterdir()) == []


def test_slices_are_matched_by_geometry_not_by_folder(tmp_path):
    write_ct_series(tmp_path / "a", phantom_hu(SHAPE))
    image = as_image(tmp_path / "a")
    # Another series in the same folder, shifted by half a slice: none of its files may be used.
    write_ct_series(tmp_path / "mixed", phantom_hu(SHAPE), origin=(-12.0, -30.0, 101.25))
    for path in (tmp_path / "a").iterdir():
        shutil.copy(path, tmp_path / "mixed" / f"a_{path.name}")
    found, frame_slices = source_frames(tmp_path / "mixed", image)
    expected = read_headers(sorted((tmp_path / "a").iterdir()))
    order = np.argsort([float(d.ImagePositionPatient[2]) for d in expected])
    assert [d.SOPInstanceUID for d in found] == [expected[i].SOPInstanceUID for i in order]
    assert frame_slices == list(range(SHAPE[0]))
    # A folder with only the shifted series: refused with the reason.
    for path in (tmp_path / "mixed").glob("a_*"):
        path.unlink()
    with pytest.raises(DicomSegUnavailable, match=r"mixed: no DICOM slice matches 6 of the 6 "):
        source_frames(tmp_path / "mixed", image)
