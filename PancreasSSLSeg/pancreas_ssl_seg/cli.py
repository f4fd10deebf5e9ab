"""``pancreas-ssl-seg``: segment CT files and DICOM folders in batch, or describe a model bundle.

The entry point: parses the command line (:mod:`.cli_parser`), runs the command
(:mod:`.cli_segment`: ``segment``, ``summary``; :mod:`.cli_models`: ``info``, ``models``) and
turns what escapes it into one ``error:`` line and an exit code (:mod:`.cli_exit`).
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .cli_exit import EXIT_BAD_INPUT, EXIT_FAILED, INTERRUPTED
from .cli_parser import build_parser
from .console import use_utf8_output
from .errors import PancreasSSLSegError


def main(argv: list[str] | None = None) -> int:
    use_utf8_output()
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "segment" and args.part_id >= args.num_parts:
        parser.error(f"--part-id {args.part_id} is not below --num-parts {args.num_parts} "
                     "(parts are numbered 0 .. N-1)")  # exit 2
    try:
        with _sigterm_as_interrupt():
            return args.handler(args)
    except KeyboardInterrupt:
        print(f"error: {INTERRUPTED}", file=sys.stderr)
        return EXIT_FAILED
    except PancreasSSLSegError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as error:  # noqa: BLE001 — the CLI's promise: one line, never a traceback
        print(f"error: unexpected {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_FAILED


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, a job scheduler) stops the run as Ctrl-C does: the case being written
    removes its temporaries on the way out and the run ends with one line, not a silent death."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

