"""Run one benchmark step in its own process and measure its wall time and peak memory.

Peaks must not mix: ``RUSAGE_CHILDREN`` reports the largest child seen so far, and even a lone
child's ``ru_maxrss`` starts at its parent's resident size (Linux keeps the high-water mark of the
forked copy across ``exec``; measured: a ``print`` child of a 450 MB pytest reported 453 MB). So a
small launcher process (this file run as a script) starts the step and reads that one child's usage
with ``os.wait4``; the caller gets it back as JSON.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class StepMeasurement:
    argv: list[str]
    wall_s: float
    peak_rss_mb: float
    cpu_s: float
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False


def run_measured(argv: list[str], env: dict[str, str] | None = None,
                 timeout_s: float = 600.0) -> StepMeasurement:
    """Run ``argv`` (a list: no shell) under the launcher and return its wall time and peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        usage_path = os.path.join(tmp, "usage.json")
        out_path, err_path = os.path.join(tmp, "stdout"), os.path.join(tmp, "stderr")
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            # Own session, so a timeout can stop the launcher and the step together.
            launcher = subprocess.Popen([sys.executable, __file__, usage_path, *argv],
                                        stdout=out, stderr=err, env=env, start_new_session=True)
            timed_out = False
            try:
                launcher.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(launcher.pid, signal.SIGKILL)
                launcher.wait()
        usage = (json.load(open(usage_path, encoding="utf-8")) if os.path.exists(usage_path)
                 else {"wall_s": timeout_s, "maxrss_kb": 0, "cpu_s": 0.0,
                       "returncode": launcher.returncode})
        return StepMeasurement(argv=list(argv), wall_s=usage["wall_s"],
                               peak_rss_mb=usage["maxrss_kb"] / 1024, cpu_s=usage["cpu_s"],
                               returncode=usage["returncode"],
                               stdout=Path(out_path).read_text(encoding="utf-8", errors="replace"),
                               stderr=Path(err_path).read_text(encoding="utf-8", errors="replace"),
                               timed_out=timed_out)


def _launch(usage_path: str, argv: list[str]) -> int:
    """Launcher side: run the step (inheriting stdout/stderr), write its own resource usage."""
    start = time.perf_counter()
    child = subprocess.Popen(argv)
    _, status, usage = os.wait4(child.pid, 0)
    wall_s = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen.wait
    with open(usage_path, "w", encoding="utf-8") as f:
        json.dump({"wall_s": wall_s, "maxrss_kb": usage.ru_maxrss,
                   "cpu_s": usage.ru_utime + usage.ru_stime, "returncode": child.returncode}, f)
    return 0


if __name__ == "__main__":
    sys.exit(_launch(sys.argv[1], sys.argv[2:]))
