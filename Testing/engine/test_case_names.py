"""Case names (``pancreas_ssl_seg.case_names``): from input paths, from free text, checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from pancreas_ssl_seg.case_names import case_name, check_case_name, safe_case_name
from pancreas_ssl_seg.errors import InputError


@pytest.mark.parametrize("name, expected", [
    ("a/b/case_001.nii.gz", "case_001"), ("x.NII.GZ", "x"), ("scan.nii", "scan"),
    ("vol.nrrd", "vol"), ("v.mha", "v"), ("v.mhd", "v"), ("data/dicom-folder/", "dicom-folder"),
    ("series.1.2.3", "series.1.2.3"), ("scan 1 (arterial).nii.gz", "scan 1 (arterial)"),
    (".nii.gz", ".nii.gz"),
])
def test_case_name_of_a_path(name: str, expected: str):
    assert case_name(name) == expected


@pytest.mark.parametrize("text, expected", [
    ("CT 1/2: é.x", "CT_1_2___.x"), (".hidden", "hidden"), ("...", "case"), ("", "case"),
    ("Patient-7_a.b", "Patient-7_a.b"), ("../../etc", "_.._etc"),
])
def test_free_text_becomes_a_name_the_corrections_writer_accepts(text: str, expected: str):
    assert safe_case_name(text) == expected
    assert check_case_name(safe_case_name(text)) == expected


@pytest.mark.parametrize("text", ["CT 1/2: é.x", ".hidden", "Patient-7_a.b", "x.nii", "a.nrrd"])
def test_the_module_gets_back_the_name_it_gave_the_engine(text: str):
    """The module writes the engine's input as ``<safe name>.nrrd`` and looks for the outputs under
    the name the engine derives from that file."""
    assert case_name(Path("/tmp/work") / f"{safe_case_name(text)}.nrrd") == safe_case_name(text)


@pytest.mark.parametrize("case", ["", ".x", "a/b", "a b", "é", "..", "abc\n", None])
def test_unsafe_names_are_refused(case):
    with pytest.raises(InputError, match="it becomes a folder name"):
        check_case_name(case)
