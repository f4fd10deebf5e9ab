"""The engine's label table: what new bundles start from, what the shipped bundle holds, and how
its terminology reaches Slicer."""

import json
import subprocess
import sys

from slicerio.segmentation import terminology_entry_to_string

from pancreas_ssl_seg.bundle import default_bundle_path
from pancreas_ssl_seg.labels import (LABEL_VALUES_TEXT, LABELS, LESION, PANCREAS,
                                      UNCERTAIN_REGION, slicer_terminology)


def test_values_names_and_codes():
    assert (PANCREAS, LESION) == (1, 2)
    by_value = {label["value"]: label for label in LABELS}
    assert sorted(by_value) == [0, 1, 2]
    assert by_value[1]["name"] == "Pancreas"
    assert by_value[1]["terminology"]["type"] == {"scheme": "SCT", "code": "15776009",
                                                  "meaning": "Pancreas"}
    assert by_value[2]["name"] == "Pancreatic lesion"
    assert by_value[2]["terminology"]["category"]["code"] == "49755003"
    assert LABEL_VALUES_TEXT == "0 (background), 1 (pancreas), 2 (pancreatic lesion)"


def test_shipped_bundle_holds_the_engines_table():
    metadata = json.loads((default_bundle_path() / "metadata.json").read_text(encoding="utf-8"))
    assert metadata["labels"] == LABELS
    assert metadata["uncertain_region"] == UNCERTAIN_REGION


def test_terminology_becomes_slicers_terminology_entry():
    """slicerio turns the encoded entry into the string Slicer stores in ``.seg.nrrd``."""
    pancreas = terminology_entry_to_string(slicer_terminology(LABELS[1]["terminology"]))
    assert pancreas == ("Segmentation category and type - 3D Slicer General Anatomy list"
                        "~SCT^123037004^Anatomical Structure~SCT^15776009^Pancreas~^^"
                        "~~^^~^^")
    with_region = {**LABELS[2]["terminology"],
                   "anatomicRegion": {"scheme": "SCT", "code": "15776009",
                                      "meaning": "Pancreas"}}
    assert terminology_entry_to_string(slicer_terminology(with_region)).endswith(
        "~Anatomic codes - DICOM master list~SCT^15776009^Pancreas~^^")


def test_small_contracts_import_without_numpy_or_torch():
    """The Slicer module and the CLI's parser read these before the engine's packages exist."""
    code = ("import sys; import pancreas_ssl_seg.labels, pancreas_ssl_seg.devices, "
            "pancreas_ssl_seg.bundle_format; "
            "print(sorted({'numpy', 'torch', 'SimpleITK'} & set(sys.modules)))")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               timeout=60, check=True)
    assert completed.stdout.strip() == "[]"
