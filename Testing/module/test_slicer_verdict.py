"""The module shows the engine's quality verdict and starts the review where an error is most
likely: a banner in the status colour with score and reasons (the Logic's ``qualityBanner()``,
put on the .ui's ``qualityBannerLabel`` by the Widget), the rank-1 region selected and the views
centred on it when results load, and ``segmentFiles`` leaving ``summary.csv``/``.json``. Real MRML
scene (slicer-core), fake engine (``slicer_harness.py``: the real CLI around made-up arrays)."""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import SimpleITK as sitk
import vtk

from slicer_harness import ct_fixture, scene_fixture  # noqa: F401 (fixtures "ct", "scene")
from slicer_harness import MODULE_DIR, fake_engine_logic, install_module_stubs

install_module_stubs()

# Written out here: ok green, check amber, failed red (as the preview's banner).
COLOURS = {"ok": (30, 150, 60), "check": (255, 176, 0), "failed": (204, 0, 0)}


def verdict(status: str, score: float, reasons: list[str]) -> dict:
    return {"status": status, "score": score, "reasons": reasons, "signals": {}}


REASONS = ["largest cross-section 0.4 cm^2 is < 1 cm^2", "lesions make up 70% of the organ"]


def assert_banner_shows(banner, status, score):
    assert (banner.status, banner.score, banner.reasons) == (status, score, tuple(REASONS))
    assert banner.background_rgb == COLOURS[status]
    r, g, b = COLOURS[status]
    assert f"background-color: rgb({r}, {g}, {b})" in banner.style_sheet
    assert f"Quality: {status.upper()} · score {score:.2f}" in banner.text
    assert "cm^2 is &lt; 1 cm^2" in banner.text  # the reasons, escaped for rich text
    assert "lesions make up 70% of the organ" in banner.text


def test_the_logic_shows_the_reports_verdict_in_its_banner_and_message(ct, monkeypatch):
    logic = fake_engine_logic(monkeypatch,
                              FAKE_ENGINE_QUALITY=json.dumps(verdict("check", 0.42, REASONS)))
    assert logic.qualityBanner() is None  # nothing segmented yet: the Widget hides the label
    outcome = logic.process(ct)
    assert_banner_shows(logic.qualityBanner(), "check", 0.42)
    assert "quality check (score 0.42)" in outcome.message


@pytest.mark.parametrize("status, score", [("ok", 0.81), ("check", 0.42), ("failed", 0.07)])
def test_banner_shows_status_score_and_reasons_in_the_status_colour(status, score):
    from PancreasSSLSegLib.verdict_banner import verdict_banner

    assert_banner_shows(verdict_banner({"quality": verdict(status, score, REASONS)}), status,
                        score)


def test_a_report_without_a_verdict_gets_a_grey_banner(ct, monkeypatch):
    logic = fake_engine_logic(monkeypatch, FAKE_ENGINE_QUALITY="null")  # an older engine's
    logic.process(ct)
    banner = logic.qualityBanner()
    assert banner.status is None and "no verdict" in banner.text
    assert banner.background_rgb not in COLOURS.values()


def test_banner_colours_are_the_previews():
    """One home (``pancreas_ssl_seg.display``) for the banner's and the preview's colours."""
    from pancreas_ssl_seg import display, preview
    from PancreasSSLSegLib import verdict_banner

    assert display.STATUS_COLOURS == COLOURS
    assert verdict_banner.STATUS_COLOURS is preview.STATUS_COLOURS is display.STATUS_COLOURS
    assert verdict_banner.STATUS_TEXT_COLOURS is preview.STATUS_TEXT_COLOURS


def test_banner_label_heads_the_review_panel():
    """The .ui's banner is a word-wrapping rich-text QLabel, the first thing in the results."""
    tree = ET.parse(MODULE_DIR / "Resources" / "UI" / "PancreasSSLSeg.ui")
    review = next(w for w in tree.iter("widget") if w.get("name") == "reviewCollapsibleButton")
    first = review.find("layout").find("item").find("widget")
    assert (first.get("class"), first.get("name")) == ("QLabel", "qualityBannerLabel")
    properties = {p.get("name"): p for p in first.iter("property")}
    assert properties["wordWrap"].find("bool").text == "true"
    assert properties["textFormat"].find("enum").text == "Qt::RichText"


def test_review_starts_at_the_rank_1_region_with_the_views_centred_on_it(scene, ct, monkeypatch):
    logic = fake_engine_logic(monkeypatch)
    outcome = logic.process(ct)
    first = min(outcome.report["regions"], key=lambda row: row["rank"])
    assert first["rank"] == 1 and len(outcome.report["regions"]) == 2
    assert logic.review.current_region_id == first["id"]
    assert [row["rank"] for row in logic.review.region_table] == [1, 2]

    # The centre of the region from its voxels, through the volume's own IJK-to-RAS matrix.
    k, j, i = np.argwhere(logic.review.regions == first["id"]).mean(axis=0)
    vtk_matrix = vtk.vtkMatrix4x4()
    ct.GetIJKToRASMatrix(vtk_matrix)
    matrix = np.array([[vtk_matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
    centre = (matrix @ [i, j, k, 1.0])[:3]
    nodes = [scene.scene.GetNthNodeByClass(n, "vtkMRMLSliceNode")
             for n in range(scene.scene.GetNumberOfNodesByClass("vtkMRMLSliceNode"))]
    assert len(nodes) == 3
    for node in nodes:
        slice_to_ras = node.GetSliceToRAS()
        position = [slice_to_ras.GetElement(axis, 3) for axis in range(3)]
        np.testing.assert_allclose(position, centre, atol=1.0)  # within a third of a voxel


def read_csv(path):
    with open(path, encoding="utf-8", newline="") as stream:
        return list(csv.DictReader(stream))


def test_segment_files_writes_the_batch_summary(scene, monkeypatch, example_ct, tmp_path):
    image = sitk.ReadImage(str(example_ct))[30:90, 20:80, 30:70]
    paths = []
    for name in ("a", "b", "c"):
        paths.append(tmp_path / f"{name}.nrrd")
        sitk.WriteImage(image, str(paths[-1]))
    verdicts = {"a": verdict("ok", 0.9, []), "b": verdict("failed", 0.1, ["no body found"]),
                "c": verdict("check", 0.4, ["unsure", "small"])}
    logic = fake_engine_logic(monkeypatch, FAKE_ENGINE_QUALITY=json.dumps(verdicts))
    out = tmp_path / "out"
    missing = tmp_path / "missing.nrrd"  # the engine cannot read it: one failed case
    reports = logic.segmentFiles([*paths, missing], out)
    assert sorted(reports) == ["a", "b", "c"]
    rows = read_csv(out / "summary.csv")
    assert [row["case"] for row in rows] == ["missing", "b", "c", "a"]
    assert rows[0]["run_status"] == "error" and rows[0]["message"]
    assert [row["quality_status"] for row in rows[1:]] == ["failed", "check", "ok"]
    assert rows[2]["quality_reasons"] == "unsure; small"
    assert all(row["report_file"] == f"{row['case']}_report.json" for row in rows[1:])
    assert float(rows[1]["pancreas_volume_ml"]) == pytest.approx(
        reports["b"]["pancreas"]["volume_ml"], abs=1e-3)
    document = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert document["counts"]["quality"] == {"ok": 1, "check": 1, "failed": 1}

    # One file: the engine writes no summary for a single case; segmentFiles does.
    single = tmp_path / "single"
    logic.segmentFiles([paths[2]], single)
    assert [row["case"] for row in read_csv(single / "summary.csv")] == ["c"]
