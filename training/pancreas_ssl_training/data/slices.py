"""2-D training samples: axial slices from the NIH slice folders and from 3-D volumes.

Every array is in the canonical display of ``NOTES.md``: anterior at row 0, patient right at
column 0. The NIH folders are stored flipped vertically (spine at the top); the readers flip
rows back. ``spacing_mm`` of a slice is ``(x, y)`` = (column spacing, row spacing) in mm, in the
SimpleITK order the bundle uses; ``None`` when the source does not record it (NIH folders).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pancreas_ssl_seg.case_names import case_name
from pancreas_ssl_seg.errors import InputError
from pancreas_ssl_seg.preprocessing import to_canonical

# The HU folder holds img_000..014: five consecutive slices of NIH cases 0001, 0002, 0003 in that
# order (data README; checked by correlating them with the 8-bit slices of the same patients).
NIH_HU_PATIENTS = ("0001", "0002", "0003")
NIH_HU_SLICES_PER_PATIENT = 5
# JPEG masks are lossy: grey levels near the 0/255 edge ring; the mask is whatever is above half.
JPEG_MASK_THRESHOLD = 127
_NIH_8BIT_NAME = re.compile(r"PANCREAS_(\d{4})-(\d+)\.jpg$")


@dataclass
class SliceSample:
    """One axial slice with its label.

    image: (H, W) float32; Hounsfield units (``units == "hu"``) or raw 8-bit grey levels
        (``units == "8bit"``, see ``intensity_mapping.to_hu``).
    label: (H, W) uint8; 0 background, 1 pancreas, 2 lesion; ``None`` for unlabelled slices.
    case: slice identifier, e.g. ``"PANCREAS_0012-1045"``.
    patient: patient identifier (splits are made on this, never on slices), e.g. ``"0012"``.
    source: dataset name, e.g. ``"nih-hu"``, ``"nih-8bit"``, ``"ct-abdomen-3mm"``.
    units: ``"hu"`` or ``"8bit"``.
    spacing_mm: ``(x, y)`` pixel spacing in mm, or ``None`` when unknown.
    """

    image: np.ndarray
    label: np.ndarray | None
    case: str
    patient: str
    source: str
    units: str
    spacing_mm: tuple[float, float] | None = None


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise InputError(f"{path}: expected a folder with {what}")
    return path


def _unflip_rows(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array[::-1, :])


def load_nih_hu_slices(root: str | Path) -> list[SliceSample]:
    """Read ``img_NNN.npy`` (int16 HU) + ``mask_NNN.npy`` (0/1) from the NIH HU slice folder."""
    root = _require_dir(Path(root), "img_NNN.npy and mask_NNN.npy files")
    images = sorted(root.glob("img_*.npy"))
    if not images:
        raise InputError(f"{root}: expected img_NNN.npy files, found none")
    samples = []
    for image_path in images:
        index = int(image_path.stem.split("_")[1])
        mask_path = root / f"mask_{index:03d}.npy"
        if not mask_path.is_file():
            raise InputError(f"{mask_path}: expected the mask of {image_path.name}")
        patient = NIH_HU_PATIENTS[index // NIH_HU_SLICES_PER_PATIENT]
        # allow_pickle=False: a .npy file must never run code on load.
        image = np.load(image_path, allow_pickle=False)
        label = np.load(mask_path, allow_pickle=False)
        samples.append(SliceSample(
            image=_unflip_rows(image).astype(np.float32),
            label=_unflip_rows(label > 0).astype(np.uint8),
            case=f"PANCREAS_{patient}-hu{index:03d}", patient=patient,
            source="nih-hu", units="hu"))
    return samples


def read_grey_jpeg(path: Path) -> np.ndarray:
    """(H, W) uint8 grey levels of a JPEG (RGB files with equal channels use the first one)."""
    try:
        array = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    except RuntimeError as error:
        raise InputError(f"{path}: expected a readable JPEG image ({error})") from error
    return array[..., 0] if array.ndim == 3 else array


def load_nih_8bit_slices(root: str | Path,
                         patients: Iterable[str] | None = None) -> list[SliceSample]:
    """Read ``images/PANCREAS_00XX-1NNN.jpg`` + ``masks/`` (lossy JPEG, > 127 = pancreas).

    ``patients``: keep only these patient ids (``"0004"``); ``None`` keeps all.
    """
    root = Path(root)
    image_dir = _require_dir(root / "images", "PANCREAS_XXXX-NNNN.jpg slices")
    mask_dir = _require_dir(root / "masks", "PANCREAS_XXXX-NNNN.jpg masks")
    wanted = None if patients is None else {str(p) for p in patients}
    samples = []
    for image_path in sorted(image_dir.glob("*.jpg")):
        match = _NIH_8BIT_NAME.search(image_path.name)
        if match is None:
            raise InputError(f"{image_path}: expected a name like PANCREAS_0012-1045.jpg")
        patient = match.group(1)
        if wanted is not None and patient not in wanted:
            continue
        mask_path = mask_dir / image_path.name
        if not mask_path.is_file():
            raise InputError(f"{mask_path}: expected the mask of {image_path.name}")
        grey = read_grey_jpeg(image_path)
        mask = read_grey_jpeg(mask_path) > JPEG_MASK_THRESHOLD
        samples.append(SliceSample(
            image=_unflip_rows(grey).astype(np.float32),
            label=_unflip_rows(mask).astype(np.uint8),
            case=image_path.stem, patient=patient, source="nih-8bit", units="8bit"))
    if wanted is not None and not samples:
        raise InputError(f"{image_dir}: no slices of patients {sorted(wanted)}")
    return samples


def remap_labels(label: np.ndarray, label_map: Mapping[int, int]) -> np.ndarray:
    """Map source label values to 0/1/2 (``{7: 1}`` = source 7 is pancreas); others become 0."""
    remapped = np.zeros(label.shape, dtype=np.uint8)
    for source_value, target_value in label_map.items():
        remapped[label == int(source_value)] = int(target_value)
    return remapped


def read_canonical(path: str | Path, what: str) -> sitk.Image:
    """Read a volume (file or DICOM series folder) and reorient it to canonical LPS."""
    path = Path(path)
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            files = reader.GetGDCMSeriesFileNames(str(path))
            if not files:
                raise InputError(f"{path}: expected a DICOM series folder ({what})")
            reader.SetFileNames(files)
            image = reader.Execute()
        else:
            image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputError(f"{path}: expected a readable 3-D {what} ({error})") from error
    if image.GetDimension() != 3:
        raise InputError(f"{path}: expected a 3-D {what}, got {image.GetDimension()}-D")
    return to_canonical(image)


def read_canonical_pair(image_path: str | Path, label_path: str | Path
                        ) -> tuple[sitk.Image, sitk.Image]:
    """CT and label map in canonical LPS, the label on the image's grid (voxel correspondence).

    Sizes must agree. A label whose header puts it elsewhere (origin more than a voxel away)
    is still paired voxel by voxel, with a warning: some public label files carry no or wrong
    geometry, and resampling by such a header would misplace every label.
    """
    image = read_canonical(image_path, "CT image")
    label = read_canonical(label_path, "label map")
    if image.GetSize() != label.GetSize():
        raise InputError(f"{label_path}: expected the grid of {image_path} "
                         f"{image.GetSize()}, got {label.GetSize()}")
    offset_mm = np.abs(np.subtract(image.GetOrigin(), label.GetOrigin()))
    if np.any(offset_mm > np.array(image.GetSpacing())):
        warnings.warn(f"{label_path}: origin {label.GetOrigin()} differs from the image's "
                      f"{image.GetOrigin()}; pairing voxel by voxel", stacklevel=2)
    label.CopyInformation(image)
    return image, label


def axial_slices_from_volume(image_path: str | Path, label_path: str | Path | None,
                             label_map: Mapping[int, int], source: str,
                             case: str | None = None, patient: str | None = None,
                             ) -> list[SliceSample]:
    """Every axial slice of a CT volume (canonical LPS, HU) with its remapped label.

    Slices without pancreas are kept: the coarse stage needs negatives. ``label_path=None`` gives
    unlabelled slices (``label=None``, for self-supervised pre-training). ``case`` defaults to
    the image file name without extension, ``patient`` to ``case``; slice cases are
    ``<case>-zNNN``.
    """
    if label_path is None:
        image = read_canonical(image_path, "CT image")
        labels = [None] * image.GetSize()[2]
    else:
        image, label = read_canonical_pair(image_path, label_path)
        labels = remap_labels(sitk.GetArrayFromImage(label), label_map)
    hu = sitk.GetArrayFromImage(image).astype(np.float32)
    case = case or case_name(image_path)
    patient = patient or case
    spacing_mm = (float(image.GetSpacing()[0]), float(image.GetSpacing()[1]))
    return [SliceSample(image=np.ascontiguousarray(hu[z]),
                        label=None if labels[z] is None else np.ascontiguousarray(labels[z]),
                        case=f"{case}-z{z:03d}", patient=patient, source=source, units="hu",
                        spacing_mm=spacing_mm)
            for z in range(hu.shape[0])]
