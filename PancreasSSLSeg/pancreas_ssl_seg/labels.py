"""Label values, segment names, colours and terminology codes: the one place they are written.

Every bundle's ``metadata.json`` starts from this table (``bundle_metadata.default_metadata``) and
the engine reads a loaded bundle's table back from its metadata; code that means a label value
(post-processing, reports, the corrections folder, training's data and methods) imports the values
from here. Plain Python (no numpy, torch or slicerio), so the Slicer module can import it before
the engine's packages are installed.

Values: 0 background, 1 pancreas, 2 pancreatic lesion. The organ is labels 1 and 2 together
(``labels >= PANCREAS``): a lesion is part of the pancreas.
"""

from __future__ import annotations

from typing import Any

BACKGROUND, PANCREAS, LESION = 0, 1, 2
LABEL_VALUES = (BACKGROUND, PANCREAS, LESION)

ANATOMICAL_STRUCTURE = {"scheme": "SCT", "code": "123037004", "meaning": "Anatomical Structure"}
ALTERED_STRUCTURE = {"scheme": "SCT", "code": "49755003",
                     "meaning": "Morphologically Altered Structure"}
# Colours are RGB 0..255; terminology is {field: {scheme, code, meaning}} with DICOM's fields.
LABELS = [
    {"value": BACKGROUND, "name": "Background"},
    {"value": PANCREAS, "name": "Pancreas", "color": [249, 180, 111],
     "terminology": {"category": ANATOMICAL_STRUCTURE,
                     "type": {"scheme": "SCT", "code": "15776009", "meaning": "Pancreas"}}},
    {"value": LESION, "name": "Pancreatic lesion", "color": [220, 40, 40],
     "terminology": {"category": ALTERED_STRUCTURE,
                     "type": {"scheme": "SCT", "code": "52988006", "meaning": "Lesion"}}},
]
# "0 (background), 1 (pancreas), 2 (pancreatic lesion)", for messages that list the values.
LABEL_VALUES_TEXT = ", ".join(f"{label['value']} ({label['name'].lower()})" for label in LABELS)
# The review segment over the high-uncertainty regions. No standard code names "region the model
# is unsure about": a private scheme (DICOM's "99" prefix).
UNCERTAIN_REGION = {"name": "High-uncertainty region", "color": [255, 215, 0],
                    "terminology": {"category": {"scheme": "99PSSL", "code": "C001",
                                                 "meaning": "Model review region"},
                                    "type": {"scheme": "99PSSL", "code": "R001",
                                             "meaning": "High-uncertainty region"}}}

# Slicer's terminology context for general anatomy: lets Slicer show the codes' names and icons.
TERMINOLOGY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"
ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
CODED_FIELDS = ("category", "type", "typeModifier", "anatomicRegion", "anatomicRegionModifier")


def slicer_terminology(terminology: dict[str, Any]) -> dict[str, Any]:
    """Bundle terminology ``{field: {scheme, code, meaning}}`` → slicerio's segment terminology
    (``{"contextName", field: [scheme, code, meaning], …}``), from which slicerio writes Slicer's
    ``TerminologyEntry`` string into ``.seg.nrrd``."""
    entry: dict[str, Any] = {"contextName": TERMINOLOGY_CONTEXT}
    for field in CODED_FIELDS:
        if field in terminology:
            code = terminology[field]
            entry[field] = [code["scheme"], code["code"], code["meaning"]]
    if "anatomicRegion" in entry:
        entry["anatomicContextName"] = ANATOMIC_CONTEXT
    return entry
