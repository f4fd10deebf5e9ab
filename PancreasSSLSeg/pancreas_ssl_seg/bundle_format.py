"""The bundle format's names and limits, and how a bundle's problems are reported.

Standard library only, so code that lists bundles before torch is installed (the model catalogue,
the Slicer module's model list) reads the same file names and limits as the loader.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import BundleError

FORMAT_NAME = "pancreas-ssl-seg-bundle"
FORMAT_VERSION = 1
METADATA_FILE, WEIGHTS_FILE, CARD_FILE = "metadata.json", "model.safetensors", "MODEL_CARD.md"
BUNDLE_FILES = frozenset({METADATA_FILE, WEIGHTS_FILE, CARD_FILE})
STAGES = ("coarse", "fine")
MAX_METADATA_BYTES = 1 << 20
MAX_WEIGHTS_BYTES = 512 << 20
# A stage may hold several networks of the same config (an ensemble, ``stages.<s>.members``):
# Accurate mode averages their softmax, Fast mode runs the first.
MAX_MEMBERS = 8


def stage_members(metadata: dict[str, Any], stage: str) -> int:
    """How many networks the (validated) metadata's stage holds (0 for a stage it lacks: the
    evaluation's one-stage bundles)."""
    spec = metadata["stages"].get(stage)
    return 0 if spec is None else int(spec.get("members", 1))


def member_key(stage: str, member: int) -> str:
    """Where member ``member`` of ``stage`` lives: its weights are ``<key>.<state dict key>``
    in the safetensors file. Member 0 is the stage's own name, as in single-network bundles."""
    return stage if member == 0 else f"{stage}{member}"


def weight_keys(metadata: dict[str, Any]) -> list[tuple[str, str]]:
    """``(stage, member key)`` of every network the metadata describes, stage by stage."""
    return [(stage, member_key(stage, member)) for stage in STAGES
            for member in range(stage_members(metadata, stage))]


def bundle_error(path: Path, problem: str) -> BundleError:
    return BundleError(f"model bundle {path}: {problem}")


def require(condition: bool, path: Path, problem: str) -> None:
    if not condition:
        raise bundle_error(path, problem)


def short(value: Any, limit: int = 60) -> str:
    """``repr`` cut to ``limit`` characters: hostile metadata may hold megabyte-long values."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
