"""Run the engine CLI in a background process: start, poll its JSON progress lines, cancel.

The lines are read with the engine's own parser (``pancreas_ssl_seg.progress``: the protocol's
one home).

The GUI stays responsive because nothing here blocks: ``EngineProcess.poll()`` drains what the
process printed so far (a reader thread fills a queue) and returns at once. Cancel kills the whole
process tree (the engine may start workers), so nothing keeps writing after the user said stop.
An engine that dies on its own (crash, killed for memory) may leave such workers holding its
output pipes: on POSIX the engine runs in its own process group and those orphans are killed;
elsewhere the run ends anyway once the pipes stayed open ``ORPHAN_GRACE_S`` after the exit.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from enum import Enum

from pancreas_ssl_seg.errors import PancreasSSLSegError
from pancreas_ssl_seg.progress import RUN_ERROR, RUN_OK, ProgressRecord, parse_line


class RunStatus(str, Enum):
    """A run's state; a ``str`` so that ``status == "ok"`` reads as before in the console."""

    RUNNING = "running"
    OK = "ok"
    ERROR = "error"
    CANCELLED = "cancelled"


STDERR_TAIL_LINES = 20
ORPHAN_GRACE_S = 5.0


class EngineFailed(PancreasSSLSegError):
    """The engine could not start or exited with an error; ``exit_code`` is its status (2 = bad
    input/bundle; None = it never started)."""

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        self.exit_code = exit_code


def kill_process_tree(pid: int) -> None:
    """Kill ``pid`` and all its descendants (children first, so none is re-parented and missed)."""
    import psutil  # here, not at the top: the module must load before dependencies are installed

    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    victims = parent.children(recursive=True) + [parent]
    for process in victims:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(victims, timeout=10)


def _pump(stream, sink: queue.Queue, tag: str) -> None:
    for line in iter(stream.readline, ""):
        sink.put((tag, line.rstrip("\n")))
    stream.close()
    sink.put((tag, None))


class EngineProcess:
    """One background run of ``command`` (an argument list; never a shell string)."""

    def __init__(self, command: Sequence[str], env: dict[str, str] | None = None,
                 on_progress: Callable[[ProgressRecord], None] | None = None,
                 on_log: Callable[[str], None] | None = None):
        self.command = [str(part) for part in command]
        self.status = RunStatus.RUNNING
        self.exit_code: int | None = None
        self.final: ProgressRecord | None = None  # the engine's last line (the run's end)
        self.log_lines: list[str] = []
        self._stderr_tail: list[str] = []
        self._on_progress = on_progress
        self._on_log = on_log
        self._lines: queue.Queue = queue.Queue()
        self._open_streams = 2
        self._exited_at: float | None = None
        # Own process group (POSIX): what the engine starts can be killed after it died.
        self._process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True, encoding="utf-8", errors="replace", env=env,
            start_new_session=os.name == "posix")
        for stream, tag in ((self._process.stdout, "out"), (self._process.stderr, "err")):
            threading.Thread(target=_pump, args=(stream, self._lines, tag), daemon=True).start()

    @property
    def pid(self) -> int:
        return self._process.pid

    def poll(self) -> RunStatus:
        """Handle the output printed so far; returns the status (``RUNNING`` until it ended)."""
        self._drain()
        running = self.status is RunStatus.RUNNING
        if running and self._open_streams and self._process.poll() is not None:
            self._end_orphans()
        if running and self._open_streams == 0:
            self.exit_code = self._process.wait()
            self.status = (RunStatus.OK if self.exit_code == 0 and self._final_ok()
                           else RunStatus.ERROR)
        return self.status

    def wait(self, interval_s: float = 0.1) -> RunStatus:
        """Block until the process ended or was cancelled (console and tests)."""
        while self.poll() is RunStatus.RUNNING:
            try:
                self._handle(*self._lines.get(timeout=interval_s))
            except queue.Empty:
                pass
        return self.status

    def cancel(self) -> None:
        if self.status is not RunStatus.RUNNING:
            return
        kill_process_tree(self._process.pid)
        self._process.wait()
        self.exit_code = self._process.returncode
        self.status = RunStatus.CANCELLED
        self._log("Cancelled: the engine process and its children were stopped.")

    def error_message(self) -> str:
        """Why the run failed, in one paragraph: the engine's own message, else its stderr tail."""
        if self.status is RunStatus.CANCELLED:
            return "Cancelled by the user."
        if self.final and self.final.status == RUN_ERROR and self.final.message:
            return self.final.message
        tail = "\n".join(self._stderr_tail[-STDERR_TAIL_LINES:]).strip()
        if self.exit_code is not None and self.exit_code < 0:
            return (f"The segmentation engine was killed by signal {_signal_name(-self.exit_code)} "
                    "before it finished (for example by the system when memory ran out); nothing "
                    "was loaded." + (f" Its last output:\n{tail}" if tail else ""))
        return (f"The segmentation engine stopped with exit code {self.exit_code}"
                + (f":\n{tail}" if tail else " and printed no error message."))

    def _end_orphans(self) -> None:
        """The engine has exited but its pipes are still open: kill what it left running."""
        if os.name == "posix":
            try:
                os.killpg(self._process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass  # the group is already empty
        self._exited_at = self._exited_at or time.monotonic()
        if time.monotonic() - self._exited_at > ORPHAN_GRACE_S:
            self._open_streams = 0  # stop waiting for pipes an unkillable orphan holds

    def _final_ok(self) -> bool:
        # A process that exits 0 without the run's last line was cut short: a failure.
        return self.final is not None and self.final.status == RUN_OK

    def _drain(self) -> None:
        while True:
            try:
                tag, line = self._lines.get_nowait()
            except queue.Empty:
                return
            self._handle(tag, line)

    def _handle(self, tag: str, line: str | None) -> None:
        if line is None:
            self._open_streams -= 1
            return
        if self.status is RunStatus.CANCELLED:
            return
        record = parse_line(line) if tag == "out" else None
        if record is None:
            if tag == "err":
                self._stderr_tail = (self._stderr_tail + [line])[-STDERR_TAIL_LINES:]
            self._log(line)
            return
        if record.is_run_end:
            self.final = record
        if self._on_progress:
            self._on_progress(record)

    def _log(self, line: str) -> None:
        self.log_lines.append(line)
        if self._on_log:
            self._on_log(line)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def engine_environment(module_dir: str) -> dict[str, str]:
    """The environment for the engine: this module's folder first on PYTHONPATH, so the engine
    package beside the module is found also when the extension was not pip-installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (module_dir, env.get("PYTHONPATH")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
