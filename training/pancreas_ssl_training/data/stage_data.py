"""The dataset a cascade stage trains on, from its config's ``data`` section: the trainer's
default dataset factory."""

from __future__ import annotations

from typing import Any

from torch.utils.data import Dataset

from ..config import ConfigError


def default_dataset_factory(stage_name: str, stage: dict[str, Any], seed: int) -> Dataset:
    """The stage's dataset from its ``data`` section (see ``training/README.md``): 2-D stages
    train on axial slices, 3-D stages on volume patches (the fine stage only inside the labelled
    region grown by its ``margin_mm``, what it sees at inference)."""
    data = stage["data"]
    if "sources" not in data:
        raise ConfigError(f"stages.{stage_name}.data needs 'sources' (the slice sources to "
                          "train on)")
    excluded = {str(p) for p in data.get("exclude_patients", [])}
    common = {"augment": bool(data.get("augment", True)),
              "lesion_probability": float(data.get("lesion_probability", 0.5)),
              "hu_window": tuple(data["hu_window"]), "seed": seed}
    if stage["network"]["spatial_dims"] == 3:
        return _volume_dataset(stage_name, stage, excluded, common)
    from .slice_datasets import SliceDataset, build_slice_sources
    from .intensity_mapping import estimate_grey_mapping

    samples = [s for s in build_slice_sources(data["sources"]) if s.patient not in excluded]
    if data.get("foreground_slices_only", False):  # e.g. a volume's slices for the fine stage
        samples = [s for s in samples if s.label is not None and s.label.any()]
    if not samples:
        raise ConfigError(f"stages.{stage_name}.data: no training slices left after excluding "
                          f"patients {sorted(excluded)}")
    # 8-bit slices are mapped to HU with the fit of the HU/8-bit patients when asked for.
    grey_to_hu = data.get("grey_to_hu")
    to_hu = None if not grey_to_hu else estimate_grey_mapping(
        grey_to_hu["data_root"], grey_to_hu.get("method", "percentile"))
    return SliceDataset(samples, tuple(stage["patch_size"]),
                        spacing_mm=tuple(stage["spacing_mm"][:2]), to_hu=to_hu, **common)


def _volume_dataset(stage_name: str, stage: dict[str, Any], excluded: set[str],
                    common: dict[str, Any]) -> Dataset:
    from .volume_datasets import VolumeDataset
    from .volumes import volume_cases_from_spec

    cases = [c for c in volume_cases_from_spec(stage["data"]["sources"])
             if c.label_path is not None and c.patient_id not in excluded]
    if not cases:
        raise ConfigError(f"stages.{stage_name}.data: a 3-D stage needs labelled volume sources "
                          "(task07, nih_dicom, folders, corrections or volumes); none left")
    margin_mm = float(stage["margin_mm"]) if stage_name == "fine" else None
    return VolumeDataset(cases, tuple(stage["patch_size"]), spacing_mm=tuple(stage["spacing_mm"]),
                         roi_margin_mm=margin_mm, **common)
