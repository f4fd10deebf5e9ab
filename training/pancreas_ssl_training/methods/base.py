"""The Method contract every training method follows, and ``build_methods`` that builds them.

A method turns one batch and the network's outputs into UNWEIGHTED scalar loss terms named
``loss_*``; the trainer multiplies each by its weight and sums them. ``heads`` names the network
heads (``pancreas_ssl_seg.networks.KNOWN_HEADS``) the method reads, so the trainer can enable them.

``methods_cfg`` is ``{name: {"enabled": bool, "weight": float | {term: float},
"weights": {term: float}, ...params}}``; ``supervised`` is always on.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import nn

from pancreas_ssl_seg.networks import KNOWN_HEADS

# name -> (module in this package, class); imported lazily so one method's imports never burden
# another and the modules can import this one.
METHOD_CLASSES = {
    "supervised": ("supervised", "SupervisedMethod"),
    "dual_task": ("dual_task", "DualTaskMethod"),
    "view_consistency": ("view_consistency", "ViewConsistencyMethod"),
    "structure_contrastive": ("structure_contrastive", "StructureContrastiveMethod"),
    "restoration": ("restoration", "RestorationMethod"),
    "polycl": ("polycl", "PolyCLMethod"),
}
SETTINGS_KEYS = ("enabled", "weight", "weights")


class Method:
    """Base class: subclasses set ``name``, ``heads``, ``terms`` and implement ``losses``.

    Constructor keywords are the method's params from the config; ``weight`` (a float for every
    term or a ``{term: float}`` dict) and ``weights`` (per term, overriding) set ``self.weights``.
    """

    name: str = ""
    heads: frozenset[str] = frozenset()
    terms: tuple[str, ...] = ()

    def __init__(self, weight: float | dict[str, float] = 1.0,
                 weights: dict[str, float] | None = None):
        per_term = dict(weight) if isinstance(weight, dict) else {}
        default = 1.0 if isinstance(weight, dict) else float(weight)
        per_term.update(weights or {})
        unknown = set(per_term) - set(self.terms)
        if unknown:
            raise ValueError(f"method {self.name!r}: weights for unknown terms {sorted(unknown)}; "
                             f"its terms are {list(self.terms)}")
        self.weights = {term: float(per_term.get(term, default)) for term in self.terms}
        assert self.heads <= set(KNOWN_HEADS), self.heads

    def losses(self, network: nn.Module, batch: dict[str, torch.Tensor],
               outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(weights={self.weights})"


def zero_like_graph(tensor: torch.Tensor) -> torch.Tensor:
    """A scalar zero still attached to ``tensor``'s graph: a term with nothing to measure in this
    batch (no labelled sample, no organ) must still backpropagate (DDP expects every parameter)."""
    return tensor.float().abs().sum() * 0.0  # abs: a plain 0.0, never -0.0, in the logs


def build_methods(methods_cfg: dict[str, dict[str, Any]]) -> list[Method]:
    """The enabled methods, ``supervised`` first (added when absent; it cannot be disabled)."""
    unknown = sorted(set(methods_cfg) - set(METHOD_CLASSES))
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {sorted(METHOD_CLASSES)}")
    settings = {name: dict(methods_cfg.get(name) or {}) for name in methods_cfg}
    settings.setdefault("supervised", {})
    settings["supervised"]["enabled"] = True
    methods = []
    for name in METHOD_CLASSES:  # registry order: supervised first, fixed order otherwise
        if name not in settings or not settings[name].get("enabled", True):
            continue
        module_name, class_name = METHOD_CLASSES[name]
        cls = getattr(importlib.import_module(f".{module_name}", __package__), class_name)
        params = {k: v for k, v in settings[name].items() if k != "enabled"}
        try:
            methods.append(cls(**params))
        except TypeError as error:  # an unknown parameter name in the config
            raise ValueError(f"method {name!r}: {error}") from error
    return methods
