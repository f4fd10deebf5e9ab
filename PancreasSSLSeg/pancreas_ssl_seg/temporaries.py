"""Files written under a temporary name in their final folder, then renamed into place.

A temporary is named ``.partial-<pid>-<token>-<final name>``: the writer's process id and a random
token, so several processes may write into one folder at once (two CLI runs, the Slicer module
beside a batch). A temporary is removed as stale only when its process is gone (a killed run: the
Slicer module cancels by killing the process); another writer's, still running, is left alone.
The corrections writer (:mod:`.corrections`) names its folders its own way but takes its token and
the "is that writer still running" rule from here.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

TEMPORARY_PREFIX = ".partial-"


def writer_token() -> str:
    """This writer's part of its temporaries' names: its process id and a random token."""
    return f"{os.getpid()}-{uuid.uuid4().hex[:8]}"


def temporary_path(final: Path, token: str) -> Path:
    """The temporary of ``final`` written by the writer ``token`` (keeps ``final``'s suffix)."""
    return final.with_name(f"{TEMPORARY_PREFIX}{token}-{final.name}")


def is_temporary(path: Path) -> bool:
    return path.name.startswith(TEMPORARY_PREFIX)


def remove_stale(folder: Path, final_name: str) -> None:
    """Remove the temporaries of ``final_name`` in ``folder`` whose writer process is gone."""
    for stale in folder.glob(f"{TEMPORARY_PREFIX}*-{final_name}"):
        if not _writer_is_running(stale.name):
            stale.unlink(missing_ok=True)


def process_is_running(pid: int) -> bool:
    """True unless process ``pid`` is certainly gone: this process runs, and without psutil
    (a stock Slicer writing corrections needs only numpy and SimpleITK) nothing can be told."""
    if pid == os.getpid():
        return True
    try:
        import psutil
    except ImportError:
        return True
    return psutil.pid_exists(pid)


def _writer_is_running(temporary_name: str) -> bool:
    owner = temporary_name[len(TEMPORARY_PREFIX):].split("-", 1)[0]
    return owner.isdigit() and process_is_running(int(owner))
