"""The run settings (model, device, fast, uncertainty, threshold): one dataclass shared by the
panel, ``process`` and ``segmentFiles``, turned into the engine CLI's options by ``to_argv()``.

Defaults are the engine's: no model = the shipped bundle, no threshold = the bundle's own
(``for_model`` fills both from a catalogue entry, as the panel shows them). The panel keeps the
settings in the module's parameter node (a ``vtkMRMLScriptedModuleNode``), so a saved scene
remembers them: ``slicer.parameterNodeWrapper`` is not in slicer-core (the tests' Slicer), so the
fields are stored as the node's own ``SetParameter``/``GetParameter`` strings.
"""

from __future__ import annotations

from dataclasses import dataclass

from pancreas_ssl_seg.devices import DEVICE_CHOICES

# The panel's list: the engine's --device values in their order, with the names users read.
DEVICE_LABELS = {choice: {"auto": "Auto", "cpu": "CPU", "cuda": "GPU"}[choice]
                 for choice in DEVICE_CHOICES}
# Parameter node keys (stored as strings; "" = not set).
_KEYS = {"model": "Model", "device": "Device", "fast": "Fast", "uncertainty": "Uncertainty",
         "uncertainty_threshold": "UncertaintyThreshold"}


@dataclass(frozen=True)
class Parameters:
    model: str | None = None          # bundle folder or installed name; None: the shipped one
    device: str = "auto"              # one of devices.DEVICE_CHOICES
    fast: bool = False                # fewer test-time augmentations
    uncertainty: bool = True          # uncertainty map and review regions
    uncertainty_threshold: float | None = None  # region threshold; None: the bundle's own

    @classmethod
    def for_model(cls, entry, **changes) -> Parameters:
        """The settings for a catalogue entry (``catalogue.CatalogueEntry``): its folder and its
        own threshold, other fields at their defaults unless given in ``changes``."""
        return cls(**{"model": str(entry.path),
                      "uncertainty_threshold": entry.uncertainty_threshold, **changes})

    def to_argv(self) -> list[str]:
        """The engine CLI's options for these settings (an argument list, never a shell
        string)."""
        argv = ["--device", self.device]
        if self.model:
            argv += ["--model", str(self.model)]
        if self.fast:
            argv.append("--fast")
        if not self.uncertainty:
            argv.append("--no-uncertainty")
        if self.uncertainty_threshold is not None:
            argv += ["--uncertainty-threshold", str(float(self.uncertainty_threshold))]
        return argv

    def save(self, node) -> None:
        """Store in a ``vtkMRMLScriptedModuleNode`` (the module's parameter node)."""
        for field_name, key in _KEYS.items():
            value = getattr(self, field_name)
            node.SetParameter(key, "" if value is None else str(value))

    @classmethod
    def load(cls, node) -> Parameters | None:
        """The settings stored in ``node``; None when it holds none (a new scene)."""
        stored = {field: node.GetParameter(key) or "" for field, key in _KEYS.items()}
        if not stored["device"]:
            return None
        threshold = stored["uncertainty_threshold"]
        return cls(model=stored["model"] or None, device=stored["device"],
                   fast=stored["fast"] == "True", uncertainty=stored["uncertainty"] == "True",
                   uncertainty_threshold=float(threshold) if threshold else None)
