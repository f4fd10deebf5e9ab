"""Readers that list 3-D training cases (image + label) in the common dataset layouts.

Each returns ``VolumeCase`` records; the volumes themselves are read later (``slices.
axial_slices_from_volume`` or a 3-D loader), reoriented to canonical LPS there. ``label_map``
maps the dataset's label values to the project's (1 pancreas, 2 lesion); unmapped values become 0.

Layouts:
- Medical Segmentation Decathlon Task07_Pancreas: ``dataset.json`` + ``imagesTr/`` + ``labelsTr/``
  (0 background, 1 pancreas, 2 cancer);
- NIH Pancreas-CT (TCIA): one DICOM series folder per ``PANCREAS_00XX`` patient (any depth below
  it) and label files ``label00XX.nii.gz`` (1 = pancreas) anywhere under the labels folder;
- a generic ``images/`` + ``labels/`` pair of folders with the same file names;
- the corrections folder exported by the Slicer module (``read_corrections``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import SimpleITK as sitk

from pancreas_ssl_seg.case_names import IMAGE_SUFFIXES, case_name
from pancreas_ssl_seg.corrections import IMAGE_FILE, LABELS_FILE, read_correction_record
from pancreas_ssl_seg.corrections import SOURCE as CORRECTIONS_SOURCE
from pancreas_ssl_seg.errors import InputError
from pancreas_ssl_seg.labels import LESION, PANCREAS

from .slices import SliceSample, axial_slices_from_volume

PROJECT_LABELS = {PANCREAS: PANCREAS, LESION: LESION}  # files already in the project's values
_NIH_PATIENT = re.compile(r"PANCREAS_(\d{4})$")
_NIH_LABEL = re.compile(r"label(\d{4})\.nii(\.gz)?$")
# Decathlon label names that mean pancreas (1) or lesion (2).
_PANCREAS_NAMES = ("pancreas",)
_LESION_NAMES = ("cancer", "tumor", "tumour", "lesion", "mass")


@dataclass(frozen=True)
class VolumeCase:
    """One 3-D case: image file or DICOM folder, label file, and how to read its labels.

    ``patient`` defaults to ``case`` (splits are made by patient).
    """

    image_path: Path
    label_path: Path | None
    case: str
    source: str
    label_map: Mapping[int, int] = field(default_factory=lambda: dict(PROJECT_LABELS))
    patient: str | None = None

    @property
    def patient_id(self) -> str:
        return self.patient or self.case


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise InputError(f"{path}: expected {what}")
    return path


def _decathlon_label_map(labels: Mapping, dataset_json: Path) -> dict[int, int]:
    """Project label values by name; ``labels`` is ``{"1": "pancreas"}`` (Decathlon) or
    ``{"pancreas": 1}`` (nnU-Net v2)."""
    if all(isinstance(value, int) for value in labels.values()):
        labels = {value: name for name, value in labels.items()}
    label_map = {}
    for value, name in labels.items():
        lowered = str(name).lower()
        if any(word in lowered for word in _LESION_NAMES):
            label_map[int(value)] = LESION
        elif any(word in lowered for word in _PANCREAS_NAMES):
            label_map[int(value)] = PANCREAS
    if PANCREAS not in label_map.values():
        raise InputError(f"{dataset_json}: expected a 'pancreas' entry in 'labels', got {labels}")
    return label_map


def _nnunet_entries(root: Path) -> list[dict[str, str]]:
    """nnU-Net v2 lists no cases: ``imagesTr/<case>_0000.nii.gz`` pairs with ``labelsTr/<case>``."""
    return [{"image": str(image.relative_to(root)),
             "label": str(Path("labelsTr") / image.name.replace("_0000.", "."))}
            for image in sorted((root / "imagesTr").glob("*_0000.nii*"))]


def read_decathlon(root: str | Path, source: str = "decathlon-task07") -> list[VolumeCase]:
    """Training cases of a Decathlon task folder (or its nnU-Net v2 conversion), label values
    mapped by their names."""
    root = Path(root)
    dataset_json = _require(root / "dataset.json", "a Decathlon dataset.json")
    try:
        description = json.loads(dataset_json.read_text(encoding="utf-8"))
        labels = description["labels"]
    except (ValueError, KeyError) as error:
        raise InputError(f"{dataset_json}: expected JSON with 'labels' ({error})") from error
    label_map = _decathlon_label_map(labels, dataset_json)
    entries = description.get("training") or _nnunet_entries(root)
    if not entries:
        raise InputError(f"{dataset_json}: expected a 'training' list or imagesTr/*_0000.nii.gz")
    cases = []
    for entry in entries:
        image = _require(root / entry["image"], f"the image listed in {dataset_json.name}")
        label = _require(root / entry["label"], f"the label listed in {dataset_json.name}")
        # Named after the label: nnU-Net image names carry a channel suffix (_0000).
        cases.append(VolumeCase(image, label, case_name(label), source, label_map))
    return cases


def _dicom_series_folder(patient_dir: Path) -> Path:
    # DICOM file names vary (``1-001.dcm``, ``CT.1.3.12…``): ask GDCM which folders hold a series.
    # os.walk follows symbolic links (datasets are often linked in); Path.rglob does not.
    folders = sorted(Path(folder) for folder, _, files in os.walk(patient_dir, followlinks=True)
                     if files and sitk.ImageSeriesReader.GetGDCMSeriesIDs(folder))
    if len(folders) != 1:
        raise InputError(f"{patient_dir}: expected one DICOM series folder below it, "
                         f"found {len(folders)}")
    return folders[0]


def read_nih_pancreas_ct(images_root: str | Path, labels_root: str | Path | None = None,
                         source: str = "nih-pancreas-ct") -> list[VolumeCase]:
    """NIH Pancreas-CT patients that have a label file; the DICOM folder is the image.

    The TCIA label NIfTI files carry their own geometry; ``axial_slices_from_volume`` checks
    that both grids have the same size after reorientation to LPS.
    """
    images_root = _require(Path(images_root), "the NIH Pancreas-CT folder (PANCREAS_00XX/…)")
    labels_root = _require(Path(labels_root or images_root), "the NIH label folder")
    labels = {m.group(1): p for p in labels_root.rglob("label*.nii*")
              if (m := _NIH_LABEL.search(p.name))}
    cases = []
    for patient_dir in sorted(p for p in images_root.rglob("PANCREAS_*") if p.is_dir()):
        match = _NIH_PATIENT.search(patient_dir.name)
        if match is None or match.group(1) not in labels:
            continue
        cases.append(VolumeCase(_dicom_series_folder(patient_dir), labels[match.group(1)],
                                patient_dir.name, source, {1: PANCREAS}))
    if not cases:
        raise InputError(f"{images_root}: expected PANCREAS_00XX folders with a matching "
                         f"label00XX.nii.gz under {labels_root}")
    return cases


def read_image_label_folders(root: str | Path, label_map: Mapping[int, int], source: str,
                             images: str = "images", labels: str = "labels") -> list[VolumeCase]:
    """``<root>/images/<name>`` paired with ``<root>/labels/<name>`` (same file name)."""
    root = Path(root)
    image_dir = _require(root / images, "a folder of CT images")
    label_dir = _require(root / labels, "a folder of label maps named like the images")
    cases = []
    for image in sorted(image_dir.iterdir()):
        if not image.name.endswith(IMAGE_SUFFIXES):
            continue
        label = _require(label_dir / image.name, f"the label map of {image.name}")
        cases.append(VolumeCase(image, label, case_name(image), source,
                                {int(k): int(v) for k, v in label_map.items()}))
    if not cases:
        raise InputError(f"{image_dir}: expected image files ({', '.join(IMAGE_SUFFIXES)})")
    return cases


def read_corrections(root: str | Path) -> list[VolumeCase]:
    """Every complete case of a corrections folder (the Slicer module's *Export corrected case*;
    layout, checks and writer: ``pancreas_ssl_seg.corrections``); folders starting with '.' are
    being written."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: expected a corrections folder (<case>/image.nii.gz, …)")
    cases = []
    for case_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        record = read_correction_record(case_dir)
        for name in (IMAGE_FILE, LABELS_FILE):
            if not (case_dir / name).is_file():
                raise InputError(f"{case_dir / name}: expected the case's {name}")
        cases.append(VolumeCase(case_dir / IMAGE_FILE, case_dir / LABELS_FILE, record["case"],
                                CORRECTIONS_SOURCE, dict(PROJECT_LABELS)))
    return cases


def read_volume_source(entry: Mapping) -> list[VolumeCase]:
    """Cases named by a config entry ``{"format": ..., "path": ..., ...}``.

    Formats: ``decathlon``; ``nih`` (optional ``labels`` folder); ``folder`` (``label_map``,
    ``source``); ``corrections``.
    """
    kind, path = entry.get("format"), entry.get("path")
    if path is None:
        raise InputError(f"volume source {dict(entry)}: expected a 'path'")
    if kind == "decathlon":
        return read_decathlon(path, entry.get("source", "decathlon-task07"))
    if kind == "nih":
        return read_nih_pancreas_ct(path, entry.get("labels"),
                                    entry.get("source", "nih-pancreas-ct"))
    if kind == "folder":
        return read_image_label_folders(path, entry.get("label_map", PROJECT_LABELS),
                                        entry.get("source", Path(path).name))
    if kind == "corrections":
        return read_corrections(path)
    raise InputError(f"volume source {dict(entry)}: expected 'format' decathlon, nih, folder or "
                     "corrections")


VOLUME_SPEC_KEYS = ("task07", "nih_dicom", "folders", "corrections", "volumes")


def _single_case(entry: Mapping) -> VolumeCase:
    """``{"image", "source", "label"?, "label_map"?, "case"?, "patient"?}``; no label =
    unlabelled (self-supervised pre-training only)."""
    required = ("image", "source", "label_map") if "label" in entry else ("image", "source")
    missing = [key for key in required if key not in entry]
    if missing:
        raise InputError(f"volume entry {dict(entry)}: expected keys image, source, and label with "
                         f"label_map (or 'format' and 'path'); missing {missing}")
    image = Path(entry["image"])
    label = Path(entry["label"]) if "label" in entry else None
    label_map = {int(k): int(v) for k, v in entry.get("label_map", {}).items()}
    return VolumeCase(image, label, entry.get("case") or case_name(image), entry["source"],
                      label_map, entry.get("patient"))


def volume_cases_from_spec(spec: Mapping) -> list[VolumeCase]:
    """Cases named by a config's ``data.sources`` (keys other than these are ignored here).

    ``task07``: Decathlon folder; ``nih_dicom``: ``{"images", "labels"?}`` or a folder;
    ``folders``: list of ``{"path", "label_map", "source"}``; ``corrections``: folder;
    ``volumes``: list of single cases ``{"image", "label"?, "label_map"?, "source", "case"?,
    "patient"?}`` (no label: unlabelled slices) or datasets ``{"format", "path", ...}``
    (see :func:`read_volume_source`).
    """
    cases: list[VolumeCase] = []
    if "task07" in spec:
        cases += read_decathlon(spec["task07"])
    if "nih_dicom" in spec:
        entry = spec["nih_dicom"]
        entry = entry if isinstance(entry, Mapping) else {"images": entry}
        cases += read_nih_pancreas_ct(entry["images"], entry.get("labels"))
    for entry in spec.get("folders", []):
        cases += read_volume_source({"format": "folder", **entry})
    if "corrections" in spec:
        cases += read_volume_source({"format": "corrections", "path": spec["corrections"]})
    for entry in spec.get("volumes", []):
        cases += read_volume_source(entry) if "format" in entry else [_single_case(entry)]
    return cases


def slices_from_case(case: VolumeCase) -> list[SliceSample]:
    """Axial slices of one case (slice cases ``<case>-zNNN``; unlabelled without a label)."""
    return axial_slices_from_volume(case.image_path, case.label_path, case.label_map, case.source,
                                    case=case.case, patient=case.patient_id)
