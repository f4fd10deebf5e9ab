"""Typed run state of the Logic: the run in progress, a run's outcome, the loaded result."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .engine_process import EngineProcess, RunStatus
from .parameters import Parameters


@dataclass
class ActiveRun:
    """A background engine run on one volume, until ``poll()`` collects it."""

    process: EngineProcess
    work_dir: Path        # temporary folder holding the input (removed after the run)
    out_dir: Path         # where the engine writes the case's files
    case: str             # the case name the engine gives the files
    input_volume: Any     # vtkMRMLScalarVolumeNode
    parameters: Parameters
    started: float        # time.time() at the start
    target: Any = None    # vtkMRMLSegmentationNode to fill; None: a new one


@dataclass
class SegmentationOutcome:
    """What one run produced: ``status``, ``message``, the nodes (on success), the report."""

    status: RunStatus
    message: str
    segmentationNode: Any = None   # camelCase: the console API's names
    uncertaintyNode: Any = None
    report: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadedResult:
    """The last result loaded into the scene (``PancreasSSLSegLogic.lastResult``)."""

    segmentation: Any            # vtkMRMLSegmentationNode
    uncertainty: Any             # vtkMRMLScalarVolumeNode, or None without uncertainty
    input_volume: Any            # vtkMRMLScalarVolumeNode
    report: dict[str, Any]       # the engine's report
    segment_ids: dict[int, str]  # label value (scene_results.UNCERTAIN_SEGMENT_VALUE) → ID
