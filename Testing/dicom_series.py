"""Small synthetic CT series written with pydicom: full UIDs (what a PACS export carries), any
size, spacing and orientation. Used by the DICOM SEG tests; the real series in ../shared/data
has its UIDs blanked by anonymisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


def write_ct_series(folder: Path, hu: np.ndarray, spacing_mm=(0.8, 0.7, 2.5),
                    origin=(-12.0, -30.0, 100.0), row_dir=(1.0, 0.0, 0.0),
                    col_dir=(0.0, 1.0, 0.0), shuffle_names: bool = True,
                    blank: tuple[str, ...] = ()) -> list[Path]:
    """Write ``hu`` ((z, y, x) int16 Hounsfield units) as one CT series of single-frame files.

    ``spacing_mm`` is (x, y, z); slice k lies at ``origin + k * spacing_z * normal``. File names
    are shuffled (``shuffle_names``) so that nothing may rely on their order. ``blank`` names
    attributes written empty (as anonymisers do). Returns the files in slice order.
    """
    folder.mkdir(parents=True, exist_ok=True)
    row, col = np.asarray(row_dir, float), np.asarray(col_dir, float)
    normal = np.cross(row, col)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    order = np.random.default_rng(7).permutation(len(hu)) if shuffle_names else range(len(hu))
    files = []
    for k, slice_hu in enumerate(hu):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.Modality, ds.Manufacturer = "CT", "Synthetic"
        ds.PatientName, ds.PatientID = "Test^Phantom", "P1"
        ds.PatientBirthDate, ds.PatientSex = "", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", "A1"
        ds.ReferringPhysicianName, ds.SeriesNumber, ds.InstanceNumber = "", 3, k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [*map(float, row), *map(float, col)]
        ds.ImagePositionPatient = [float(v) for v in
                                   np.asarray(origin) + k * spacing_mm[2] * normal]
        ds.PixelSpacing = [float(spacing_mm[1]), float(spacing_mm[0])]  # row, column spacing
        ds.SliceThickness = float(spacing_mm[2])
        ds.Rows, ds.Columns = slice_hu.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0.0, 1.0, "HU"
        ds.PixelData = np.ascontiguousarray(slice_hu, "<i2").tobytes()
        for key in blank:
            setattr(ds, key, "")
        path = folder / f"IM{order[k]:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def phantom_hu(shape=(6, 24, 32), seed: int = 0) -> np.ndarray:
    """Soft tissue with noise and an air border: passes the engine's CT intensity checks."""
    rng = np.random.default_rng(seed)
    hu = rng.normal(40.0, 20.0, shape)
    hu[:, :2, :] = -1000.0
    hu[:, :, :2] = -1000.0
    return hu.astype(np.int16)


def read_headers(files: list[Path]) -> list[Dataset]:
    return [pydicom.dcmread(path, stop_before_pixels=True) for path in files]
